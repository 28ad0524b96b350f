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
            client.reset("reach-origin", 3)  # in progress when the recorder stops: not written
        assert recorder.wait_for(3, timeout_s=10)
        stats = recorder.stop()
    assert stats.episodes_written == 2 and stats.episodes_dropped == 2 and stats.gaps == 0
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


def events(assembler, states):
    return [e for s in states for e in assembler.handle(s)]


def test_gap_in_the_stream_drops_the_episode():
    assembler = EpisodeAssembler()
    got = events(assembler, [state(step, done=step == 5) for step in (0, 1, 2, 4, 5)])
    assert [e[0] for e in got] == ["begin", "frame", "drop"]
    assert assembler.stats.gaps == 1 and not assembler.recording


def test_assembler_joins_at_the_next_episode_and_ignores_idle_ticks():
    assembler = EpisodeAssembler()
    assert assembler.handle(state(7, episode=0)) == []  # joined mid-episode: skipped
    got = events(assembler, [state(0, episode=1), state(1, episode=1), state(2, episode=1, done=True)])
    assert assembler.handle(state(2, episode=1, done=True)) == []  # idle repeat
    assert [e[0] for e in got] == ["begin", "frame", "frame", "end"] and got[0][1] == "t"
    frames = [e[1] for e in got if e[0] == "frame"]
    assert [f["observation.state"][0] for f in frames] == [0, 1]
    assert [f["action"][0] for f in frames] == [1, 2]  # action of tick t+1 pairs with obs t
    assert [f["next.done"] for f in frames] == [False, True]


def test_operator_ends_or_discards_an_episode_and_its_later_ticks_are_ignored():
    assembler = EpisodeAssembler()
    events(assembler, [state(0), state(1), state(2)])
    ended = assembler.end_episode()
    assert [e[0] for e in ended] == ["frame", "end"] and ended[0][1]["next.done"]
    assert events(assembler, [state(3), state(4)]) == []  # same server episode: ignored
    got = events(assembler, [state(0, episode=1), state(1, episode=1)])
    assert [e[0] for e in got] == ["begin"]  # the first frame is held until the next one
    assert [e[0] for e in assembler.discard_episode()] == ["drop"]
    assert events(assembler, [state(2, episode=1)]) == []


def test_play_mode_splits_a_continuous_stream_into_fixed_length_episodes():
    assembler = EpisodeAssembler(play_frames=3)
    got = events(assembler, [state(step) for step in range(5, 11)])  # joins mid-stream
    kinds = [e[0] for e in got]
    assert kinds == ["begin", "frame", "frame", "frame", "end", "begin", "frame"]
    first = [e[1]["observation.state"][0] for e in got[1:4]]
    assert first == [5, 6, 7] and got[3][1]["next.done"]
    assert got[6][1]["observation.state"][0] == 8  # the next piece starts where the last ended
    got = events(assembler, [state(12)])  # a gap closes the piece and starts a new one
    assert [e[0] for e in got] == ["frame", "end", "begin"] and assembler.stats.gaps == 1
