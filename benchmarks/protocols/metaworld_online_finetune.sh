#!/bin/bash
# Online fine-tuning on the robot (issue 8), one MetaWorld task: measures each algorithm's success against
# online steps, the initial dip, steps to 80% and the final policy's success over 100 episodes, against the
# offline Cal-QL policy.
# Time on 2 CPU cores (Intel Xeon @ 2.80 GHz, 24 GB, no GPU): Cal-QL offline 710 s on one core; each online run
# at least 50k / 80 Hz = 10.5 min of real time (the robot runs in real time); with the collection and
# the evaluations, about 1-1.5 h for the three algorithms (not timed end to end in the notes).
#
# Medium data (noisy scripted expert) -> Cal-QL offline ->
# offline eval -> STEPS online transitions each for WSRL, RLPD and continued Cal-QL against the
# simulated robot in real time (80 Hz, over ZeroMQ) -> tether finetune compare.
# Usage (in an empty experiment folder): metaworld_online_finetune.sh [TASK] [NOISE] [STEPS] ["ALGOS"]
set -e
export MUJOCO_GL=egl OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
t=${1:-drawer-open-v3}; noise=${2:-1.0}; steps=${3:-50000}; algos=${4:-"wsrl rlpd calql"}
ds=med_$t; off=calql_$t; port=57600
[ -d $ds ] || tether collect $ds --tasks $t --episodes 100 --quality medium --medium-noise $noise --cameras \
  --max-episode-steps 200 --seed 0 > $ds.log 2>&1
# 2 critics (Cal-QL's), not WSRL's 10: on one CPU core an update of 10 costs 5x more (0.7 s with CQL's sampled actions).
# Entropy temperature from 0.1, not SAC's 1: in 10k steps (not the papers' 1M) alpha only decays to 0.56 from 1, and
# the policy's mean stays shrunk (|a| ~0.3 where the data's is ~0.7: 0% success deterministic, 30% sampled).
[ -f $off/policy.pt ] || tether train $ds --algo calql --calql.sac.init-temperature 0.1 --optim.steps 10000 \
  --optim.batch-size 256 --out $off > $off.log 2>&1
[ -f eval_$off/eval.json ] || tether eval $off/policy.pt --sim metaworld --episodes 100 --seed 1000 \
  --max-episode-steps 200 --out eval_$off --videos-per-task 2 > eval_$off.log 2>&1
tail -1 eval_$off.log
tether serve --robot metaworld --tasks $t --max-episode-steps 200 --address tcp://127.0.0.1:$port > serve_$t.log 2>&1 &
spid=$!; trap 'kill -INT $spid; wait $spid' EXIT
sleep 5
for a in $algos; do
  run=ft_${t}_$a; extra=""; [ $a = wsrl ] || extra="--dataset $ds"
  [ -f $run/episodes.json ] || tether finetune run --robot tcp://127.0.0.1:$port --policy $off/policy.pt --algo $a \
    $extra --steps $steps --task $t --out $run > $run.log 2>&1
  tail -1 $run.log
done
kill -INT $spid; wait $spid; trap - EXIT
runs=""
for a in $algos; do  # the fine-tuned mean policies, evaluated as the offline one was
  run=ft_${t}_$a; runs="$runs $run"
  [ -f eval_$run/eval.json ] || tether eval $run/policy.onnx --sim metaworld --episodes 100 --seed 1000 \
    --max-episode-steps 200 --out eval_$run --videos-per-task 2 > eval_$run.log 2>&1
  echo "$run: $(grep -m1 "Success rate" eval_$run/eval.md)"
done
tether finetune compare $runs --offline eval_$off --out compare_$t
