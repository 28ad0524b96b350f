#!/bin/bash
# Sim-to-real zero-shot (issue 9): PPO on tether's OpenMANIPULATOR-X reach with and without domain
# randomization (256 envs, 200 iterations), then 100 episodes each on the reality-gap arm served over
# ZeroMQ (lock-stepped), evaluated with onnxruntime: success and mean episode length.
# Time on 2 CPU cores (Intel Xeon @ 2.80 GHz, 24 GB, no GPU): PPO 153 s (no DR) and 228 s (DR), the evaluations
# about a minute each (episodes of 10-20 steps), so about 7 min in all.
export MUJOCO_GL=egl
for r in none default; do
  /usr/bin/time -f "%e s wall" tether train-sim --task reach --num-envs 256 --iterations 200 --randomize $r --out reach_$r --overwrite > train_$r.log 2>&1
done
port=57555
tether serve --robot arm --tasks reach --randomize reality_gap --lockstep --max-episode-steps 100 --address tcp://127.0.0.1:$port > serve.log 2>&1 &
spid=$!
sleep 8
for r in none default; do
  tether eval reach_$r/policy.onnx --robot tcp://127.0.0.1:$port --episodes 100 --seed 5000 --out eval_$r --videos-per-task 2 > eval_$r.log 2>&1
  tail -1 eval_$r.log
done
kill -INT $spid; wait $spid
