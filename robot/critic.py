"""An exported critic on the robot (onnxruntime only), for value-guided sampling: a diffusion
policy's candidate actions ranked by Q.

IDQL (Hansen-Estruch, Kostrikov, Janner, Kuba, Levine, "IDQL: Implicit Q-Learning as an
Actor-Critic Method with Diffusion Policies", 2023) keeps the behaviour policy a diffusion model
and acts by drawing N candidate actions from it and choosing among them by an IQL critic.
tether takes the greedy choice (the candidate of highest min(Q1, Q2)), with the critic of a
goal-conditioned IQL (``tether train --algo gciql`` writes ``critic.onnx``) and a BESO policy
conditioned on the same ``observation.goal``: ``PolicyRunner(policy, critic=..., candidates=N)``,
``tether eval --critic critic.onnx --candidates N``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tether.robot.runner import PolicyLoadError, open_session
from tether.robot.spec import RobotSpec


class CriticRunner:
    """Q(s, g, a) of a ``critic.onnx`` (``tether.policies.gciql.export_gciql_critic``).

    Args:
        path: the critic file.

    Raises:
        PolicyLoadError: no such file, an empty file, one onnxruntime
            cannot load (``open_session``), or no ``tether.critic`` / ``tether.spec`` metadata
            (one line).
    """

    def __init__(self, path: Path | str):
        path = Path(path)
        self.session = open_session(path, "critic")
        meta = self.session.get_modelmeta().custom_metadata_map
        if "tether.critic" not in meta or "tether.spec" not in meta:
            raise PolicyLoadError(f"{path} is not a tether critic: its metadata lacks tether.critic "
                                  "(tether train --algo gciql writes critic.onnx)")
        self.path = path
        self.meta = json.loads(meta["tether.critic"])
        self.spec = RobotSpec.from_json(meta["tether.spec"])

    def check_policy(self, spec: RobotSpec, goal: dict) -> None:
        """Refuse a policy whose state, action or goal the critic was not trained on.

        Raises:
            PolicyLoadError: one line naming the first mismatch.
        """
        mine = self.spec.observation["observation.state"].shape
        theirs = spec.observation["observation.state"].shape
        problem = None
        if mine != theirs:
            problem = f"the critic reads a state of shape {list(mine)}, the policy {list(theirs)}"
        elif spec.action.shape != self.spec.action.shape:
            problem = f"the critic scores actions of shape {list(self.spec.action.shape)}, the policy gives {list(spec.action.shape)}"
        elif goal.get("kind") != "observation" or goal.get("key") != self.meta["goal"]["key"]:
            problem = (f"the critic is conditioned on {self.meta['goal']['key']}, the policy on a "
                       f"{goal.get('kind', 'task_one_hot').replace('_', ' ')} goal")
        if problem:
            raise PolicyLoadError(f"{self.path} cannot guide this policy: {problem}")

    def q(self, state: np.ndarray, goal: np.ndarray, action: np.ndarray) -> np.ndarray:
        """Q [K] of K (state [K, S], goal observation [K, S], action [K, A] in robot units)."""
        feed = {"obs": np.ascontiguousarray(state[:, None], np.float32),
                "goal": np.ascontiguousarray(goal, np.float32), "action": np.ascontiguousarray(action, np.float32)}
        return self.session.run(["q"], feed)[0]
