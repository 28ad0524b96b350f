"""tether.sim: MuJoCo environments, scenes, scripted experts and benchmark adapters.

tether's own arm (``tether.sim.arm``): a ROBOTIS OpenMANIPULATOR-X (4 revolute joints, DYNAMIXEL
XM430-W350 servos; joint limits, 4.8 rad/s velocity limit and link lengths from ROBOTIS' datasheet
and URDF) on a table with a puck, a goal and two cameras (``front``, ``top``), authored in
``sim/assets/omx_scene.xml``. Tasks ``reach`` and ``push`` at 50 Hz, with state (17 values: joint
positions rad, velocities rad/s, tool point, puck and goal xyz in m) and image observations,
``joint`` (absolute targets, rad) or ``ee_delta`` (tool displacement, m per step, damped least
squares IK on ``mj_jacSite``) actions, dense and sparse rewards, success within 2 cm (reach) or
3 cm (push), seeded resets and scripted experts (``expert_policy``). One ``MjModel`` (``Scene``)
serves any number of ``MjData``: ``reset``/``step``/``get_state`` touch only the data.

- Gymnasium: ``import tether.sim.envs`` registers ``tether/Reach-v0`` and ``tether/Push-v0``
  (kwargs ``obs_type="state"|"pixels"|"state+pixels"``, ``action_mode``, ``reward_type``,
  ``render_mode="rgb_array"``); ``tether.sim`` itself does not import gymnasium.
- Robot server: ``tether serve --robot arm --tasks reach push [--action-mode joint]``
  (driver ``tether.robot.drivers.arm.ArmRobot``, spec ``tether.sim.arm.arm_spec``).
"""

import os

# MuJoCo reads MUJOCO_GL when it is first imported: choose the headless default before that.
os.environ.setdefault("MUJOCO_GL", "egl")
