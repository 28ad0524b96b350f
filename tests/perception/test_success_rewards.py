"""Robot-side rewards and interventions for online fine-tuning, end to end on the simulated arm
with a rendered camera over ZeroMQ: a success classifier (onnxruntime) ends episodes and rewards
them, a VLM (a real HTTP server on loopback) judges each episode's final frame, and a terminal
keyboard (a real pseudo-terminal) takes over and e-stops."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from tether.policies.calql import CalQl
from tether.policies.configs import CalQlConfig, SacConfig, SuccessClassifierConfig
from tether.policies.data import Normalizer
from tether.policies.export import export_policy
from tether.policies.success_classifier import SuccessClassifier, export_classifier
from tether.robot.actor import Actor
from tether.robot.drivers.arm import ArmRobot
from tether.perception.success_rewards import ClassifierReward, RewardSourceError, VlmSuccessReward, parse_yes_no
from tether.robot.spec import SpecError
from tether.robot.teleop import TeleopConfig
from tether.robot.teleop.config import KeyboardOptions
from tether.robot.teleop.intervention import TeleopIntervention
from tether.sim import arm

CAMERA = "observation.images.top"
STEPS = 12


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A random arm policy and a random success classifier on 32x32 top-camera frames."""
    root = tmp_path_factory.mktemp("success_rewards")
    torch.manual_seed(0)
    spec = arm.arm_spec(("reach",), "ee_delta", ("top",), 32)
    obs, act = spec.observation["observation.state"].shape[0], spec.action.shape[0]
    norm = Normalizer(np.zeros(obs), np.ones(obs), np.zeros(act), np.ones(act))
    model = CalQl(CalQlConfig(sac=SacConfig(hidden=(8,), critics=2), actions=act), obs, act, 1)
    policy = export_policy(model.actor, norm, spec, ["reach"], root / "policy.onnx")
    classifier = export_classifier(SuccessClassifier(SuccessClassifierConfig(channels=(4,), hidden=(4,))),
                                   root / "classifier.onnx", CAMERA, (32, 32, 3))
    return {"policy": policy, "classifier": classifier}


@pytest.fixture
def server(serve):
    with serve(ArmRobot(("reach",), cameras=("top",), image_size=32, max_episode_steps=STEPS), lockstep=True) as s:
        yield s


@pytest.fixture
def robot(server):
    return server.address


class Learner:
    """The learner side, recording what the actor streams (a ROUTER on loopback)."""

    def __init__(self):
        import threading

        import zmq

        from tether.launch.processes import free_tcp_address
        from tether.robot import learner_link

        self.address = free_tcp_address()
        self.socket = zmq.Context.instance().socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(self.address)
        self.chunks: list[dict] = []
        self.stop = threading.Event()

        def serve():
            while not self.stop.is_set():
                if self.socket.poll(20):
                    msg = learner_link.decode(self.socket.recv_multipart()[1])
                    if msg["type"] == "transitions":
                        self.chunks.append(msg)

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def episodes(self) -> dict[int, dict[str, np.ndarray]]:
        out: dict[int, dict[str, list]] = {}
        for c in self.chunks:
            e = out.setdefault(c["episode"], {"reward": [], "terminal": [], "intervention": []})
            for k in e:
                e[k].extend(np.asarray(c[k]).tolist())
        return {k: {n: np.array(v) for n, v in e.items()} for k, e in out.items()}

    def close(self):
        time.sleep(0.3)  # the last chunks are in flight
        self.stop.set()
        self.thread.join(5)
        self.socket.close()


def run_actor(robot, files, tmp_path, episodes=2, **kwargs):
    learner = Learner()
    actor = Actor(robot, learner.address, tmp_path / "actor", policy=files["policy"], send_every=4,
                  heartbeat_s=0.1, **kwargs)
    try:
        stats = actor.run(episodes=episodes)
    finally:
        actor.close()
        learner.close()
    return stats, learner.episodes()


def test_parse_yes_no():
    assert parse_yes_no("yes") is True and parse_yes_no("**No.**") is False
    assert parse_yes_no("Yes.\nThe drawer is open.") is True
    for unreadable in (None, "", "yes and no", "maybe", "yes\nno", "Yes, but the handle is loose"):
        assert parse_yes_no(unreadable) is None, unreadable


def test_classifier_reward_checks_its_file_and_the_robot_camera(files, tmp_path):
    with pytest.raises(RewardSourceError, match="not a tether success classifier"):
        ClassifierReward(files["policy"])
    with pytest.raises(FileNotFoundError, match="tether success-classifier"):
        ClassifierReward(tmp_path / "none.onnx")
    reward = ClassifierReward(files["classifier"])
    assert reward.camera == CAMERA and reward.threshold == 0.75
    with pytest.raises(SpecError, match="does not serve"):
        reward.check(arm.arm_spec(("reach",), "ee_delta", (), 32))
    with pytest.raises(SpecError, match=r"\(64, 64, 3\)"):
        reward.check(arm.arm_spec(("reach",), "ee_delta", ("top",), 64))
    with pytest.raises(RewardSourceError, match="no observation.images.top frame"):
        reward.step({"observation.state": np.zeros(17)})


def test_classifier_success_ends_and_rewards_the_episode(files, tmp_path, robot):
    # threshold 0: every frame is a success, so each episode is one rewarded, terminal step
    stats, sent = run_actor(robot, files, tmp_path / "a", reward=ClassifierReward(files["classifier"], threshold=0.0))
    assert [e["length"] for e in stats.episodes] == [1, 1]
    assert all(e["success"] and e["return"] == 1.0 for e in stats.episodes)
    assert all(list(ep["reward"]) == [1.0] and list(ep["terminal"]) == [True] for ep in sent.values())

    # above 1: never a success, episodes run to the robot's time limit unrewarded
    stats, sent = run_actor(robot, files, tmp_path / "b", reward=ClassifierReward(files["classifier"], threshold=1.5))
    assert [e["length"] for e in stats.episodes] == [STEPS, STEPS]
    assert not any(e["success"] for e in stats.episodes) and all("robot_success" in e for e in stats.episodes)
    assert all(len(ep["reward"]) == STEPS and not ep["reward"].any() and not ep["terminal"].any()
               for ep in sent.values())


def test_vlm_verdict_rewards_the_last_step(files, tmp_path, robot, fake_vlm):
    from tether.perception.labellers import VLMConfig

    config = VLMConfig(base_url=fake_vlm.url, model="fake-vlm", requests_per_minute=0, backoff_s=0.01, timeout_s=5)
    fake_vlm.faults.append("500")  # retried
    stats, sent = run_actor(robot, files, tmp_path / "a", reward=VlmSuccessReward(None, config))
    assert all(e["success"] and e["return"] == 1.0 and e["length"] == STEPS for e in stats.episodes)
    for ep in sent.values():  # one transition was held back for the verdict, then sent rewarded
        assert len(ep["reward"]) == STEPS and list(ep["reward"]).count(1.0) == 1 and ep["reward"][-1] == 1.0
        assert ep["terminal"][-1] and not ep["terminal"][:-1].any()
    asked = [p for _, _, p in fake_vlm.requests if isinstance(p["messages"][0]["content"], list)]
    assert len(asked) == 3 and "reach" in asked[-1]["messages"][0]["content"][0]["text"]
    assert asked[-1]["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")

    fake_vlm.success_reply = "I cannot tell."
    reward = VlmSuccessReward(CAMERA, config)
    stats, sent = run_actor(robot, files, tmp_path / "b", episodes=1, reward=reward)
    assert not stats.episodes[0]["success"] and not sent[0]["reward"].any() and reward.unreadable == 1


def test_keyboard_takes_over_and_its_estop_stops_the_actor(files, tmp_path, server, pty_pair):
    master, slave = pty_pair
    keys = KeyboardOptions(fd=slave, first_hold_s=5.0, repeat_hold_s=5.0)
    intervene = TeleopIntervention("keyboard", TeleopConfig(translation_scale=1.0, deadzone=0.0, keyboard=keys))
    os.write(master, b"tw")  # intervention on, +x held for the whole episode
    try:
        stats, sent = run_actor(server.address, files, tmp_path / "a", episodes=1, intervene=intervene)
    finally:
        intervene.close()
    assert stats.episodes[0]["interventions"] == STEPS and sent[0]["intervention"].all()
    assert intervene.active

    os.write(master, b" ")  # space: e-stop
    try:
        stats, _ = run_actor(server.address, files, tmp_path / "b", episodes=3, intervene=intervene)
    finally:
        intervene.close()
    assert len(stats.episodes) == 0 and server.stats.estops == 1
