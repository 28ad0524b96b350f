#!/usr/bin/env bash
# OGBench scene-play (issue 5): BESO against GCBC from play data, with BESO's sampler and guidance
# ablations, success on OGBench's 5 evaluation goals x 20 episodes.
# Time on 2 CPU cores (Intel Xeon @ 2.80 GHz, 24 GB, no GPU): 150 episodes and 100k steps took about
# 2.5 h (collection 890 s, each training 5430 s, both at once, evaluations 290-585 s per 100 episodes,
# two at a time); the defaults (150, 40k) about 1.5 h; the full size (1000 300000) is 40-80 min of
# collection, 4.6-7.3 h of training (11-18 steps/s per model, one core each) and about 40 min of
# evaluations, so it spans sessions (see below). On a CUDA GPU the trainings use it.
#
# Play data from OGBench's noisy oracles, BESO and GCBC on the same
# transformer with hindsight goals, then OGBench's 5 evaluation goals (20 episodes each, a video
# per goal) for BESO (3 steps, w = 1), BESO with CFG (w = 1.5, 3, 5), GCBC, and BESO's sampler
# ablations (steps 1/3/10, w 0/1/1.5/3/5, zero initial noise) exported from the same weights.
# Tabulate with ogbench_scene_table.py; goal_sensitivity.py then measures how far each policy's
# action moves with the goal.
#
#   [GOAL_DIMS="..."] ogbench_scene_play.sh [EPISODES] [STEPS] [D_MODEL] [LAYERS] [HORIZON] [ACTION_STEPS]
#
# HORIZON > 1 trains both policies on action chunks of that length (--beso.action-horizon) and
# evaluates them running ACTION_STEPS actions of each chunk (Diffusion Policy's n_action_steps),
# and with ACT's temporal ensembling (a plan every tick, overlapping chunks averaged); its
# folders get an _hHORIZON suffix, so a chunk run and a single-action run share the data.
# GOAL_DIMS restricts both policies' goals to those observation.state elements (--goal.dims; the
# objects' state, as OGBench's success criteria: GOAL_DIMS="19 20 21 28 29 32 33 36 38" is the
# cube's position, both buttons' on/off state, the drawer's and the window's position); its
# folders get an _obj suffix.
#
# OGBench's scene-play is 1000 episodes of 1000 steps, with about 1M gradient steps per method;
# the defaults here are what two CPU cores finish in a session (150 episodes, 40k steps, both
# models trained at once, one core each). Longer runs span sessions: run the script again and it
# goes on where it stopped (a collector cut short goes on at its next seed, the trainings resume
# exactly from their last checkpoint, every 2500 steps; evaluations start once both models are
# trained). Never pause a collector (SIGSTOP): its robot link times out and it stops.
set -euo pipefail
EPISODES=${1:-150}
STEPS=${2:-40000}
D_MODEL=${3:-128}
LAYERS=${4:-4}
HORIZON=${5:-1}
ACTION_STEPS=${6:-1}
SUF=$([ "$HORIZON" -gt 1 ] && echo "_h$HORIZON" || true)$([ -n "${GOAL_DIMS:-}" ] && echo "_obj" || true)
export MUJOCO_GL=${MUJOCO_GL:-egl}

collect_part() {  # NAME FIRST_SEED EPISODES: a part cut short (a session's end) goes on at its next seed
  local have=0
  if [ -f "$1/meta/info.json" ]; then
    have=$(tether dataset info "$1" --json | python -c 'import json, sys; print(json.load(sys.stdin)["episodes"])')
  fi
  [ "$have" -ge "$3" ] && return 0
  # episode k is seed FIRST_SEED + k; --resume goes on at the part's next seed
  tether collect "$1" --env ogbench:scene --episodes $(( $3 - have )) --episode-steps 1000 --cameras \
    --seed "$2" $([ "$have" -gt 0 ] && echo --resume || echo --overwrite)
}
if [ ! -d scene_play ]; then  # two collectors at once (the second from seed HALF), then merged
  HALF=$(( (EPISODES + 1) / 2 ))
  collect_part play_part0 0 "$HALF" & first=$!
  collect_part play_part1 "$HALF" $(( EPISODES - HALF )) & second=$!
  status=0
  wait $first || status=$?
  wait $second || status=$?
  if [ "$status" -ne 0 ]; then  # never merge a part cut short: running the script again resumes it
    echo "a collector failed (exit $status)" >&2
    exit "$status"
  fi
  tether dataset merge play_part0 play_part1 --out scene_play
fi

COMMON="--goal.kind hindsight --goal.min-offset-s 0.5 --goal.max-offset-s 50 --beso.window 1 --beso.action-horizon $HORIZON
  --beso.d-model $D_MODEL --beso.n-layers $LAYERS --beso.n-heads 4 --optim.batch-size 128
  --optim.steps $STEPS --optim.checkpoint-every 2500 --resume ${GOAL_DIMS:+--goal.dims $GOAL_DIMS}"
for algo in beso gcbc; do
  OMP_NUM_THREADS=1 tether train scene_play --out "scene_$algo$SUF" --algo "$algo" $COMMON > "train_$algo$SUF.log" 2>&1 &
done
wait

B=scene_beso$SUF G=scene_gcbc$SUF
ev() {  # NAME ONNX [ACTION_STEPS [EVAL_OPTION...]]
  tether eval "$2" --sim ogbench:scene --episodes 20 --videos-per-task 1 --action-steps "${3:-$ACTION_STEPS}" \
    "${@:4}" --out "eval_$1" > "eval_$1.log" 2>&1
}
tether export $B/policy.pt --out $B/policy.onnx
tether export $G/policy.pt --out $G/policy.onnx
for v in "steps1 --num-steps 1" "steps10 --num-steps 10" "w0 --guidance-weight 0" "w1.5 --guidance-weight 1.5" \
         "w3 --guidance-weight 3" "w5 --guidance-weight 5"; do
  set -- $v
  name=$1; shift
  tether export $B/policy.pt --out "$B/$name.onnx" "$@"
done
# two evaluations at a time, one per core
OMP_NUM_THREADS=1 ev beso$SUF $B/policy.onnx & OMP_NUM_THREADS=1 ev gcbc$SUF $G/policy.onnx & wait
OMP_NUM_THREADS=1 ev beso${SUF}_w1.5 $B/w1.5.onnx & OMP_NUM_THREADS=1 ev beso${SUF}_w0 $B/w0.onnx & wait
OMP_NUM_THREADS=1 ev beso${SUF}_steps1 $B/steps1.onnx & OMP_NUM_THREADS=1 ev beso${SUF}_steps10 $B/steps10.onnx & wait
OMP_NUM_THREADS=1 ev beso${SUF}_w3 $B/w3.onnx & OMP_NUM_THREADS=1 ev beso${SUF}_w5 $B/w5.onnx & wait
# BESO sampled from zero initial noise (one plan per state)
OMP_NUM_THREADS=1 ev beso${SUF}_det $B/policy.onnx "" --deterministic &
if [ "$HORIZON" -gt 1 ]; then  # ACT's temporal ensembling: plan every tick, average the chunks
  OMP_NUM_THREADS=1 ev beso${SUF}_ens $B/policy.onnx 1 --chunk-blend ensemble &
  OMP_NUM_THREADS=1 ev gcbc${SUF}_ens $G/policy.onnx 1 --chunk-blend ensemble &
fi
wait
# every BESO arm against GCBC: bar plot with 95% CIs and Fisher exact tests in compare$SUF/
ARMS="eval_beso$SUF"
for v in w1.5 w3 w5 w0 steps1 steps10 det; do ARMS="$ARMS eval_beso${SUF}_$v"; done
tether eval compare eval_gcbc$SUF $ARMS --out compare$SUF > compare$SUF.log 2>&1
python "$(dirname "$0")/ogbench_scene_table.py" .
python "$(dirname "$0")/goal_sensitivity.py" scene_play $G/policy.onnx $B/w0.onnx $B/policy.onnx \
  $B/w1.5.onnx $B/w3.onnx $B/w5.onnx
