"""tether's own arm tasks: a simulated ROBOTIS OpenMANIPULATOR-X that reaches and pushes.

The scene (``sim/assets/omx_scene.xml``) models the OpenMANIPULATOR-X (RM-X52-TNM; 4 revolute
joints driven by DYNAMIXEL XM430-W350 servos) from ROBOTIS' published numbers:

=======  =====================  ================  ===============================
joint    limits (rad)           velocity (rad/s)  link to next joint (m)
=======  =====================  ================  ===============================
joint1   [-3.14, 3.14] (yaw)    4.8               0.0765 up to joint2 (x +0.012)
joint2   [-1.50, 1.50] (pitch)  4.8               (0.024, 0.128) to joint3
joint3   [-1.50, 1.40] (pitch)  4.8               0.124 to joint4
joint4   [-1.70, 1.97] (pitch)  4.8               0.126 to the tool point
=======  =====================  ================  ===============================

Sources: ROBOTIS e-Manual "OpenMANIPULATOR-X Specification" (46 rpm = 4.82 rad/s, 380 mm reach)
and ROBOTIS-GIT/open_manipulator ``open_manipulator_x.urdf`` (joint origins and limits); servo
torque 4.1 N.m from the XM430-W350 e-Manual page. The MJCF's comment block has the rest.

Everything is split into a model part and a data part so that one ``MjModel`` can serve many
``MjData`` (the vectorized env steps N of them in threads): ``Scene`` holds the model and the
indices into it and is read-only after ``Scene.load``; ``reset``, ``step`` and ``get_state``
are functions of ``(scene, data, ...)`` that touch only ``data``. The goal lives in ``data`` too
(a mocap body), so episodes never write to the model.

Control: 50 Hz (10 physics steps of 2 ms per action). Two action modes:

- ``joint``: absolute joint position targets (rad), shape (4,), within the joint limits;
- ``ee_delta``: Cartesian tool-point displacement (m per control step), shape (3,), each in
  [-0.01, 0.01], in the world frame (x forward, y left, z up), solved to joint targets with
  damped least squares on MuJoCo's site Jacobian (``mj_jacSite``).

In both modes the position targets move at most 4.8 rad/s x 0.02 s per step per joint (the servo's
speed limit, as its profile velocity enforces on the real arm).

State ``observation.state``, float32 (17,), names in ``STATE_NAMES``: joint positions (rad, 4),
joint velocities (rad/s, 4), tool point xyz (m, 3), puck centre xyz (m, 3), goal xyz (m, 3), all
in the world frame whose origin is on the table top at the arm's base.

Tasks (``TASKS``):

- ``reach``: bring the tool point within 2 cm of a goal in the air; dense reward
  ``-|tool - goal|`` (m); 100 steps (2 s). The puck is parked out of reach.
- ``push``: push the puck (radius 2.2 cm) until its centre is within 3 cm of a goal on the table
  (horizontal distance); dense reward ``-|tool - puck| - 2 |puck_xy - goal_xy|`` (m); 200 steps.

The sparse reward is 1.0 on a step where the task is achieved, else 0.0. Seeds name initial
conditions exactly: ``reset(scene, data, task, np.random.default_rng(seed))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mujoco
import numpy as np

from tether.robot.spec import Feature, RobotSpec, SafetySpec
from tether.sim.step_result import StepResult

ROBOT_TYPE = "openmanipulator-x"
MODEL_PATH = Path(__file__).parent / "assets" / "omx_scene.xml"
TASKS = ("reach", "push")
ACTION_MODES = ("ee_delta", "joint")

JOINT_NAMES = ("joint1", "joint2", "joint3", "joint4")
JOINT_LOW = np.array([-3.14, -1.5, -1.5, -1.7])
JOINT_HIGH = np.array([3.14, 1.5, 1.4, 1.97])
JOINT_VEL_LIMIT = 4.8  # rad/s, 46 rpm no-load speed of the XM430-W350 at 12 V

TIMESTEP_S = 0.002
FRAME_SKIP = 10
CONTROL_RATE_HZ = 1.0 / (TIMESTEP_S * FRAME_SKIP)  # 50 Hz
MAX_EE_STEP = 0.01  # m per control step (0.5 m/s)
MAX_JOINT_STEP = JOINT_VEL_LIMIT / CONTROL_RATE_HZ  # rad per control step
# How far a target may lead the measured joint angle (rad): bounds wind-up when the arm is blocked.
MAX_LEAD = 0.3
# Tool pitch the IK keeps (rad below horizontal): with 4 joints and a 3-D position target one
# degree of freedom is left; 1.0 rad keeps the fingertips leading and reaches z 0.015-0.15 m
# over 0.1-0.27 m of radius inside the joint limits (sampled from the model).
TOOL_PITCH = 1.0
PITCH_WEIGHT = 0.3  # weight of the pitch row against the position rows (1/m units)
IK_DAMPING = 0.02  # lambda of damped least squares (m)
# Box the tool point is kept in (m), world frame: above the table, inside the reach.
WORKSPACE_LOW = (0.02, -0.3, 0.012)
WORKSPACE_HIGH = (0.36, 0.3, 0.3)
_WS_LOW, _WS_HIGH = np.array(WORKSPACE_LOW), np.array(WORKSPACE_HIGH)
# Joint angles with the tool point at (0.18, 0, 0.12) and TOOL_PITCH (solved with the IK below).
HOME_QPOS = np.array([0.0, -0.357, 0.1852, 1.1719])
PUCK_RADIUS = 0.022
PUCK_HALF_HEIGHT = 0.015
PARKED_PUCK = (-0.08, 0.28)  # m: where reach leaves the puck, out of the arm's way

_JOINT_STATE = [f"{j}_pos" for j in JOINT_NAMES] + [f"{j}_vel" for j in JOINT_NAMES]
STATE_NAMES = tuple(
    _JOINT_STATE + ["ee_x", "ee_y", "ee_z", "obj_x", "obj_y", "obj_z", "goal_x", "goal_y", "goal_z"]
)
# Bounds of every state element (for observation spaces): angles, joint speeds, positions in the
# room (the floor stops a puck pushed off the table).
STATE_LOW = np.array([-4.0] * 4 + [-50.0] * 4 + [-2.0] * 9, np.float32)
STATE_HIGH = -STATE_LOW
EE = slice(8, 11)
OBJ = slice(11, 14)
GOAL = slice(14, 17)


class UnknownTaskError(ValueError):
    """The task or action mode is not one of the arm's."""


@dataclass(frozen=True)
class TaskConfig:
    """One task: its episode length (control steps) and success threshold (m)."""

    name: str
    max_episode_steps: int
    success_threshold_m: float


TASK_CONFIGS = {
    "reach": TaskConfig("reach", 100, 0.02),
    "push": TaskConfig("push", 200, 0.03),
}


def check_task(task: str, action_mode: str = "ee_delta") -> TaskConfig:
    """The task's config; raises ``UnknownTaskError`` for an unknown task or action mode."""
    if task not in TASK_CONFIGS:
        raise UnknownTaskError(f"unknown arm task {task!r}; the arm's tasks are {list(TASKS)}")
    if action_mode not in ACTION_MODES:
        raise UnknownTaskError(
            f"unknown action mode {action_mode!r}; choose one of {list(ACTION_MODES)}"
        )
    return TASK_CONFIGS[task]


@dataclass(frozen=True)
class Scene:
    """The arm scene's ``MjModel`` and the indices the task functions use (read-only).

    Build it once with ``Scene.load()`` and share it between any number of ``MjData``.
    """

    model: mujoco.MjModel
    qpos_adr: np.ndarray = field(repr=False)  # (4,) arm joint addresses in qpos
    dof_adr: np.ndarray = field(repr=False)  # (4,) arm joint addresses in qvel
    ee_site: int = 0
    puck_qpos: int = 0  # start of the puck's free joint (xyz, quaternion) in qpos
    puck_dof: int = 0
    goal_mocap: int = 0

    @classmethod
    def load(cls, path: Path | str = MODEL_PATH) -> Scene:
        """Compile the MJCF at ``path`` (default: the packaged scene).

        Raises:
            ValueError: MuJoCo could not compile the file (its message says where).
        """
        model = mujoco.MjModel.from_xml_path(str(path))
        joints = [model.joint(n) for n in JOINT_NAMES]
        puck = model.joint("puck")
        return cls(
            model=model,
            qpos_adr=np.array([j.qposadr[0] for j in joints]),
            dof_adr=np.array([j.dofadr[0] for j in joints]),
            ee_site=model.site("ee").id,
            puck_qpos=int(puck.qposadr[0]),
            puck_dof=int(puck.dofadr[0]),
            goal_mocap=int(model.body("goal").mocapid[0]),
        )

    def make_data(self) -> mujoco.MjData:
        return mujoco.MjData(self.model)


def _polar(rng: np.random.Generator, r: tuple[float, float], az: tuple[float, float]) -> np.ndarray:
    radius, angle = rng.uniform(*r), rng.uniform(*az)
    return np.array([radius * np.cos(angle), radius * np.sin(angle)])


def reset(scene: Scene, data: mujoco.MjData, task: str, rng: np.random.Generator) -> None:
    """Draw an initial condition of ``task`` from ``rng`` into ``data``.

    The arm starts at ``HOME_QPOS`` plus uniform noise of +-0.1 rad per joint, at rest, with its
    targets at its position. reach: goal at radius 0.12-0.26 m, azimuth +-0.6 rad, height
    0.03-0.15 m. push: puck at radius 0.15-0.24 m, azimuth +-0.5 rad; goal 8-14 cm away in any
    direction, on the table at radius 0.12-0.27 m, azimuth +-0.6 rad.

    Raises:
        UnknownTaskError: ``task`` is not one of ``TASKS``.
    """
    check_task(task)
    mujoco.mj_resetData(scene.model, data)
    q = np.clip(HOME_QPOS + rng.uniform(-0.1, 0.1, 4), JOINT_LOW, JOINT_HIGH)
    data.qpos[scene.qpos_adr] = q
    data.ctrl[:] = q
    if task == "reach":
        puck = np.array(PARKED_PUCK)
        goal = np.append(_polar(rng, (0.12, 0.26), (-0.6, 0.6)), rng.uniform(0.03, 0.15))
    else:
        puck = _polar(rng, (0.15, 0.24), (-0.5, 0.5))
        while True:  # rejection sampling: a few draws on average
            angle = rng.uniform(-np.pi, np.pi)
            goal_xy = puck + rng.uniform(0.08, 0.14) * np.array([np.cos(angle), np.sin(angle)])
            r, az = np.hypot(*goal_xy), np.arctan2(goal_xy[1], goal_xy[0])
            if 0.12 <= r <= 0.27 and abs(az) <= 0.6:
                break
        goal = np.append(goal_xy, PUCK_HALF_HEIGHT)
    a = scene.puck_qpos
    data.qpos[a : a + 3] = (puck[0], puck[1], PUCK_HALF_HEIGHT)
    data.qpos[a + 3 : a + 7] = (1.0, 0.0, 0.0, 0.0)
    data.mocap_pos[scene.goal_mocap] = goal
    mujoco.mj_forward(scene.model, data)


_PITCH_ROW = PITCH_WEIGHT * np.array([0.0, 1.0, 1.0, 1.0])
_DAMPING_I = IK_DAMPING**2 * np.eye(4)


def ik_delta_batch(jacp: np.ndarray, q: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Joint displacements (rad, (N, 4)) that move N tool points by ``delta`` (m, (N, 3)).

    Damped least squares (Wampler 1986; Buss 2004, "Introduction to inverse kinematics with
    Jacobian transpose, pseudoinverse and damped least squares methods", eq. 11):
    ``dq = J^T (J J^T + lambda^2 I)^-1 e`` on the arm joints' columns of the site Jacobian
    (``jacp``, (N, 3, 4), from ``mujoco.mj_jacSite`` at the measured configurations ``q``, rad
    (N, 4)), stacked with one row that holds the tool pitch at ``TOOL_PITCH``: the three pitch axes
    are parallel, so the pitch is joint2 + joint3 + joint4. The damping keeps ``dq`` bounded at the
    edge of the workspace, where the position rows lose rank.

    One batched solve serves the single env (N = 1) and the vectorized env alike, so both compute
    bit-identical targets.
    """
    n = delta.shape[0]
    jac = np.empty((n, 4, 4))
    jac[:, :3] = jacp
    jac[:, 3] = _PITCH_ROW
    err = np.empty((n, 4, 1))
    err[:, :3, 0] = delta
    err[:, 3, 0] = PITCH_WEIGHT * (TOOL_PITCH - q[:, 1:].sum(axis=1))
    jac_t = jac.transpose(0, 2, 1)
    return (jac_t @ np.linalg.solve(jac @ jac_t + _DAMPING_I, err))[:, :, 0]


def arm_jacobian(scene: Scene, data: mujoco.MjData) -> np.ndarray:
    """The tool point's translational Jacobian over the arm joints (m/rad, (3, 4)).

    Needs ``data``'s kinematics up to date (``mj_kinematics`` and ``mj_comPos``).
    """
    jacp = np.zeros((3, scene.model.nv))
    mujoco.mj_jacSite(scene.model, data, jacp, None, scene.ee_site)
    return jacp[:, scene.dof_adr]


def ik_delta(scene: Scene, data: mujoco.MjData, delta: np.ndarray) -> np.ndarray:
    """Joint displacement (rad, (4,)) that moves the tool point by ``delta`` (m, (3,)):
    ``ik_delta_batch`` on the Jacobian at ``data``'s measured configuration.

    Needs ``data``'s kinematics up to date (``mj_kinematics`` and ``mj_comPos``, as after
    ``step`` and ``reset``).
    """
    q = data.qpos[scene.qpos_adr]
    return ik_delta_batch(arm_jacobian(scene, data)[None], q[None], np.asarray(delta)[None])[0]


def joint_targets_batch(
    ctrl: np.ndarray, q: np.ndarray, ee: np.ndarray, jacp: np.ndarray, action: np.ndarray,
    action_mode: str,
) -> np.ndarray:
    """Joint position targets (rad, (N, 4)) for N arms, within every limit.

    Args:
        ctrl: current targets (rad, (N, 4)); q: measured joint angles (rad, (N, 4));
        ee: tool points (m, (N, 3)); jacp: Jacobians over the arm joints (m/rad, (N, 3, 4));
        action: (N, 4) joint targets in rad, or (N, 3) tool displacements in m (``action_mode``).

    ``joint``: the action itself; ``ee_delta``: the current targets plus ``ik_delta_batch`` of the
    displacement, which is first cut so the tool point stays in the workspace box. Then: joint
    limits, at most ``MAX_JOINT_STEP`` from the current targets (velocity limit) and at most
    ``MAX_LEAD`` from the measured angles.
    """
    action = np.asarray(action, dtype=np.float64)
    if action_mode == "joint":
        target = action
    else:
        # np.minimum/np.maximum: np.clip's dispatch costs more than the arithmetic on small arrays
        delta = np.minimum(np.maximum(action, -MAX_EE_STEP), MAX_EE_STEP)
        delta = np.minimum(np.maximum(ee + delta, _WS_LOW), _WS_HIGH) - ee
        target = ctrl + ik_delta_batch(jacp, q, delta)
    target = np.minimum(np.maximum(target, ctrl - MAX_JOINT_STEP), ctrl + MAX_JOINT_STEP)
    target = np.minimum(np.maximum(target, q - MAX_LEAD), q + MAX_LEAD)
    return np.minimum(np.maximum(target, JOINT_LOW), JOINT_HIGH)


def joint_targets(
    scene: Scene, data: mujoco.MjData, action: np.ndarray, action_mode: str
) -> np.ndarray:
    """The joint position targets (rad, (4,)) that ``action`` asks for: ``joint_targets_batch``
    of one arm in ``data``."""
    jacp = arm_jacobian(scene, data)[None] if action_mode == "ee_delta" else None
    return joint_targets_batch(
        data.ctrl[None, :4], data.qpos[scene.qpos_adr][None], data.site_xpos[scene.ee_site][None],
        jacp, np.asarray(action)[None], action_mode,
    )[0]


def step(scene: Scene, data: mujoco.MjData, action: np.ndarray, action_mode: str) -> None:
    """Apply ``action`` for one control period (``FRAME_SKIP`` physics steps, 20 ms).

    Writes only ``data``. Afterwards positions, site frames and Jacobian inputs describe the new
    state (``mj_step`` leaves them one physics step behind, so they are refreshed).
    """
    data.ctrl[:4] = joint_targets(scene, data, action, action_mode)
    mujoco.mj_step(scene.model, data, nstep=FRAME_SKIP)
    mujoco.mj_kinematics(scene.model, data)
    mujoco.mj_comPos(scene.model, data)


def get_state(scene: Scene, data: mujoco.MjData) -> np.ndarray:
    """``observation.state``, float32 (17,): see ``STATE_NAMES`` and the module docstring."""
    a = scene.puck_qpos
    return np.concatenate(
        [
            data.qpos[scene.qpos_adr],
            data.qvel[scene.dof_adr],
            data.site_xpos[scene.ee_site],
            data.qpos[a : a + 3],
            data.mocap_pos[scene.goal_mocap],
        ]
    ).astype(np.float32)


def evaluate(task: str, state: np.ndarray) -> tuple[float, bool]:
    """Dense reward (negative distances, m) and success of ``task`` in ``state`` ((17,) or
    (N, 17) for a batch; then both are arrays)."""
    state = np.asarray(state, dtype=np.float64)
    ee, obj, goal = state[..., EE], state[..., OBJ], state[..., GOAL]
    threshold = TASK_CONFIGS[task].success_threshold_m
    if task == "reach":
        dist = np.linalg.norm(ee - goal, axis=-1)
        reward = -dist
    else:
        dist = np.linalg.norm(obj[..., :2] - goal[..., :2], axis=-1)
        reward = -np.linalg.norm(ee - obj, axis=-1) - 2.0 * dist
    success = dist < threshold
    if np.ndim(reward) == 0:
        return float(reward), bool(success)
    return reward, success


class ArmTask:
    """One arm task in one ``MjData`` with seeded resets (the sim driver's and the gym env's core).

    Args:
        task: ``"reach"`` or ``"push"``.
        action_mode: ``"ee_delta"`` (m per step, (3,)) or ``"joint"`` (rad, (4,)).
        max_episode_steps: truncation horizon (default: the task's).
        scene: a loaded scene to share (default: load one).

    Raises:
        UnknownTaskError: unknown task or action mode.
    """

    def __init__(
        self,
        task: str,
        action_mode: str = "ee_delta",
        max_episode_steps: int | None = None,
        scene: Scene | None = None,
    ):
        config = check_task(task, action_mode)
        self.name = task
        self.action_mode = action_mode
        self.max_episode_steps = max_episode_steps or config.max_episode_steps
        self.scene = scene or Scene.load()
        self.data = self.scene.make_data()
        self.steps = 0

    @property
    def model(self) -> mujoco.MjModel:
        return self.scene.model

    def reset(self, seed: int | None) -> np.ndarray:
        """Reset to the initial condition named by ``seed``; returns the state, float32 (17,)."""
        reset(self.scene, self.data, self.name, np.random.default_rng(seed))
        self.steps = 0
        return get_state(self.scene, self.data)

    def step(self, action: np.ndarray) -> StepResult:
        """Apply one action for one 20 ms control period."""
        step(self.scene, self.data, action, self.action_mode)
        self.steps += 1
        state = get_state(self.scene, self.data)
        reward, success = evaluate(self.name, state)
        return StepResult(state, reward, success, self.steps >= self.max_episode_steps)

    def hold_action(self) -> np.ndarray:
        """The action that keeps the arm where it is commanded now."""
        if self.action_mode == "joint":
            return self.data.ctrl[:4].astype(np.float32)
        return np.zeros(3, np.float32)


def action_feature(action_mode: str) -> Feature:
    """The action of ``action_mode`` (see the module docstring for units and limits)."""
    if action_mode == "joint":
        return Feature(
            "float32", (4,), names=JOINT_NAMES, unit="rad",
            low=tuple(JOINT_LOW), high=tuple(JOINT_HIGH),
        )
    if action_mode == "ee_delta":
        return Feature(
            "float32", (3,), names=("dx", "dy", "dz"), unit="m",
            low=(-MAX_EE_STEP,) * 3, high=(MAX_EE_STEP,) * 3,
        )
    raise UnknownTaskError(f"unknown action mode {action_mode!r}; choose one of {list(ACTION_MODES)}")


def arm_spec(
    tasks: tuple[str, ...] = TASKS,
    action_mode: str = "ee_delta",
    cameras: tuple[str, ...] = (),
    image_size: int = 128,
) -> RobotSpec:
    """The robot spec of the simulated OpenMANIPULATOR-X serving ``tasks`` in ``action_mode``.

    Safety: joint mode bounds the joints' commanded speed to ``JOINT_VEL_LIMIT`` (rad/s); ee_delta
    mode keeps the tool point inside ``WORKSPACE_LOW``/``WORKSPACE_HIGH``.

    Raises:
        UnknownTaskError: an unknown task or action mode.
    """
    for task in tasks:
        check_task(task, action_mode)
    observation = {
        "observation.state": Feature("float32", (17,), names=STATE_NAMES, unit="rad|rad/s|m"),
    }
    for cam in cameras:
        observation[f"observation.images.{cam}"] = Feature(
            "uint8", (image_size, image_size, 3), unit="pixel"
        )
    if action_mode == "joint":
        safety = SafetySpec(max_velocity=(JOINT_VEL_LIMIT,) * 4)
    else:
        safety = SafetySpec(
            workspace_low=WORKSPACE_LOW, workspace_high=WORKSPACE_HIGH,
            ee_state_names=("ee_x", "ee_y", "ee_z"), ee_action_axes=(0, 1, 2),
        )
    return RobotSpec(
        ROBOT_TYPE, CONTROL_RATE_HZ, observation, action_feature(action_mode), tasks=tuple(tasks),
        safety=safety,
    )


def expert_policy(task: str):
    """A scripted expert for ``task``: a callable state (17,) -> ee_delta action (3,) float32.

    reach: a proportional step toward the goal. push: go above the point behind the puck on the
    line from the goal through the puck, descend there, then push along that line, correcting the
    line at every step; when the puck drifts off the line, lift and go around again.

    Raises:
        UnknownTaskError: unknown task.
    """
    check_task(task)
    push_z = 0.012  # m: tool point height while pushing (the puck is 3 cm tall)
    safe_z = 0.06  # m: travel height above the puck
    behind = PUCK_RADIUS + 0.02  # m: where the tool point waits behind the puck's centre

    def toward(ee: np.ndarray, target: np.ndarray, gain: float = 0.6) -> np.ndarray:
        step = gain * (target - ee)
        norm = np.linalg.norm(step)
        if norm > MAX_EE_STEP:
            step *= MAX_EE_STEP / norm
        return step.astype(np.float32)

    def reach(state: np.ndarray) -> np.ndarray:
        return toward(state[EE], state[GOAL])

    def push(state: np.ndarray) -> np.ndarray:
        ee, obj, goal = (np.asarray(state[s], dtype=np.float64) for s in (EE, OBJ, GOAL))
        to_goal = goal[:2] - obj[:2]
        dist = np.linalg.norm(to_goal)
        if dist < 0.01:
            return np.zeros(3, np.float32)
        u = to_goal / dist
        rel = ee[:2] - obj[:2]
        along = rel @ u
        lateral = np.linalg.norm(rel - along * u)
        start = obj[:2] - behind * u
        if along < -PUCK_RADIUS and lateral < 0.012:
            if ee[2] > push_z + 0.015:  # above the start point: descend first
                return toward(ee, np.append(start, push_z))
            # push through the puck toward the goal; slow down near it so the puck does not slide on
            target = obj[:2] + u * min(0.03, dist)
            return toward(ee, np.append(target, push_z), gain=0.5)
        if np.linalg.norm(rel - (start - obj[:2])) > 0.015 and ee[2] < safe_z - 0.01:
            # low and off the start point: lift straight up, clear of the puck
            return toward(ee, np.append(ee[:2], safe_z))
        return toward(ee, np.append(start, safe_z))

    return reach if task == "reach" else push
