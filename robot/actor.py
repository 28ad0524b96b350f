"""The fine-tuning actor: the robot-side half of online RL (onnxruntime, numpy and pyzmq; no torch).

It runs a tether ONNX policy (``PolicyRunner``) on a robot server, streams every transition to the
learner (``tether.robot.learner_link``), and takes the new weights the learner sends:

* Exploration: a stochastic policy samples inside its graph (SAC's exploration policy: the runner
  feeds it standard-normal noise); a deterministic one gets Gaussian noise added here
  (``exploration_std``, a fraction of each action's half range), clipped to the action limits
  and passed through the robot's safety layer (``SafetyFilter.limit``: rate, velocity and
  workspace limits, from the last applied action), so the noisy action sent is the one the
  server applies. The server's safety layer applies to whatever is sent in any case.
* Transitions are what the robot did: the action a state reports as applied (after the safety
  layer, or the hold action on a tick without a command), its reward and next observation.
  ``terminal`` is success at an episode's end (tether's simulated robots end an episode there);
  every other end is a truncation (the learner bootstraps from it). Each transition carries the
  version of the weights that chose it, and whether a human intervened.
* Rewards: the robot's own (a simulator's), or a ``reward`` source computed here
  (``tether.perception.success_rewards``): a success classifier on every new frame (success ends the
  episode), or a VLM's verdict on the final frame (the episode's last transition is held back
  until it is in). ``terminal`` is then the source's success.
* Interventions: ``intervene(state)`` (a teleop device, ``tether.robot.teleop.intervention``) may
  return an action at any time; it is sent instead of the policy's and the transition is flagged
  (HIL-SERL demos, RLIF rewards).
* Evaluation: with ``eval_every`` K, one episode after every K training episodes runs the policy's
  mean action (zero noise, no exploration), as WSRL and RLPD measure success and the initial dip.
  Its transitions are not streamed (the learner trains on acting data only, and ``steps`` counts
  training transitions); its summary is, flagged ``eval``.
* New weights are checked when they arrive (a tether policy, whose spec fits the robot and task)
  and swapped in at a safe point: the next episode boundary, or every ``swap_every_steps`` steps
  if set. Weights that do not fit are refused and counted; the actor keeps its current ones.
* Faults: the actor never waits for the learner. When the learner is gone it keeps acting on its
  last weights, queueing transitions (up to ``queue_limit`` messages, then dropping and counting
  them); ZeroMQ reconnects when the learner returns, the next heartbeat tells it which weights
  the actor runs, and it answers with its current ones.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import zmq

from tether.robot import learner_link
from tether.robot.client import RobotClient
from tether.robot.runner import PolicyLoadError, PolicyRunner
from tether.robot.safety import SafetyFilter
from tether.robot.spec import RobotSpec, SpecError
from tether.robot.teleop.intervention import InterventionStop

log = logging.getLogger(__name__)


@dataclass
class ActorStats:
    """What the actor did. ``episodes``: list of dicts (success, return, length, interventions,
    version); ``refused``: reasons for refused weights."""

    steps: int = 0
    transitions_sent: int = 0
    messages_dropped: int = 0
    swaps: int = 0
    version: int = -1
    refused: list[str] = field(default_factory=list)
    episodes: list[dict] = field(default_factory=list)


class LearnerLink:
    """The actor's DEALER to the learner at ``address`` (see ``tether.robot.learner_link``).

    Args:
        address: the learner's ``tcp://HOST:PORT`` or ``ipc://PATH``.
        queue_limit: messages held while the learner is away (ZeroMQ's SNDHWM); beyond it new
            ones are dropped and counted, so the control loop never blocks.
    """

    def __init__(self, address: str, queue_limit: int = 1000):
        self.address = address
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, queue_limit)
        self.socket.setsockopt(zmq.RCVHWM, 4)
        self.socket.setsockopt(zmq.MAXMSGSIZE, learner_link.MAX_LINK_BYTES)
        self.socket.setsockopt(zmq.RECONNECT_IVL, 100)
        self.socket.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self.socket.connect(address)
        self._seq = 0
        self.dropped = 0

    def send(self, msg_type: str, **fields) -> bool:
        """Queue a message without blocking; False (and counted) when the queue is full."""
        self._seq += 1
        try:
            self.socket.send(learner_link.encode(msg_type, self._seq, **fields), zmq.NOBLOCK)
            return True
        except zmq.Again:
            self.dropped += 1
            return False

    def receive(self, timeout_s: float = 0.0) -> list[dict]:
        """Every valid message that arrived (waiting up to ``timeout_s`` for the first)."""
        out = []
        wait = int(timeout_s * 1000)
        while self.socket.poll(wait):
            wait = 0
            try:
                out.append(learner_link.decode(self.socket.recv()))
            except learner_link.LinkError as e:
                log.warning("dropped a bad message from the learner: %s", e)
        return out

    def close(self, linger_s: float = 1.0) -> None:
        """Close, giving queued messages ``linger_s`` to reach a learner that is there."""
        self.socket.close(linger=int(linger_s * 1000))


class Actor:
    """Run a policy on a robot server, stream transitions to a learner, take its new weights.

    Args:
        robot: address of the robot server. learner: address of the learner.
        out: folder for received weights (``weights/v{N}.onnx``).
        policy: initial ONNX policy; None waits for the learner's first weights.
        task: task of every episode (default: the policy's first).
        seed: first episode's reset seed (episode k uses seed + k); also the runner's noise.
        exploration_std: Gaussian noise for a deterministic policy, as a fraction of each
            action's half range (0: none; stochastic policies explore by themselves).
        swap_every_steps: also swap weights within an episode every this many steps (0: only at
            episode boundaries).
        eval_every: after every this many training episodes, one evaluation episode (mean action,
            not streamed; 0: none).
        send_every: transitions per message (and the episode's last ones at its end).
        heartbeat_s: period of ``actor_hello``.
        intervene: a teleop device: ``intervene(state) -> action or None``, called every step;
            one with ``bind(spec)`` (``TeleopIntervention``) is bound to the robot's spec first.
        reward: a reward source (``ClassifierReward``, ``VlmSuccessReward``); None: the robot's.
        name: shown to the learner.
        robot_keys: ``ClientKeys`` for a secured robot server.

    Raises (from :meth:`run`):
        tether.robot.client.RobotLinkError: the robot server is unreachable or refuses the policy.
        TimeoutError: no policy given and no weights from the learner within ``wait_s``.
        tether.robot.spec.SpecMismatchError: the initial policy does not fit the robot.
    """

    def __init__(self, robot: str, learner: str, out: Path | str, policy: Path | str | None = None,
                 task: str | None = None, seed: int = 0, exploration_std: float = 0.0,
                 swap_every_steps: int = 0, send_every: int = 50, heartbeat_s: float = 0.5,
                 intervene: Callable[[dict], np.ndarray | None] | None = None, name: str | None = None,
                 robot_keys=None, queue_limit: int = 1000, reward=None, eval_every: int = 0):
        if exploration_std < 0 or swap_every_steps < 0 or send_every < 1 or heartbeat_s <= 0 or eval_every < 0:
            raise ValueError("need exploration_std >= 0, swap_every_steps >= 0, send_every >= 1, heartbeat_s > 0, "
                             "eval_every >= 0")
        self.robot_address, self.out = robot, Path(out)
        self.link = LearnerLink(learner, queue_limit)
        self.task, self.seed = task, seed
        self.exploration_std, self.swap_every_steps = exploration_std, swap_every_steps
        self.send_every, self.heartbeat_s = send_every, heartbeat_s
        self.eval_every = eval_every
        self.intervene = intervene
        self.reward = reward
        self.name = name or f"actor-{os.getpid()}"
        self.robot_keys = robot_keys
        self.session = secrets.randbits(62)
        self.stats = ActorStats()
        self.runner: PolicyRunner | None = None
        self.learner_session = 0
        self._pending: tuple[PolicyRunner, int, int] | None = None  # (runner, version, learner session)
        self._robot_spec: RobotSpec | None = None
        self._safety: SafetyFilter | None = None
        self._last_hello = 0.0
        self._rng = np.random.default_rng(seed)
        if policy is not None:
            self.runner = PolicyRunner(policy, seed=seed)

    # ------------------------------------------------------------------------------ the learner
    def _hello(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_hello < self.heartbeat_s:
            return
        self._last_hello = now
        spec = self._robot_spec or (self.runner.spec if self.runner else None)
        # weights waiting for a safe point count as had: the learner need not send them again
        version, learner = (self._pending[1], self._pending[2]) if self._pending else (self.stats.version, self.learner_session)
        self.link.send("actor_hello", actor=self.name, session=self.session, version=version,
                       learner=learner, spec=spec.to_dict() if spec else {},
                       transitions=self.stats.transitions_sent)

    def poll_learner(self, timeout_s: float = 0.0) -> None:
        """Heartbeat if due, and take any weights that arrived (checked now, swapped later)."""
        self._hello()
        for msg in self.link.receive(timeout_s):
            if msg["type"] != "weights":
                continue
            newer = msg["session"] != self.learner_session or msg["version"] > self.stats.version
            pending_version = self._pending[1] if self._pending else None
            if not newer or msg["version"] == pending_version:
                continue
            self._accept(msg)

    def _accept(self, msg: dict) -> None:
        path = self.out / "weights" / f"v{msg['version']}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(msg["onnx"])
        tmp.replace(path)
        try:
            runner = PolicyRunner(path, seed=self.seed + msg["version"])
            if self._robot_spec is not None:
                self._robot_spec.check_policy(runner.spec, (self._task(runner),))
        except (PolicyLoadError, SpecError, ValueError) as e:
            reason = f"weights v{msg['version']} refused: {e}"
            log.warning(reason)
            self.stats.refused.append(reason)
            return
        self._pending = (runner, msg["version"], msg["session"])

    def _swap(self) -> bool:
        """Install pending weights (at a safe point). Returns whether it did."""
        if self._pending is None:
            return False
        self.runner, self.stats.version, self.learner_session = self._pending
        self._pending = None
        self.stats.swaps += 1
        log.info("running weights v%d", self.stats.version)
        return True

    def wait_for_weights(self, wait_s: float) -> None:
        """Block until the learner's first weights arrive (no initial policy).

        Raises:
            TimeoutError: none within ``wait_s``.
        """
        deadline = time.monotonic() + wait_s
        while self.runner is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no weights from the learner at {self.link.address} within {wait_s:.0f} s "
                                   "(is `tether finetune learner` running there?)")
            self._hello(force=True)
            self.poll_learner(0.2)
            self._swap()

    # -------------------------------------------------------------------------------- the robot
    def _task(self, runner: PolicyRunner) -> str | None:
        if self.task is not None:
            return self.task
        return runner.tasks[0] if runner.tasks else None

    def _explore(self, action: np.ndarray, state: dict) -> np.ndarray:
        """The policy's action with exploration noise, within the robot's safety limits as of
        ``state`` (the last applied action and observation)."""
        if self.exploration_std <= 0 or self.runner.meta.get("stochastic"):
            return action
        feature = self._robot_spec.action
        low = np.asarray(feature.low if feature.low else [-1.0] * len(action), np.float32)
        high = np.asarray(feature.high if feature.high else [1.0] * len(action), np.float32)
        noisy = action + self._rng.normal(0, self.exploration_std, action.shape) * (high - low) / 2
        noisy = np.clip(noisy, low, high).astype(np.float32)  # outside the limits the server rejects
        return self._safety.limit(noisy, state["action"], state["observation"])

    def _send(self, episode: int, task: str | None, chunk: list[tuple], end: dict | None) -> None:
        if not chunk and end is None:
            return
        obs, action, reward, next_obs, terminal, version, intervention = (list(c) for c in zip(*chunk)) if chunk \
            else ([], [], [], [], [], [], [])
        s, a = self._robot_spec.observation["observation.state"].shape[0], self._robot_spec.action.shape[0]
        sent = self.link.send(
            "transitions", actor=self.name, session=self.session, episode=episode, task=task,
            obs=np.asarray(obs, np.float32).reshape(-1, s), action=np.asarray(action, np.float32).reshape(-1, a),
            reward=np.asarray(reward, np.float32), next_obs=np.asarray(next_obs, np.float32).reshape(-1, s),
            terminal=np.asarray(terminal, bool), version=np.asarray(version, np.int64),
            intervention=np.asarray(intervention, bool), episode_end=end)
        if sent:
            self.stats.transitions_sent += len(chunk)

    def run_episode(self, client: RobotClient, episode: int, should_stop: Callable[[], bool] | None = None,
                    evaluate: bool = False) -> dict:
        """One episode: act on every state, stream its transitions; returns its summary.
        ``evaluate``: the mean action, nothing streamed but the summary (flagged ``eval``)."""
        runner = self.runner
        task = self._task(runner)
        seed = self.seed + episode
        runner.reset(task, seed=[seed, self.stats.version])
        state = client.reset(task, seed)
        chunk: list[tuple] = []
        total, interventions, length, last_step, since_swap = 0.0, 0, 0, 0, 0
        robot_success = False
        while not state["done"] and not (should_stop and should_stop()):
            human = self.intervene(state) if self.intervene is not None else None
            if human is not None:
                action = np.asarray(human, np.float32)
            elif evaluate:
                action = self.runner.act(state["observation"], deterministic=True)
            else:
                action = self._explore(self.runner.act(state["observation"]), state)
            client.send_action(action, state["seq"])
            self.poll_learner()
            queue = [client.next_state()]
            while client.pending():
                queue.append(client.next_state())
            for s in queue:
                if s["episode"] != state["episode"] or s["step"] <= last_step or s["action"] is None:
                    continue
                last_step = s["step"]
                flagged = human is not None and s["timing"].get("command_latency_s") is not None
                if self.reward is None:
                    reward, success = float(s["reward"]), bool(s["done"] and s["success"])
                else:
                    reward, success = self.reward.step(s["observation"])
                chunk.append((state["observation"]["observation.state"], s["action"], reward,
                              s["observation"]["observation.state"], success, self.stats.version, flagged))
                total += reward
                interventions += int(flagged)
                length += 1
                if not evaluate:
                    self.stats.steps += 1  # --steps counts training transitions
                robot_success = bool(s["success"])
                state = s
                if success and self.reward is not None:
                    break  # the reward source saw success: the episode ends here
            if queue[-1]["episode"] != state["episode"]:
                raise RuntimeError(f"episode {state['episode']} was ended by another client of the server")
            if chunk and chunk[-1][4] and self.reward is not None:
                break
            state = queue[-1]
            # an end-of-episode verdict rewrites the last transition: keep one back until then
            held = 1 if self.reward is not None else 0
            if len(chunk) >= self.send_every + held and not evaluate:
                self._send(episode, task, chunk[:len(chunk) - held], None)
                del chunk[:len(chunk) - held]
            since_swap += 1
            if self.swap_every_steps and since_swap >= self.swap_every_steps and self._swap():
                since_swap = 0  # a configured mid-episode safe point
        success = bool(state["success"])
        if self.reward is not None:
            success = bool(chunk and chunk[-1][4])
            verdict = self.reward.end(state["observation"], task) if chunk else None
            if verdict is not None:
                o, a, r, o2, _, v, f = chunk[-1]
                chunk[-1] = (o, a, float(verdict), o2, verdict, v, f)
                total += float(verdict) - r
                success = verdict
        end = {"success": success, "return": total, "length": length, "interventions": interventions,
               "version": self.stats.version}
        if self.reward is not None:
            end["robot_success"] = robot_success  # what the robot itself reported, for comparison
        if evaluate:
            end["eval"] = True
            chunk.clear()  # the summary only
        self._send(episode, task, chunk, end)
        chunk.clear()
        self.stats.episodes.append(end)
        return end

    def run(self, episodes: int | None = None, steps: int | None = None, stop=None, wait_s: float = 60.0,
            on_episode: Callable[[dict], None] | None = None) -> ActorStats:
        """Run episodes until ``episodes`` (evaluation episodes included) or ``steps`` (training
        transitions) are done or ``stop`` (a threading.Event) is set; swap weights between episodes.
        Returns the stats."""
        self.wait_for_weights(wait_s)
        if self.stats.version < 0:
            self.stats.version = 0  # the initial policy file; the learner's versions start at 1
        with RobotClient(self.robot_address, spec=self.runner.spec, name=self.name, keys=self.robot_keys) as client:
            self._robot_spec = client.spec
            self._safety = SafetyFilter(client.spec)
            self._robot_spec.check_policy(self.runner.spec, (self._task(self.runner),))
            if self.reward is not None:
                self.reward.check(self._robot_spec)
            if hasattr(self.intervene, "bind"):
                self.intervene.bind(self._robot_spec)
            self._hello(force=True)
            k, trained = 0, 0
            while (episodes is None or k < episodes) and (steps is None or self.stats.steps < steps):
                if stop is not None and stop.is_set():
                    break
                self.poll_learner()
                self._swap()  # the episode boundary: the safe point
                evaluate = self.eval_every > 0 and trained == self.eval_every
                trained = 0 if evaluate else trained + 1
                try:
                    end = self.run_episode(client, k, (lambda: stop.is_set()) if stop is not None else None, evaluate)
                except InterventionStop as e:
                    client.estop(str(e))  # the robot holds before the actor goes
                    log.warning("stopped by the operator: %s", e)
                    break
                if on_episode is not None:
                    on_episode(end)
                k += 1
        self.stats.messages_dropped = self.link.dropped
        return self.stats

    def close(self) -> None:
        self.link.close()
