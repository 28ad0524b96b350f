"""The recorder on a real robot server: frames pair each observation with the action taken from
it, episodes land whole, and an interrupted episode is not written."""

import numpy as np

from tether.robot.client import RobotClient
from tether.robot.dataset import Dataset, DatasetWriter
from tether.robot.drivers.pointmass import PointMassRobot
from tether.robot.recorder import EpisodeAssembler, Recorder


def run_episode(client, seed, steps=None):
    state = client.reset("reach-origin", seed)
    while not state["done"] and (steps is None or state["step"] < steps):
        pos = state["observation"]["observation.state"][:2]
        client.send_action(np.clip(-3 * pos, -1, 1), state["seq"])
        state = client.latest_state()
    return state


def test_frames_pair_each_observation_with_the_action_taken_from_it(serve, tmp_path):
    robot = PointMassRobot(rate_hz=100.0, max_episode_steps=300)
    with serve(robot) as server:
        writer = DatasetWriter(tmp_path / "ds", robot.spec, fps=100)
        recorder = Recorder(server.address, writer).start()
        with RobotClient(server.address) as client:
            finals = [run_episode(client, seed) for seed in (0, 1)]
            run_episode(client, 2, steps=10)  # interrupted by the next reset: must not be written
            client.reset("reach-origin", 3)
        assert recorder.wait_for(3, timeout_s=10)
        stats = recorder.stop()
    assert stats.episodes_written == 2 and stats.episodes_dropped == 1 and stats.gaps == 0
    ds = Dataset(tmp_path / "ds")
    assert [e["length"] for e in ds.episodes] == [f["step"] for f in finals]
    alpha, dt = robot.alpha, robot.dt
    for i in range(2):
        ep = ds.episode(i)
        obs, act = ep["observation.state"], ep["action"]
        # Replaying the point mass from frame t with action t gives frame t + 1, exactly.
        vel = obs[:-1, 2:] + alpha * (act[:-1] - obs[:-1, 2:])
        np.testing.assert_allclose(obs[1:, 2:], vel, atol=1e-6)
        np.testing.assert_allclose(obs[1:, :2], obs[:-1, :2] + dt * vel, atol=1e-6)
        assert ep["next.success"][-1] and ep["next.done"][-1] and not ep["next.done"][:-1].any()


def test_recorder_refuses_a_dataset_for_another_robot(serve, tmp_path):
    import pytest

    from tether.robot.drivers.pointmass import pointmass_spec
    from tether.robot.spec import SpecMismatchError

    with serve(PointMassRobot(rate_hz=100.0)) as server:
        writer = DatasetWriter(tmp_path / "ds", pointmass_spec(50.0), fps=50)
        with pytest.raises(SpecMismatchError, match="control_rate_hz"):
            Recorder(server.address, writer)


def state(step, episode=0, done=False):
    return {"episode": episode, "step": step, "task": "t", "done": done, "success": done,
            "reward": 0.0, "action": None if step == 0 else np.full(2, step, np.float32),
            "observation": {"observation.state": np.full(4, step, np.float32)}}


def test_gap_in_the_stream_drops_the_episode():
    assembler = EpisodeAssembler()
    results = [assembler.handle(state(step, done=step == 5)) for step in (0, 1, 2, 4, 5)]
    assert results == [None] * 5
    assert assembler.stats.gaps == 1 and assembler.stats.episodes_dropped == 1


def test_assembler_joins_at_the_next_episode_and_ignores_idle_ticks():
    assembler = EpisodeAssembler()
    assert assembler.handle(state(7, episode=0)) is None  # joined mid-episode: skipped
    assert assembler.handle(state(0, episode=1)) is None
    assert assembler.handle(state(1, episode=1)) is None
    frames, task = assembler.handle(state(2, episode=1, done=True))
    assert assembler.handle(state(2, episode=1, done=True)) is None  # idle repeat
    assert task == "t" and frames["observation.state"][:, 0].tolist() == [0, 1]
    assert frames["action"][:, 0].tolist() == [1, 2]  # action of tick t+1 pairs with obs t
    assert frames["next.done"].tolist() == [False, True]
