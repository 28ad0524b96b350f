#!/bin/bash
export MUJOCO_GL=egl OMP_NUM_THREADS=1
for t in "$@"; do
  tether collect ds2_$t --tasks $t --episodes 100 --quality mix --mix 0.15 0.25 0.2 0.4 --expert-noise 0.1 --medium-noise 0.6 --seed 0 --overwrite 2>&1 | tail -1
done
