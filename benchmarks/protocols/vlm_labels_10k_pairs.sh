#!/bin/bash
export MUJOCO_GL=egl OMP_NUM_THREADS=1
t=sweep-into-v3; ds=ds2_$t; out=runs6b/$t/rm10k
mkdir -p $out
tether label $ds --labeller noisy-oracle --pairs 10000 --flip-prob 0.2 --seed 1 --name noisy-oracle-10k --json > $out/label.json
tether reward-model $ds --labels noisy-oracle-10k --relabel --out $out --steps 6000 --json > $out/rm.json
python3 -c "import json; d=json.load(open('$out/rm.json')); print({k: d[k] for k in ('val_accuracy','val_accuracy_true','spearman')})"
tether train $ds --out runs6b/$t/iql_vlm10k --algo iql --iql.reward reward.noisy-oracle-10k --optim.steps 20000 --optim.batch-size 256 > runs6b/$t/iql_vlm10k.train.log 2>&1
tether eval runs6b/$t/iql_vlm10k/policy.pt --sim metaworld --episodes 100 --seed 1000 --num-envs 2 --out runs6b/$t/eval_iql_vlm10k --videos-per-task 2 > runs6b/$t/eval_iql_vlm10k.log 2>&1
tail -1 runs6b/$t/eval_iql_vlm10k.log
