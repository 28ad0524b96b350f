#!/usr/bin/env bash
# OGBench cube-single-play (issue 25): BESO with value guidance against plain BESO and the GCIQL
# actor, on the same play data, success on OGBench's 5 evaluation goals. Value guidance is IDQL's
# greedy choice (Hansen-Estruch et al., 2023): each step draws CANDIDATES samples from BESO in one
# batch and runs the one the GCIQL critic scores highest (tether eval --critic --candidates).
#
#   ogbench_cube_value_guided_beso.sh [EPISODES] [STEPS] [CANDIDATES] [EVAL_EPISODES]
#
# Collection and GCIQL are ogbench_cube_gciql.sh's (same folder, one seed, its settings, a checkpoint
# only at the end); BESO is ogbench_scene_play.sh's (3 DDIM steps, w = 1, hindsight goals 0.5-50 s
# ahead, window 1, a 4-layer transformer of width 128, batch 128), trained beside GCIQL.
# `tether eval compare` tabulates the three with 95% CIs and Fisher's exact test against plain
# BESO. Defaults: about 45 min on 2 CPU cores (collection about 15 min, the two trainings side by
# side about 20 min, three evaluations of 5 x EVAL_EPISODES episodes). Run from an empty folder;
# running it again goes on where it stopped.
set -euo pipefail
EPISODES=${1:-100}
STEPS=${2:-20000}
CANDIDATES=${3:-16}
EVAL_EPISODES=${4:-20}
HERE=$(dirname "$0")
export MUJOCO_GL=${MUJOCO_GL:-egl} OMP_NUM_THREADS=1

CKPT=$STEPS bash "$HERE/ogbench_cube_gciql.sh" "$EPISODES" "$STEPS" "256 256" 256 0 "$EVAL_EPISODES" > gciql.log 2>&1 &
gciql=$!
while ! grep -q "episodes" collect.log 2>/dev/null; do sleep 10; done  # the play data is written
nice -n 10 tether train cube_play --algo beso --out cube_beso --goal.kind hindsight --goal.min-offset-s 0.5 \
  --goal.max-offset-s 50 --beso.window 1 --beso.d-model 128 --beso.n-layers 4 --beso.n-heads 4 \
  --optim.batch-size 128 --optim.steps "$STEPS" --optim.checkpoint-every 2500 --resume > train_beso.log 2>&1
wait $gciql
[ -f cube_beso/policy.onnx ] || tether export cube_beso/policy.pt --out cube_beso/policy.onnx
ev() {  # NAME ONNX [EVAL_OPTION...]
  [ -f "eval_$1/eval.json" ] && return 0
  tether eval "$2" --sim ogbench:cube-single --episodes "$EVAL_EPISODES" --videos-per-task 1 "${@:3}" \
    --out "eval_$1" > "eval_$1.log" 2>&1
}
ev beso cube_beso/policy.onnx
ev beso_value cube_beso/policy.onnx --critic cube_gciql_s0/critic.onnx --candidates "$CANDIDATES"
tether eval compare eval_beso eval_beso_value "eval_s0_$STEPS" --out compare
