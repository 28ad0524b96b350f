"""tether.sim: MuJoCo environments, scenes, scripted experts and benchmark adapters."""

import os

# MuJoCo reads MUJOCO_GL when it is first imported: choose the headless default before that.
os.environ.setdefault("MUJOCO_GL", "egl")
