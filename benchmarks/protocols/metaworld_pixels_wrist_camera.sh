#!/usr/bin/env bash
# Visuomotor BESO from an agent view and a camera behind the gripper (issue 20): MetaWorld's
# `corner` camera and its `behindGripper` camera, the eye-in-hand view robomimic's and Diffusion
# Policy's image configs pair with the agent view, plus the arm's proprioception (hand xyz and
# gripper, now and one frame before), no object state. Measures success on the demo's three tasks,
# 20 lock-stepped episodes each on unseen seeds, and the policy's latency in that eval.
#
# Why this camera: reach-v3's goal is a 2 cm red sphere, a dot of 1 to 3 pixels in the corner and
# top views at 128 px; from behind the gripper it is a blob of several pixels at 64 px.
#
# Time on 2 CPU cores (Intel Xeon, 24 GB, no GPU, nothing else running): collection of 40 demos per
# task with three cameras at 128 px 242 s; training 16k steps at 64 px 1650 s (about 10 steps/s), at
# 96 px 3209 s; eval about 3 min. Session 19: 0.88 [0.78, 0.94] at 96 px, 0.83 [0.72, 0.91] at 64 px.
#
# Usage (from an empty folder): metaworld_pixels_wrist_camera.sh [IMAGE_SIZE] [STEPS]
set -euo pipefail
SIZE=${1:-96}
STEPS=${2:-16000}
export MUJOCO_GL=${MUJOCO_GL:-egl}
out=wrist${SIZE}_${STEPS}

[ -f DS/meta/info.json ] || tether collect DS --episodes 40 --cameras corner topview behindGripper \
  --image-size 128 > collect.log 2>&1
[ -f $out/policy.pt ] || tether train DS --out $out --beso.window 1 --obs.cameras corner behindGripper \
  --obs.state-dims 0 1 2 3 18 19 20 21 --obs.image-size "$SIZE" --obs.channels 32 64 64 \
  --optim.batch-size 64 --optim.steps "$STEPS" > $out.train.log 2>&1
[ -f $out/policy.onnx ] || tether export $out/policy.pt
tether eval $out/policy.onnx --sim metaworld --tasks reach-v3 drawer-open-v3 button-press-topdown-v3 \
  --episodes 20 --seed 1000000 --out $out/eval | tail -1
