#!/bin/bash
# ICVF value pre-training on action-free video (issue 7): videos of 10 other MetaWorld tasks (12 episodes each,
# half expert, half noisy), target-task datasets (drawer-open, button-press-topdown) cut to N = 5/10/25
# episodes, 10 expert report episodes, then 1500 ICVF steps; measures the value's held-out Spearman against
# -(steps to go), on the other tasks and on the target tasks. Then icvf_image_iql.sh.
# Time on 2 CPU cores (Intel Xeon @ 2.80 GHz, 24 GB, no GPU): ICVF 339 s; the collections (190 episodes
# with 64x64 images) were not timed in the notes (several minutes).
set -e
export MUJOCO_GL=egl OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OTHER="reach-v3 push-v3 pick-place-v3 door-open-v3 drawer-close-v3 button-press-v3 window-open-v3 window-close-v3 faucet-open-v3 handle-press-v3"
[ -f vids/meta/info.json ] || tether collect vids --tasks $OTHER --episodes 12 --quality mix --mix 0.5 0.5 0 --medium-noise 0.5 --seed 100 --overwrite 2>&1 | tail -1
for t in drawer-open-v3 button-press-topdown-v3; do
  [ -f tgt_$t/meta/info.json ] || tether collect tgt_$t --tasks $t --episodes 25 --quality mix --mix 0.5 0.5 0 --medium-noise 0.5 --seed 0 --overwrite 2>&1 | tail -1
  for n in 5 10 25; do tether dataset split tgt_$t --out tgt_${t}_$n --episodes 0:$n --overwrite 2>&1 | tail -1; done
done
[ -f rep/meta/info.json ] || tether collect rep --tasks drawer-open-v3 button-press-topdown-v3 --episodes 10 --quality expert --seed 500 --overwrite 2>&1 | tail -1
tether pretrain-value --dataset vids --camera observation.images.corner --report-dataset rep --out icvf \
  --optim.steps 1500 --optim.batch-size 64 > icvf.log 2>&1
tail -3 icvf.log
