#!/usr/bin/env bash
# OGBench cube-single-play (issue 25): goal-conditioned IQL (OGBench's reference gciql.py, DDPG+BC
# actor, alpha 1, expectile 0.9, discount 0.99, value goals 0.2 current / 0.5 same episode /
# 0.3 random) on play data from OGBench's plan oracles, success on OGBench's 5 evaluation goals,
# at every checkpoint (the learning curve) and at the end, for each training seed.
#
#   ogbench_cube_gciql.sh [EPISODES] [STEPS] [HIDDEN] [BATCH] [SEEDS] [EVAL_EPISODES]
#
# HIDDEN is a quoted list of widths ("512 512 512" is OGBench's); SEEDS a quoted list of training
# seeds. OGBench's published cube-single-play GCIQL (68 +- 6, 8 seeds) is 1000 episodes of 1000
# steps, 1M steps of batch 1024 on 3 x 512 MLPs and 5 goals x 50 episodes: about 1000x the
# compute of the defaults here, which are what one CPU core finishes in about an hour beside
# other work. Run from an empty folder; running it again goes on where it stopped (collection
# resumes at its next seed, training from its last checkpoint, done evaluations are kept).
set -euo pipefail
EPISODES=${1:-200}
STEPS=${2:-30000}
HIDDEN=${3:-"256 256"}
BATCH=${4:-256}
SEEDS=${5:-"0"}
EVAL_EPISODES=${6:-20}
CKPT=${CKPT:-5000}
export MUJOCO_GL=${MUJOCO_GL:-egl} OMP_NUM_THREADS=1

have=0
if [ -f cube_play/meta/info.json ]; then
  have=$(tether dataset info cube_play --json | python -c 'import json, sys; print(json.load(sys.stdin)["episodes"])')
fi
if [ "$have" -lt "$EPISODES" ]; then  # OGBench's play data: plan oracles, noise 0.1, 1000 steps
  tether collect cube_play --env ogbench:cube-single --episodes $(( EPISODES - have )) --episode-steps 1000 \
    --cameras $([ "$have" -gt 0 ] && echo --resume || true) > collect.log 2>&1
fi

for seed in $SEEDS; do
  out=cube_gciql_s$seed
  # OGBench trains with plain Adam at a constant 3e-4: no weight decay, warm-up, decay or clip
  nice -n 10 tether train cube_play --algo gciql --out "$out" --gciql.hidden $HIDDEN \
    --optim.batch-size "$BATCH" --optim.steps "$STEPS" --optim.checkpoint-every "$CKPT" \
    --optim.weight-decay 0 --optim.warmup-steps 0 --optim.lr-schedule constant --optim.grad-clip 1e9 \
    --optim.seed "$seed" \
    --resume > "train_s$seed.log" 2>&1
  for onnx in "$out"/checkpoints/policy_*.onnx; do
    step=$(basename "$onnx" .onnx | sed 's/policy_//')
    ev="eval_s${seed}_$step"
    [ -f "$ev/eval.json" ] && continue
    nice -n 10 tether eval "$onnx" --sim ogbench:cube-single --episodes "$EVAL_EPISODES" \
      --videos-per-task $([ "$step" = "$STEPS" ] && echo 1 || echo 0) --out "$ev" > "$ev.log" 2>&1
  done
done
python "$(dirname "$0")/ogbench_cube_gciql_table.py" .
