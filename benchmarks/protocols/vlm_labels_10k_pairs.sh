#!/bin/bash
# The VLM-labels -> IQL protocol (issue 6) on sweep-into-v3 with 10,000 label pairs (20% flipped) and a
# 6000-step reward model: does a better reward model lift IQL? Prints the reward model's accuracy and
# Spearman, then IQL's success over 100 episodes. Needs ds2_sweep-into-v3 (vlm_labels_collect.sh).
# Time: one labelling, a 6000-step reward model, a 20k-step IQL and 100 episodes on
# 2 CPU cores (Intel Xeon @ 2.80 GHz, 24 GB, no GPU) (not timed in the notes; under an hour).
export MUJOCO_GL=egl OMP_NUM_THREADS=1
t=sweep-into-v3; ds=ds2_$t; out=runs6b/$t/rm10k
mkdir -p $out
tether label $ds --labeller noisy-oracle --pairs 10000 --flip-prob 0.2 --seed 1 --name noisy-oracle-10k --json > $out/label.json
tether reward-model $ds --labels noisy-oracle-10k --relabel --out $out --steps 6000 --json > $out/rm.json
python3 -c "import json; d=json.load(open('$out/rm.json')); print({k: d[k] for k in ('val_accuracy','val_accuracy_true','spearman')})"
tether train $ds --out runs6b/$t/iql_vlm10k --algo iql --iql.reward reward.noisy-oracle-10k --optim.steps 20000 --optim.batch-size 256 > runs6b/$t/iql_vlm10k.train.log 2>&1
tether eval runs6b/$t/iql_vlm10k/policy.pt --sim metaworld --episodes 100 --seed 1000 --num-envs 2 --out runs6b/$t/eval_iql_vlm10k --videos-per-task 2 > runs6b/$t/eval_iql_vlm10k.log 2>&1
tail -1 runs6b/$t/eval_iql_vlm10k.log
