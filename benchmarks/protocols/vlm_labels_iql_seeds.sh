#!/bin/bash
# More training seeds of the VLM-labels -> IQL protocol (issue 6), one task, after vlm_labels_iql.sh made its
# labels and reward model: the same four arms, each trained with --optim.seed S and evaluated on the same 100
# episodes, so vlm_labels_iql_table.py reports means over seeds. Time: four 20k-step trainings and
# evaluations per seed on 2 CPU cores (Intel Xeon @ 2.80 GHz, 24 GB, no GPU) (not timed in the notes; about an hour a seed).
#   vlm_labels_iql_seeds.sh TASK SEED...
set -e
export MUJOCO_GL=egl OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
t=$1; shift; steps=20000; ds=ds2_$t; out=runs6b/$t
declare -A V=( [iql_vlm]="--algo iql --iql.reward reward.noisy-oracle" [iql_true]="--algo iql --iql.reward next.reward"
               [iql_const]="--algo iql --iql.reward constant" [bc]="--algo bc" )
for seed in "$@"; do for v in iql_vlm iql_true bc iql_const; do
  run=$out/${v}_s$seed; [ -f $out/eval_${v}_s$seed/eval.json ] && continue
  tether train $ds --out $run ${V[$v]} --optim.steps $steps --optim.batch-size 256 --optim.seed $seed > $run.train.log 2>&1
  tether eval $run/policy.pt --sim metaworld --episodes 100 --seed 1000 --num-envs 2 --out $out/eval_${v}_s$seed --videos-per-task 1 > $out/eval_${v}_s$seed.log 2>&1
  echo "$run $(tail -1 $out/eval_${v}_s$seed.log)"
done; done
