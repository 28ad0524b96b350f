"""``tether dataset view --rerun --save FILE.rrd``: the recording read back with Rerun's own reader
(``rerun.chunk.RrdReader``) against the dataset it came from; and the view's bad input."""

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tether.launch.cli import main
from tether.robot.dataset import Dataset, DatasetWriter
from tether.robot.spec import Feature, RobotSpec

pytestmark = pytest.mark.realtime  # see tests/conftest.py: runs alone under pytest-xdist

SPEC = RobotSpec(
    "toy", 10.0,
    {"observation.state": Feature("float32", (3,), ("a", "b", "c"), "rad"),
     "observation.images.front": Feature("uint8", (16, 24, 3), unit="pixel"),
     "observation.images.wrist": Feature("uint8", (12, 16, 3), unit="pixel")},
    Feature("float32", (2,), ("x", "y"), "rad", low=(-1, -1), high=(1, 1)),
)
LENGTHS = (4, 5, 6)


def toy_dataset(root):
    """Three episodes with rewards, a success at the end of the last two, and cameras whose
    brightness counts the frames."""
    writer = DatasetWriter(root, SPEC, fps=10)
    for i, n in enumerate(LENGTHS):
        rng = np.random.default_rng(i)
        level = (30 + 20 * np.arange(n))[:, None, None, None]
        success = np.zeros(n, bool)
        success[-1] = i > 0
        writer.add_episode({
            "observation.state": rng.normal(size=(n, 3)).astype(np.float32),
            "observation.images.front": np.broadcast_to(level, (n, 16, 24, 3)).astype(np.uint8),
            "observation.images.wrist": np.broadcast_to(level + 10, (n, 12, 16, 3)).astype(np.uint8),
            "action": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
            "next.reward": rng.uniform(0, 1, n).astype(np.float32),
            "next.success": success,
        }, "pick" if i % 2 == 0 else "place")
    return root


def read_rrd(path: Path) -> dict[str, dict[str, list]]:
    """Entity path -> column -> values, over the non-static chunks of the file's recording, rows
    sorted by the ``frame`` (or ``tick``) timeline; one instance per row (checked), unwrapped; durations (the ``time`` timeline) in ns."""
    from rerun.chunk import RrdReader

    entities: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for chunk in RrdReader(path).stream().to_chunks():
        if chunk.is_static:
            continue
        batch = chunk.to_record_batch()
        for name in batch.schema.names:
            if name == "log_time" or name.startswith("rerun.controls"):
                continue  # wall-clock and row ids: not what tether logged
            column = batch.column(name)
            if pa.types.is_duration(column.type):
                column = column.cast(pa.int64())  # ns
            rows = column.to_pylist()
            if ":" in name:  # a component: each row is a batch of instances, here always one
                assert all(len(r) == 1 for r in rows), (chunk.entity_path, name)
                rows = [r[0] for r in rows]
            entities[chunk.entity_path][name] += rows
    for columns in entities.values():
        key = "frame" if "frame" in columns else "tick" if "tick" in columns else None
        if key is not None:
            order = np.argsort(columns[key], kind="stable")
            for name in list(columns):
                columns[name] = [columns[name][i] for i in order]
    return entities


@pytest.fixture
def rerun():
    return pytest.importorskip("rerun", reason="rerun-sdk is not installed (pip install 'tether[rerun]')")


def test_dataset_recording_holds_every_column_camera_and_episode(tmp_path, capsys, rerun):
    root = toy_dataset(tmp_path / "ds")
    rrd = tmp_path / "view" / "ds.rrd"
    main(["dataset", "view", str(root), "--save", str(rrd), "--jpeg-quality", "0"])
    assert f"wrote {rrd}: 3 episodes, 15 frames" in capsys.readouterr().out
    logged = read_rrd(rrd)
    ds = Dataset(root)
    data = ds.frames(["observation.state", "action", "next.reward", "next.success", "index"])
    assert sorted(logged) == sorted(
        ["/observation.state/a", "/observation.state/b", "/observation.state/c", "/action/x", "/action/y",
         "/next.reward", "/next.success", "/next.done", "/episode", "/episodes",
         "/cameras/observation.images.front", "/cameras/observation.images.wrist"])
    for key, names in (("observation.state", "abc"), ("action", "xy")):
        for j, name in enumerate(names):
            series = logged[f"/{key}/{name}"]
            assert series["frame"] == data["index"].tolist()  # the dataset's global index
            np.testing.assert_allclose(np.ravel(series["Scalars:scalars"]), data[key][:, j], rtol=1e-6)
    np.testing.assert_allclose(np.ravel(logged["/next.reward"]["Scalars:scalars"]), data["next.reward"], rtol=1e-6)
    assert np.ravel(logged["/next.success"]["Scalars:scalars"]).tolist() == data["next.success"].astype(float).tolist()
    # one timeline: the episodes end to end at 1 / fps, episode boundaries at their first frames
    times = np.asarray(logged["/action/x"]["time"]) / 1e9
    np.testing.assert_allclose(times, np.arange(15) / 10.0)
    assert np.ravel(logged["/episode"]["Scalars:scalars"]).tolist() == [0.0] * 4 + [1.0] * 5 + [2.0] * 6
    assert logged["/episodes"]["frame"] == [0, 4, 9]
    assert logged["/episodes"]["TextLog:text"] == [
        "episode 0: task 'pick', 4 frames, success False", "episode 1: task 'place', 5 frames, success True",
        "episode 2: task 'pick', 6 frames, success True"]
    # cameras decoded from the MP4s, as the dataset reader decodes them
    for key, (h, w) in (("observation.images.front", (16, 24)), ("observation.images.wrist", (12, 16))):
        camera = logged[f"/cameras/{key}"]
        assert camera["frame"] == list(range(15))
        decoded = np.concatenate([ds.video(key, i)[:, :h, :w] for i in range(3)])
        pixels = np.stack([np.asarray(b, np.uint8).reshape(h, w, 3) for b in camera["Image:buffer"]])
        np.testing.assert_array_equal(pixels, decoded)


def test_one_episode_jpeg_frames(tmp_path, capsys, rerun):
    import cv2

    root = toy_dataset(tmp_path / "ds")
    rrd = tmp_path / "one.rrd"
    main(["dataset", "view", str(root), "--rerun", "--episode", "2", "--save", str(rrd)])
    logged = read_rrd(rrd)
    assert logged["/action/x"]["frame"] == list(range(9, 15))
    assert logged["/episodes"]["TextLog:text"] == ["episode 2: task 'pick', 6 frames, success True"]
    blobs = logged["/cameras/observation.images.front"]["EncodedImage:blob"]
    assert len(blobs) == 6
    frames = [cv2.imdecode(np.asarray(b, np.uint8), cv2.IMREAD_COLOR) for b in blobs]
    levels = [float(f.mean()) for f in frames]  # 30, 50, ... through H.264 and JPEG
    np.testing.assert_allclose(levels, 30 + 20 * np.arange(6), atol=3)


def test_bad_view_arguments_are_one_line_errors(tmp_path, cli_error, rerun, monkeypatch):
    root = toy_dataset(tmp_path / "ds")
    rrd = tmp_path / "x.rrd"
    assert "episode 7 is out of range" in cli_error("dataset", "view", root, "--save", rrd, "--episode", 7)
    assert "not both" in cli_error("dataset", "view", root, "--save", rrd, "--episode", 1, "--episodes", 2)
    assert "--jpeg-quality must be 0" in cli_error("dataset", "view", root, "--save", rrd, "--jpeg-quality", 101)
    assert "--save FILE.rrd" in cli_error("dataset", "view", root, "--rerun", "--out", tmp_path / "o")
    assert "--episode goes with --rerun" in cli_error("dataset", "view", root, "--episode", 1)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    err = cli_error("dataset", "view", root, "--rerun")
    assert "no display for a Rerun viewer" in err and "--save FILE.rrd" in err
    assert not rrd.exists()


def test_missing_rerun_sdk_says_how_to_install(tmp_path, cli_error, monkeypatch):
    root = toy_dataset(tmp_path / "ds")
    monkeypatch.setitem(sys.modules, "rerun", None)  # as when rerun-sdk is not installed
    err = cli_error("dataset", "view", root, "--save", tmp_path / "x.rrd")
    assert "needs rerun-sdk" in err and "pip install 'tether[rerun]'" in err


# ------------------------------------------------------------------------------------- live view
def test_live_view_logs_joints_latency_and_safety_events(tmp_path, serve, rerun):
    from tether.launch.rerun_view import LiveView, open_recording
    from tether.robot.client import RobotClient
    from tether.robot.drivers.pointmass import TASK, PointMassRobot

    rrd = tmp_path / "live.rrd"
    sent: dict[int, np.ndarray] = {}
    measured: dict[int, np.ndarray] = {}
    with serve(PointMassRobot(rate_hz=100.0, max_episode_steps=10_000), watchdog_s=0.1) as server, \
            RobotClient(server.address) as client:
        view = LiveView(open_recording("test", rrd), client.spec)
        state = client.reset(TASK, 0)
        for k in range(30):
            action = np.array([0.5, -0.25 + 0.01 * k], np.float32)
            client.send_action(action, state["seq"])
            assert view.observe(state, action, latency_s=0.002)
            sent[state["seq"]] = action
            measured[state["seq"]] = state["observation"]["observation.state"]
            state = client.latest_state()
        client.estop("test")
        while not state["estop"]:
            state = client.next_state()
            view.observe(state)
        client.clear_estop()
        while state["estop"]:
            state = client.next_state()
            view.observe(state)
        for _ in range(30):  # 0.3 s without a command: the 0.1 s watchdog trips
            state = client.next_state()
            view.observe(state, events=("end_episode",) if _ == 0 else ())
        stats = view.close()
    assert stats.dropped == 0 and stats.logged == stats.offered
    logged = read_rrd(rrd)
    commanded = logged["/joints/vy/commanded"]
    assert commanded["tick"] == sorted(sent) and len(logged["/joints/vx/commanded"]["tick"]) == 30
    np.testing.assert_allclose(commanded["Scalars:scalars"], [sent[t][1] for t in sorted(sent)], rtol=1e-6)
    for j, name in enumerate(("x", "y", "vx", "vy")):
        series = logged[f"/joints/{name}/measured"]
        assert len(series["tick"]) == stats.offered
        by_tick = dict(zip(series["tick"], series["Scalars:scalars"]))
        np.testing.assert_allclose([by_tick[t] for t in sorted(measured)],
                                   [measured[t][j] for t in sorted(measured)], rtol=1e-6)
    assert logged["/policy/latency_ms"]["Scalars:scalars"] == [2.0] * 30
    assert max(logged["/safety/estop"]["Scalars:scalars"]) == 1.0 and logged["/safety/estop"]["Scalars:scalars"][-1] == 0.0
    assert 1.0 in logged["/safety/held"]["Scalars:scalars"]
    assert len(logged["/link/command_latency_ms"]["tick"]) >= 25  # the commands of the first phase
    events = logged["/events"]["TextLog:text"]
    levels = dict(zip(events, logged["/events"]["TextLog:level"]))
    for text, level in (("episode 0 started: task 'reach-origin'", "INFO"),
                        ("e-stop latched: the robot holds", "ERROR"), ("e-stop cleared", "INFO"),
                        ("watchdog: no valid command in time, the robot holds", "WARN"),
                        ("operator: end_episode", "INFO")):
        assert levels.get(text) == level, (text, events)
    order = [events.index(t) for t in ("e-stop latched: the robot holds", "e-stop cleared")]
    assert order == sorted(order)


def test_live_view_drops_when_full_and_never_waits(tmp_path, serve, rerun):
    """A view that cannot keep up (a queue of 2 against a tight loop) drops states rather than
    making the loop wait; what it kept is all in the recording."""
    from tether.launch.rerun_view import LiveView, open_recording
    from tether.robot.client import RobotClient
    from tether.robot.drivers.pointmass import PointMassRobot

    rrd = tmp_path / "full.rrd"
    with serve(PointMassRobot(rate_hz=100.0)) as server, RobotClient(server.address) as client:
        state = client.latest_state()
        view = LiveView(open_recording("test", rrd), client.spec, queue_size=2)
        costs = []
        for k in range(3000):
            s = {**state, "seq": state["seq"] + k}
            t0 = time.perf_counter()
            view.observe(s, np.zeros(2, np.float32))
            costs.append(time.perf_counter() - t0)
        stats = view.close()
    assert stats.offered == 3000 and stats.dropped > 0 and stats.logged + stats.dropped == 3000
    assert np.median(costs) < 1e-4  # a put on a queue, not a log call (~0.2 ms each)
    assert len(read_rrd(rrd)["/joints/vx/commanded"]["tick"]) == stats.logged


def test_a_state_the_view_cannot_log_stops_the_view_not_the_loop(tmp_path, serve, rerun, caplog):
    from tether.launch.rerun_view import LiveView, open_recording
    from tether.robot.client import RobotClient
    from tether.robot.drivers.pointmass import PointMassRobot

    with serve(PointMassRobot(rate_hz=100.0)) as server, RobotClient(server.address) as client:
        view = LiveView(open_recording("test", tmp_path / "bad.rrd"), client.spec, flush_s=0.01)
        state = client.latest_state()
        view.observe({**state, "timing": None})  # not a state message of the protocol
        deadline = time.monotonic() + 10
        while view.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert view.observe(client.latest_state())  # still queues, never raises
        stats = view.close(timeout_s=5)
    assert "AttributeError" in view.error and "Rerun view stopped logging" in caplog.text
    assert stats.logged == 0 and stats.dropped == stats.offered == 2


def test_live_view_bad_input(tmp_path, rerun, cli_error, monkeypatch):
    from tether.launch import UsageError
    from tether.launch.rerun_view import LiveView
    from tether.robot.drivers.pointmass import pointmass_spec

    with pytest.raises(UsageError, match="queue_size >= 1"):
        LiveView(None, pointmass_spec(), queue_size=0)
    assert "--rerun views a robot server" in cli_error("eval", tmp_path / "p.onnx", "--sim", "pointmass",
                                                       "--rerun-save", tmp_path / "x.rrd")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    err = cli_error("collect", tmp_path / "ds", "--tasks", "reach-v3", "--rerun")
    assert "no display" in err and "--rerun-save FILE.rrd" in err
    assert not (tmp_path / "ds").exists() or not any((tmp_path / "ds").rglob("*.parquet"))


# ------------------------------------------------------------------------ the verbs' --rerun-save
def test_collect_rerun_save_shows_the_cameras_and_the_expert(tmp_path, capsys, rerun):
    rrd = tmp_path / "collect.rrd"
    main(["collect", str(tmp_path / "ds"), "--tasks", "reach-v3", "--episodes", "1", "--image-size", "32",
          "--max-episode-steps", "25", "--rerun-save", str(rrd)])
    ds = Dataset(tmp_path / "ds")
    logged = read_rrd(rrd)
    camera = logged["/cameras/observation.images.corner"]
    n = len(camera["tick"])
    assert n == len(logged["/reward"]["tick"]) >= 12  # a frame with every state the expert saw
    assert all(len(b) == 32 * 32 * 3 for b in camera["Image:buffer"])
    assert np.std(camera["Image:buffer"][0]) > 1  # a rendered scene, not a blank frame
    # what the expert sent, from the state it saw (MetaWorld's scripted policies are functions of
    # the observation): the view pairs each command with its state
    from tether.sim.metaworld import expert_policy

    state_names = ds.features["observation.state"]["names"]
    measured = [dict(zip(logged[f"/joints/{name}/measured"]["tick"], logged[f"/joints/{name}/measured"]["Scalars:scalars"]))
                for name in state_names]
    expert = expert_policy("reach-v3")
    for j, name in enumerate(ds.features["action"]["names"]):
        series = logged[f"/joints/{name}/commanded"]
        assert len(series["tick"]) >= 12  # the expert acts on the newest state: a loaded machine skips some
        expected = [expert(np.array([m[t] for m in measured], np.float32))[j] for t in series["tick"]]
        np.testing.assert_allclose(series["Scalars:scalars"], expected, rtol=1e-4, atol=1e-5)
    assert logged["/events"]["TextLog:text"][0] == "episode 0 started: task 'reach-v3'"


def _linear_policy(path, spec, weights, noise_scale=0.0):
    """test_eval.linear_policy (a tether ONNX policy written straight as a graph), loaded by path:
    test modules are not a package here."""
    import importlib.util

    source = Path(__file__).with_name("test_eval.py")
    module_spec = importlib.util.spec_from_file_location("tether_test_eval", source)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.linear_policy(path, spec, weights, noise_scale)


def test_eval_rerun_save_logs_policy_latency_per_step(tmp_path, serve, capsys, rerun):
    from tether.robot.drivers.pointmass import PointMassRobot, pointmass_spec

    weights = np.zeros((4, 2))
    weights[0, 0] = weights[1, 1] = -2.0
    policy = _linear_policy(tmp_path / "p.onnx", pointmass_spec(50.0), weights)
    rrd = tmp_path / "eval.rrd"
    with serve(PointMassRobot(rate_hz=50.0, max_episode_steps=15), lockstep=True) as server:
        main(["eval", str(policy), "--robot", server.address, "--episodes", "2", "--out",
              str(tmp_path / "eval"), "--rerun-save", str(rrd)])
    results = json.loads((tmp_path / "eval" / "eval.json").read_text())
    logged = read_rrd(rrd)
    latency = np.asarray(logged["/policy/latency_ms"]["Scalars:scalars"])
    assert len(latency) == 2 * 15 and (latency > 0).all()
    np.testing.assert_allclose(np.median(latency), results["latency_ms"]["p50"], rtol=0.2)
    measured = np.asarray(logged["/joints/x/measured"]["Scalars:scalars"])
    commanded = np.asarray(logged["/joints/vx/commanded"]["Scalars:scalars"])
    # the policy's action is -2 x, clipped to [-1, 1], for every state it answered
    ticks = dict(zip(logged["/joints/x/measured"]["tick"], measured))
    expected = [np.clip(-2.0 * ticks[t], -1, 1) for t in logged["/joints/vx/commanded"]["tick"]]
    np.testing.assert_allclose(commanded, expected, rtol=1e-5, atol=1e-6)
    texts = logged["/events"]["TextLog:text"]
    assert [t for t in texts if t.startswith("episode")] == [
        "episode 0 started: task 'reach-origin'", f"episode 0 ended: success {results['per_episode'][0]['success']}",
        "episode 1 started: task 'reach-origin'", f"episode 1 ended: success {results['per_episode'][1]['success']}"]


def test_teleop_rerun_save_shows_the_operator_and_the_e_stop(serve, tmp_path, pipe_lines, rerun):
    import os
    import subprocess

    from tether.robot.drivers.pointmass import PointMassRobot

    rrd = tmp_path / "teleop.rrd"
    master, slave = os.openpty()
    with serve(PointMassRobot(rate_hz=50.0, max_episode_steps=100_000)) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether.launch.cli", "teleop", "--robot", server.address,
             "--device", "keyboard", "--rerun-save", str(rrd)],
            stdin=slave, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        os.close(slave)
        out = pipe_lines(proc.stderr)
        try:
            out.wait_for("episode 0 started")
            end = time.monotonic() + 0.5
            while time.monotonic() < end:  # a held key: the terminal's autorepeat
                os.write(master, b"w")
                time.sleep(0.03)
            os.write(master, b" ")  # e-stop
            out.wait_for("E-STOP")
            os.write(master, b"Q")
            assert proc.wait(30) == 0, "".join(out.lines)[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
            os.close(master)
    logged = read_rrd(rrd)
    assert max(logged["/joints/vx/commanded"]["Scalars:scalars"]) > 0.2  # w: +x
    assert max(logged["/joints/vx/measured"]["Scalars:scalars"]) > 0.1  # and the point mass moved
    texts = logged["/events"]["TextLog:text"]
    assert "operator: estop" in texts and "e-stop latched: the robot holds" in texts
    assert texts.index("operator: estop") < texts.index("e-stop latched: the robot holds")
    assert any(text.startswith("E-STOP: the robot holds") for text in texts)  # teleop's message
    estop = logged["/safety/estop"]["Scalars:scalars"]
    assert estop[0] == 0.0 and estop[-1] == 1.0


@pytest.mark.slow
def test_bench_loop_runs_with_and_without_the_view(tmp_path, rerun):
    """``tether bench loop --view both``: the same rate without, then with a live view (about 40 s:
    torch and ONNX export, two servers); what the view logged is in its recording."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "tether.launch.cli", "bench", "loop", "--rate", "200", "--duration", "2",
         "--baseline-duration", "0.5", "--view", "both", "--out", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    without, with_view = json.loads(proc.stdout)["rates"]
    assert without["view"] is None and with_view["view"] is not None
    for r in (without, with_view):
        assert r["ticks"] > 200 and 0 <= r["held_ticks"] <= r["ticks"]
    assert without["view_observe_us"] is None
    assert 0 < with_view["view_observe_us"]["p50"] < 1000 and with_view["view_observe_us"]["n"] > 200
    stats = with_view["view"]
    assert stats["logged"] > 0 and stats["logged"] + stats["dropped"] == stats["offered"]
    logged = read_rrd(tmp_path / "view_200_view.rrd")
    assert len(logged["/link/period_ms"]["tick"]) == stats["logged"]
    assert len(logged["/policy/latency_ms"]["tick"]) > 100


def test_the_robot_side_and_the_verbs_import_no_rerun():
    """Rerun is imported when a view is asked for, never by importing the robot side or a verb."""
    import subprocess

    code = ("import sys\n"
            "import tether.robot.server, tether.robot.client, tether.robot.recorder, tether.robot.dataset\n"
            "import tether.launch.cli, tether.launch.teleop, tether.launch.collect, tether.launch.eval\n"
            "import tether.launch.dataset, tether.launch.bench_loop, tether.launch.rerun_view\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rerun', 'rerun_bindings'))\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
