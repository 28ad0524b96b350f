#!/usr/bin/env bash
# OCBench (issue 25): BESO (3 DDIM steps, w = 1, and with classifier-free guidance w = 3) against
# GCBC on the same causal transformer (task one-hot goals: behaviour cloning of each task) and BC
# (IQL's MLP actor), on demonstrations of OCBench's scripted block controller, success by OCBench's
# protocol (each episode to termination or the task's step limit), for every training seed.
#
#   ocbench_beso_vs_bc.sh [ENV] [EPISODES] [STEPS] [SEEDS] [EVAL_EPISODES] [HORIZON]
#
# ENV an OCBench env tether serves (block-lite-double: task1 places two cubes, task2 stacks them);
# EPISODES per task; SEEDS a quoted list of training seeds; HORIZON > 1 trains action chunks of
# that length and runs all of each chunk (OCBench's runs: chunks of 25, 2M steps of 8 x 4096
# residual MLPs, 10k-30k demonstrations, 500 evaluation episodes: far past two CPU cores).
# Tabulate with ocbench_beso_vs_bc_table.py (mean over seeds with a 95% t interval, Welch's t test
# over seeds and Fisher's exact test over pooled episodes, each BESO arm against GCBC and BC).
# Run from an empty folder; a second run goes on where the first stopped.
set -euo pipefail
ENV=${1:-block-lite-double}
EPISODES=${2:-100}
STEPS=${3:-20000}
SEEDS=${4:-"0 1 2"}
EVAL_EPISODES=${5:-50}
HORIZON=${6:-1}
export MUJOCO_GL=${MUJOCO_GL:-egl} OMP_NUM_THREADS=1
DS=demos_$ENV
have=0
if [ -f "$DS/meta/info.json" ]; then
  have=$(tether dataset info "$DS" --json | python -c 'import json, sys; print(json.load(sys.stdin)["episodes"])')
fi
if [ "$have" -eq 0 ]; then
  tether collect "$DS" --env "ocbench:$ENV" --episodes "$EPISODES" --cameras > "collect_$ENV.log" 2>&1
fi
SEQ="--beso.window 2 --beso.action-horizon $HORIZON --beso.d-model 128 --beso.n-layers 4 --optim.batch-size 128
  --optim.steps $STEPS --optim.checkpoint-every 2500 --resume"
ev() {  # NAME ONNX
  [ -f "$1/eval.json" ] && return 0
  nice -n 10 tether eval "$2" --sim "ocbench:$ENV" --episodes "$EVAL_EPISODES" --action-steps "$HORIZON" \
    --videos-per-task 1 --out "$1" > "$1.log" 2>&1
}
for seed in $SEEDS; do
  for algo in beso gcbc; do
    out=${ENV}_${algo}_s$seed
    [ -f "$out/policy.pt" ] || nice -n 10 tether train "$DS" --algo "$algo" --out "$out" $SEQ --optim.seed "$seed" \
      > "train_${algo}_s$seed.log" 2>&1
    [ -f "$out/policy.onnx" ] || tether export "$out/policy.pt" --out "$out/policy.onnx"
  done
  B=${ENV}_beso_s$seed
  [ -f "$B/w3.onnx" ] || tether export "$B/policy.pt" --out "$B/w3.onnx" --guidance-weight 3
  out=${ENV}_bc_s$seed
  [ -f "$out/policy.onnx" ] || nice -n 10 tether train "$DS" --algo bc --out "$out" --iql.hidden 256 256 \
    --optim.steps "$STEPS" --optim.seed "$seed" > "train_bc_s$seed.log" 2>&1
  ev "eval_beso_s$seed" "$B/policy.onnx"
  ev "eval_beso_w3_s$seed" "$B/w3.onnx"
  ev "eval_gcbc_s$seed" "${ENV}_gcbc_s$seed/policy.onnx"
  ev "eval_bc_s$seed" "$out/policy.onnx"
done
python "$(dirname "$0")/ocbench_beso_vs_bc_table.py" .
