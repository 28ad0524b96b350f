"""The fine-tuning actor: weights swapped only at episode boundaries (or a configured period),
every transition tagged with the version that chose it, weights that do not fit refused, the
learner crash fault (the actor keeps acting on its last weights and reconnects), and a restarted
actor served by a learner that kept its buffer."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import torch
import zmq

from tether.launch.processes import free_tcp_address, tether_command
from tether.policies.calql import CalQl
from tether.policies.configs import CalQlConfig, IqlConfig, OnlineConfig, SacConfig
from tether.policies.data import Normalizer
from tether.policies.export import export_policy
from tether.policies.offline import save_offline_policy
from tether.robot import learner_link
from tether.robot.actor import Actor
from tether.robot.drivers.pointmass import TASK, PointMassRobot, pointmass_spec

RATE = 50.0


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def robot(serve):
    with serve(PointMassRobot(rate_hz=RATE, max_episode_steps=30), lockstep=True) as server:
        yield server.address


NORMALIZER = Normalizer(np.zeros(4), np.ones(4), np.zeros(2), np.ones(2))


def policy(path, seed, rate=RATE):
    torch.manual_seed(seed)
    model = CalQl(CalQlConfig(sac=SacConfig(hidden=(8,), critics=2), actions=2), 4, 2, 1)
    return export_policy(model.actor, NORMALIZER, pointmass_spec(rate), [TASK], path)


def calql_checkpoint(path):
    cfg = CalQlConfig(sac=SacConfig(hidden=(16, 16), critics=2), actions=2)
    dims = {"obs_dim": 4, "action_dim": 2, "goal_dim": 1, "camera": None, "image_shape": None}
    return save_offline_policy(path, "calql", CalQl(cfg, 4, 2, 1), IqlConfig(), dims, NORMALIZER, [TASK],
                               pointmass_spec(RATE), cfg, {"column": "next.reward", "normalization": "none",
                                                           "shift": 0.0})


class FakeLearner:
    """A ROUTER that records transitions and sends ``plan[(episode)]`` weights when the first
    chunk of that episode arrives (mid-episode)."""

    def __init__(self, plan: dict[int, tuple[int, bytes]]):
        self.address = free_tcp_address()
        self.plan, self.chunks = dict(plan), []
        self.socket = zmq.Context.instance().socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(self.address)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop.is_set():
            if not self.socket.poll(20):
                continue
            identity, frame = self.socket.recv_multipart()
            msg = learner_link.decode(frame)
            if msg["type"] != "transitions":
                continue
            self.chunks.append(msg)
            if msg["episode"] in self.plan:
                version, onnx = self.plan.pop(msg["episode"])
                self.socket.send_multipart([identity, learner_link.encode(
                    "weights", version, session=7, version=version, onnx=onnx, updates=0)])

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.socket.close()


def versions_by_episode(chunks):
    out: dict[int, list[int]] = {}
    for c in chunks:
        out.setdefault(c["episode"], []).extend(c["version"].tolist())
    return out


def test_weights_swap_at_episode_boundaries_and_tag_transitions(tmp_path, robot):
    v0, v1 = policy(tmp_path / "v0.onnx", 0), policy(tmp_path / "v1.onnx", 1)
    wrong = policy(tmp_path / "wrong.onnx", 2, rate=2 * RATE)  # made for another control rate
    learner = FakeLearner({0: (1, v1.read_bytes()), 1: (2, wrong.read_bytes())})
    actor = Actor(robot, learner.address, tmp_path / "actor", policy=v0, send_every=5, heartbeat_s=0.1)
    try:
        stats = actor.run(episodes=3)
        time.sleep(0.3)
    finally:
        actor.close()
        learner.close()
    by_episode = versions_by_episode(learner.chunks)
    assert set(by_episode[0]) == {0}  # v1 arrived mid-episode 0: not used before its end
    assert set(by_episode[1]) == {1} and set(by_episode[2]) == {1}  # v2 does not fit: refused
    assert [e["version"] for e in stats.episodes] == [0, 1, 1] and stats.swaps == 1
    assert len(stats.refused) == 1 and "control_rate_hz" in stats.refused[0]
    assert sum(len(c["obs"]) for c in learner.chunks) == stats.steps == sum(e["length"] for e in stats.episodes)
    ends = [c["episode_end"] for c in learner.chunks if c["episode_end"] is not None]
    assert len(ends) == 3 and all(c["action"].shape[1] == 2 for c in learner.chunks)
    assert (tmp_path / "actor" / "weights" / "v1.onnx").exists()


def test_configured_period_swaps_inside_an_episode(tmp_path, robot):
    v0, v1 = policy(tmp_path / "v0.onnx", 0), policy(tmp_path / "v1.onnx", 1)
    learner = FakeLearner({0: (1, v1.read_bytes())})
    actor = Actor(robot, learner.address, tmp_path / "actor", policy=v0, send_every=4, swap_every_steps=10)
    try:
        actor.run(episodes=1)
        time.sleep(0.3)
    finally:
        actor.close()
        learner.close()
    tags = versions_by_episode(learner.chunks)[0]
    change = tags.index(1)
    assert 0 < change and set(tags[change:]) == {1} and change % 10 == 0


def start_learner(ckpt, address, out):
    args = ["finetune", "learner", str(ckpt), "--address", address, "--out", str(out),
            "--online.warmup-steps", "20", "--online.publish-every", "10", "--online.batch-size", "16",
            "--online.utd", "1"]
    return subprocess.Popen(tether_command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_learner_crash_actor_keeps_acting_then_reconnects(tmp_path, robot, wait_until):
    ckpt = calql_checkpoint(tmp_path / "ckpt.pt")
    address, out = free_tcp_address(), tmp_path / "learner"
    learner = start_learner(ckpt, address, out)
    actor = Actor(robot, address, tmp_path / "actor", send_every=5, heartbeat_s=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=actor.run, kwargs={"stop": stop, "wait_s": 60}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: actor.stats.version >= 2, 60, "trained weights (v2)")
        learner.send_signal(signal.SIGKILL)  # a crash: nothing saved on the way out
        learner.wait(10)
        version, steps = actor.stats.version, actor.stats.steps
        time.sleep(1.0)
        assert thread.is_alive() and actor.stats.steps > steps + 20  # acting on, learner gone
        assert actor.stats.version == version
        learner = start_learner(ckpt, address, out)  # resumes from out/learner.pt
        wait_until(lambda: actor.stats.version > version, 60, "weights from the restarted learner")
    finally:
        stop.set()
        thread.join(10)
        actor.close()
        if learner.poll() is None:
            learner.send_signal(signal.SIGINT)
            learner.wait(20)
    assert actor.stats.swaps >= 3


def test_restarted_actor_gets_weights_and_the_learner_keeps_its_buffer(tmp_path, robot, wait_until):
    from tether.policies.learner import Learner

    ckpt = calql_checkpoint(tmp_path / "ckpt.pt")
    address = free_tcp_address()
    learner = Learner(ckpt, OnlineConfig(warmup_steps=10_000, publish_every=10), address, tmp_path / "learner")
    stop = threading.Event()
    thread = threading.Thread(target=learner.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        first = Actor(robot, address, tmp_path / "a1", send_every=5, heartbeat_s=0.1)
        first.run(episodes=2, wait_s=60)
        first.close()  # the actor process is gone
        wait_until(lambda: learner.received == first.stats.steps, 10, "the first actor's transitions")
        second = Actor(robot, address, tmp_path / "a2", send_every=5, heartbeat_s=0.1)
        second.run(episodes=1, wait_s=30)
        second.close()
        wait_until(lambda: learner.received == first.stats.steps + second.stats.steps, 10, "all transitions")
    finally:
        stop.set()
        thread.join(30)
    assert second.stats.version == learner.version == 1  # got the current weights at once
    assert len(learner.online) == first.stats.steps + second.stats.steps  # nothing dropped
    assert len(learner.episodes) == 3


def test_exploration_noise_passes_the_robots_safety_layer(tmp_path):
    from dataclasses import replace

    from tether.policies.mlp import MlpPolicy
    from tether.robot.safety import SafetyFilter
    from tether.robot.spec import SafetySpec

    torch.manual_seed(0)
    path = export_policy(MlpPolicy(4, 2, 1), NORMALIZER, pointmass_spec(RATE), [TASK], tmp_path / "mlp.onnx")
    actor = Actor(free_tcp_address(), free_tcp_address(), tmp_path, policy=path, exploration_std=0.5)
    assert not actor.runner.meta.get("stochastic")
    # the robot bounds the change per tick to 0.05 and the speed to 1.5 m/s/s (0.03 per tick)
    actor._robot_spec = replace(pointmass_spec(RATE), safety=SafetySpec(max_delta_per_tick=(0.05, 0.05),
                                                                        max_velocity=(1.5, 1.5)))
    actor._safety = SafetyFilter(actor._robot_spec)
    last = np.array([0.2, -0.2], np.float32)
    state = {"action": last, "observation": {"observation.state": np.zeros(4, np.float32)}}
    steps = [actor._explore(np.zeros(2, np.float32), state) - last for _ in range(200)]
    assert np.abs(steps).max() <= 0.03 + 1e-6 and np.abs(steps).max() > 0.029  # noisy, within the limit
    assert actor._safety.counts["velocity_limited"] > 0
    actor.link.close()
