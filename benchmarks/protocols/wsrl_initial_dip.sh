#!/bin/bash
# WSRL's initial dip (issue 8), measured on evaluation episodes: WSRL again on drawer-open with a mean-action
# evaluation episode after every 4 training episodes, then finetune compare against the other runs.
# Time on 2 CPU cores (Intel Xeon @ 2.80 GHz, 24 GB, no GPU): 50k online steps in real time at 80 Hz, about
# 11-12 min.
# run in the folder of metaworld_online_finetune.sh drawer-open-v3 (it reads calql_drawer-open-v3 and the other runs)
export MUJOCO_GL=egl OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
t=drawer-open-v3; port=57601
tether serve --robot metaworld --tasks $t --max-episode-steps 200 --address tcp://127.0.0.1:$port > serve_eval.log 2>&1 &
spid=$!; sleep 5
tether finetune run --robot tcp://127.0.0.1:$port --policy calql_$t/policy.pt --algo wsrl --steps 50000 --task $t \
  --eval-every 4 --out ft_${t}_wsrl_evals > ft_${t}_wsrl_evals.log 2>&1
kill -INT $spid; wait $spid
tether finetune compare ft_${t}_wsrl_evals ft_${t}_wsrl ft_${t}_rlpd ft_${t}_calql --offline eval_calql_$t --out compare_${t}_evals
