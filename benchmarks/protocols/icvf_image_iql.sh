#!/bin/bash
# Image IQL from the ICVF encoder against a random one (issue 7): 2 tasks x N = 5/10/25 x 3 seeds x 2 inits,
# each IQL on the 64x64 corner image plus hand position and gripper, evaluated on 50 episodes; one worker
# takes every WORKERS-th job, so two workers share two cores. icvf_image_iql_table.py tabulates.
# Needs the data and icvf/encoder.pt of icvf_video_pretrain.sh.
# Time on 2 CPU cores (Intel Xeon @ 2.80 GHz, 24 GB, no GPU) at 1500 steps: about 12 min per run per core
# (an image-IQL step is about 0.1 s), so the 36 runs take about 3.5-4 h with two workers.
#   icvf_image_iql.sh WORKER WORKERS [STEPS] [icvf|random]
export MUJOCO_GL=egl OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
worker=$1; workers=$2; steps=${3:-2000}; only=${4:-all}; k=0
for n in 10 5 25; do for t in drawer-open-v3 button-press-topdown-v3; do for seed in 0 1 2; do for init in icvf random; do
  [ $only = all ] || [ $only = $init ] || continue
  k=$((k+1)); [ $(( (k-1) % workers )) -eq $worker ] || continue
  out=runs/${t}_n${n}_s${seed}_${init}; [ -f $out/eval/eval.json ] && continue
  extra=""; [ $init = icvf ] && extra="--iql.encoder-init icvf/encoder.pt"
  tether train tgt_${t}_$n --algo iql --iql.encoder image --iql.camera observation.images.corner --iql.state-dims 0 1 2 3 \
    $extra --optim.steps $steps --optim.batch-size 128 --optim.seed $seed --out $out > $out.train.log 2>&1 || { echo "FAIL train $out"; continue; }
  tether eval $out/policy.pt --sim metaworld --episodes 50 --seed 1000 --num-envs 1 --max-episode-steps 150 --out $out/eval --videos-per-task 1 > $out.eval.log 2>&1 || echo "FAIL eval $out"
  echo "$out $(tail -1 $out.eval.log)"
done; done; done; done
