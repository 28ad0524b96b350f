#!/bin/bash
# Unlabelled MetaWorld data for the VLM-labels -> reward model -> IQL protocol (issue 6): 100 episodes
# per task (expert 15% / medium 25% / random 20% / off-task play 40%), 64x64 corner images, through a
# lock-stepped robot server, into ds2_TASK. Then vlm_labels_iql.sh TASK.
# Time: not recorded in the closing notes; a few minutes per task on 2 CPU cores (Intel Xeon @ 2.80 GHz, 24 GB, no GPU)
# (the demo's collector records about one 200-tick MetaWorld episode a second with a 128 px camera).
#   vlm_labels_collect.sh TASK...
export MUJOCO_GL=egl OMP_NUM_THREADS=1
for t in "$@"; do
  tether collect ds2_$t --tasks $t --episodes 100 --quality mix --mix 0.15 0.25 0.2 0.4 --expert-noise 0.1 --medium-noise 0.6 --seed 0 --overwrite 2>&1 | tail -1
done
