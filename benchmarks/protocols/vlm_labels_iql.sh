#!/bin/bash
# VLM-style labels -> Bradley-Terry reward model -> IQL, one task (issue 6): noisy-oracle preference labels
# (5000 pairs, 20% flipped: a VLM's error rate), the reward model's held-out accuracy and Spearman against
# the true reward, then success over 100 evaluation episodes of IQL on the learned / true / constant reward
# and BC (20k steps each). Needs ds2_TASK from vlm_labels_collect.sh; vlm_labels_iql_table.py tabulates.
# Time on 2 CPU cores (Intel Xeon @ 2.80 GHz, 24 GB, no GPU): the reward model about 12 s; each of the four
# arms a 20k-step training on one core and 100 episodes on two sim workers (not timed in the notes;
# expect about an hour per task).
#   vlm_labels_iql.sh TASK [STEPS]
set -e
export MUJOCO_GL=egl OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
t=$1; steps=${2:-20000}; ds=ds2_$t; out=runs6b/$t
mkdir -p $out
[ -f $out/rm.json ] || { tether label $ds --labeller noisy-oracle --pairs 5000 --flip-prob 0.2 --json > $out/label.json
tether label $ds --labeller oracle --pairs 5000 --json > $out/label_oracle.json
tether reward-model $ds --labels noisy-oracle --relabel --out $out/rm --json > $out/rm.json; }
declare -A V=( [iql_vlm]="--algo iql --iql.reward reward.noisy-oracle" [iql_true]="--algo iql --iql.reward next.reward"
               [iql_const]="--algo iql --iql.reward constant" [bc]="--algo bc" )
for v in iql_vlm iql_true iql_const bc; do
  tether train $ds --out $out/$v ${V[$v]} --optim.steps $steps --optim.batch-size 256 > $out/$v.train.log 2>&1
  tether eval $out/$v/policy.pt --sim metaworld --episodes 100 --seed 1000 --num-envs 2 --out $out/eval_$v --videos-per-task 2 > $out/eval_$v.log 2>&1
  tail -1 $out/eval_$v.log
done
