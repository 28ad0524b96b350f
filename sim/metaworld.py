"""MetaWorld v3 adapter: task environments, their robot spec, and the scripted expert policies.

MetaWorld (Yu et al., CoRL 2019; v3 environments from Farama's ``metaworld`` 3.x) gives 50 Sawyer
manipulation tasks, each with a hand-written expert. All tasks share one embodiment, so one
``RobotSpec`` serves them: a 39-dim state (hand xyz in m, gripper opening, two objects' position
and quaternion, the same 18 values of the previous frame, and the goal xyz in m) and a 4-dim action
(end-effector displacement, 1.0 = 1 cm per step, and gripper effort in [-1, 1]) at 80 Hz
(MetaWorld's ``frame_skip`` 5 x 2.5 ms).

Episodes are seeded: ``MetaWorldTask.reset(seed)`` draws the object and goal positions from the
task's randomization space with that seed, so a seed names one initial condition exactly.
"""

from __future__ import annotations

import re

import numpy as np

from tether.robot.spec import Feature, RobotSpec
from tether.sim.step_result import StepResult

ROBOT_TYPE = "metaworld-sawyer"
CONTROL_RATE_HZ = 80.0  # frame_skip 5 x timestep 0.0025 s
DEFAULT_TASKS = ("reach-v3", "drawer-open-v3", "button-press-topdown-v3")

_OBJ = [f"obj{i}_{a}" for i in range(2) for a in ("x", "y", "z", "qw", "qx", "qy", "qz")]
_FRAME = ["hand_x", "hand_y", "hand_z", "gripper_distance", *_OBJ]
STATE_NAMES = tuple(_FRAME + [f"prev_{n}" for n in _FRAME] + ["goal_x", "goal_y", "goal_z"])
ACTION_NAMES = ("dx", "dy", "dz", "gripper")
# MetaWorld's own expert class names that do not follow the task name.
_EXPERT_EXCEPTIONS = {"peg-insert-side-v3": "SawyerPegInsertionSideV3Policy"}


class UnknownTaskError(ValueError):
    """The task is not a MetaWorld v3 task."""


def all_tasks() -> tuple[str, ...]:
    """Names of every MetaWorld v3 task, e.g. ``"drawer-open-v3"``."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return tuple(ALL_V3_ENVIRONMENTS)


def check_tasks(tasks: tuple[str, ...] | list[str]) -> None:
    """Raise ``UnknownTaskError`` (one line, with close matches) for a name MetaWorld lacks."""
    import difflib

    known = all_tasks()
    for task in tasks:
        if task not in known:
            close = difflib.get_close_matches(task, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownTaskError(f"unknown MetaWorld task {task!r}{hint} (v3 names end in -v3)")


def metaworld_spec(
    tasks: tuple[str, ...] = DEFAULT_TASKS,
    cameras: tuple[str, ...] = (),
    image_size: int = 128,
) -> RobotSpec:
    """The robot spec shared by MetaWorld v3 tasks (see module docstring for units)."""
    observation = {
        "observation.state": Feature("float32", (39,), names=STATE_NAMES, unit="m|quat"),
    }
    for cam in cameras:
        observation[f"observation.images.{cam}"] = Feature(
            "uint8", (image_size, image_size, 3), unit="pixel"
        )
    action = Feature(
        "float32", (4,), names=ACTION_NAMES, unit="normalized", low=(-1.0,) * 4, high=(1.0,) * 4
    )
    return RobotSpec(ROBOT_TYPE, CONTROL_RATE_HZ, observation, action, tasks=tuple(tasks))


class MetaWorldTask:
    """One MetaWorld v3 task with the goal observable and seeded initial conditions.

    Args:
        task: a v3 task name, e.g. ``"drawer-open-v3"``.
        max_episode_steps: truncation horizon (MetaWorld's own is 500).

    Raises:
        UnknownTaskError: for a name MetaWorld does not have.
    """

    def __init__(self, task: str, max_episode_steps: int = 500):
        check_tasks([task])
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

        self.name = task
        self.env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{task}-goal-observable"](seed=0)
        # Draw a fresh initial condition at every reset from the env's seeded generator.
        self.env._freeze_rand_vec = False
        self.env.seeded_rand_vec = True
        self.max_episode_steps = min(max_episode_steps, self.env.max_path_length)
        self.steps = 0

    @property
    def model(self):
        return self.env.model

    @property
    def data(self):
        return self.env.data

    def reset(self, seed: int) -> np.ndarray:
        """Reset to the initial condition named by ``seed``; returns the state, float32 (39,)."""
        import mujoco

        self.env.seed(int(seed))
        state, _ = self.env.reset()
        # MetaWorld moves the goal's site in the model but leaves the derived positions stale
        # until the first step: without this the reset frame shows the previous episode's goal
        # (reach-v3's red dot, the only place its goal is visible to a camera).
        mujoco.mj_forward(self.env.model, self.env.data)
        self.steps = 0
        return state.astype(np.float32)

    def step(self, action: np.ndarray) -> StepResult:
        """Apply one action (float32 (4,), in [-1, 1]) for one 12.5 ms control period."""
        state, reward, _, truncated, info = self.env.step(np.asarray(action, dtype=np.float32))
        self.steps += 1
        truncated = bool(truncated) or self.steps >= self.max_episode_steps
        return StepResult(state.astype(np.float32), float(reward), bool(info["success"]), truncated)


def expert_policy(task: str):
    """MetaWorld's scripted expert for ``task``: a callable state (39,) -> action (4,) in [-1, 1].

    The experts emit unclipped proportional-control actions; they are clipped to the action limits
    here, as a teleoperation device maps its input into the robot's command range.
    """
    check_tasks([task])
    import warnings

    import metaworld.policies as policies

    # The experts' gains exceed the action range on purpose; we clip below, so the warning is noise.
    warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")

    name = _EXPERT_EXCEPTIONS.get(task)
    if name is None:
        camel = re.sub(r"(?:^|-)([a-z0-9])", lambda m: m.group(1).upper(), task)
        name = f"Sawyer{camel}Policy"
    expert = getattr(policies, name)()

    def act(state: np.ndarray) -> np.ndarray:
        return np.clip(expert.get_action(np.asarray(state, dtype=np.float64)), -1, 1).astype(
            np.float32
        )

    return act
