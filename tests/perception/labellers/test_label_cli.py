"""``tether label`` end to end on a small dataset written with DatasetWriter."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tether.launch.cli import main
from tether.launch.label import sample_pairs
from tether.robot.dataset import DatasetWriter
from tether.robot.spec import Feature, RobotSpec

SPEC = RobotSpec(
    "toy", 10.0,
    {"observation.state": Feature("float32", (2,), ("x", "y")),
     "observation.images.front": Feature("uint8", (16, 16, 3), unit="pixel")},
    Feature("float32", (2,), ("x", "y"), low=(-1, -1), high=(1, 1)),
)


def reward_dataset(root, lengths=(6, 7, 8)):
    """Episodes whose reward rises along the episode; the image's brightness encodes the frame."""
    writer = DatasetWriter(root, SPEC, fps=10)
    for i, n in enumerate(lengths):
        level = (20 + 25 * np.arange(n) + 3 * i)[:, None, None, None]
        writer.add_episode({
            "observation.state": np.zeros((n, 2), np.float32),
            "observation.images.front": np.broadcast_to(level, (n, 16, 16, 3)).astype(np.uint8),
            "action": np.zeros((n, 2), np.float32),
            "next.reward": (np.arange(n) + 0.1 * i).astype(np.float32),
        }, "reach")
    return root


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("TETHER_CACHE_DIR", str(tmp_path / "cache"))
    return reward_dataset(tmp_path / "ds")


def label(capsys, *args) -> dict:
    main(["label", *map(str, args), "--json"])
    return json.loads(capsys.readouterr().out)


def test_noisy_oracle_labels_written_and_second_run_makes_no_calls(dataset, capsys):
    first = label(capsys, dataset, "--labeller", "noisy-oracle", "--pairs", 40, "--flip-prob", 0.2)
    assert first["calls"] == 40 and first["cache_hits"] == 0 and first["task"] == "reach"
    table = pq.read_table(dataset / "labels" / "noisy-oracle.parquet")
    assert table.column_names == ["episode_first", "frame_first", "episode_second", "frame_second",
                                  "label", "labeller", "model", "task"]
    assert table.num_rows == 40 and set(table.column("label").to_pylist()) <= {0, 1, -1}
    assert 0.6 < first["accuracy"] < 0.95  # 20% flips
    again = label(capsys, dataset, "--labeller", "noisy-oracle", "--pairs", 40, "--flip-prob", 0.2)
    assert again["calls"] == 0 and again["cache_hits"] == 40 and again["accuracy"] == first["accuracy"]
    assert pq.read_table(dataset / "labels" / "noisy-oracle.parquet").equals(table)
    saved = json.loads((dataset / "labels" / "noisy-oracle.json").read_text())
    assert saved["config"]["flip_prob"] == 0.2 and saved["report"]["calls"] == 0


def test_vlm_labels_through_a_loopback_endpoint(dataset, capsys, fake_vlm, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake_vlm.faults.extend(["429", "500"])
    fake_vlm.retry_after = "0"
    args = [dataset, "--labeller", "vlm", "--pairs", 6, "--task", "reach the goal", "--base-url",
            fake_vlm.url, "--model", "fake-vlm", "--requests-per-minute", 0,
            "--price-input-per-1k", 0.5, "--price-output-per-1k", 1.5]
    result = label(capsys, *args)
    assert result["calls"] == 6 and result["requests"] == 14 and result["failures"] == 0
    assert result["cost"] == pytest.approx((12 * 100 * 0.5 + 12 * 10 * 1.5) / 1000)
    table = pq.read_table(dataset / "labels" / "vlm.parquet")
    assert table.column("label").to_pylist() == [1] * 6 and table.column("model")[0].as_py() == "vlm:fake-vlm"
    # the fake always answers "second": accuracy is the share of pairs whose second frame is ahead
    assert result["accuracy"] is not None and result["compared"] == 6
    n_requests = len(fake_vlm.requests)
    assert label(capsys, *args)["calls"] == 0 and len(fake_vlm.requests) == n_requests


def test_text_report_and_one_line_errors(dataset, capsys, tmp_path):
    main(["label", str(dataset), "--labeller", "oracle", "--pairs", "5"])
    out = capsys.readouterr().out
    assert "5 labeller calls, 0 cache hits" in out and "accuracy vs oracle: 1.000" in out
    assert "label (oracle)" in out and "100%" in out  # the progress line, in a log too
    for args, message in [
        (["--camera", "observation.images.side"], "no camera 'observation.images.side'"),
        (["--oracle-key", "progress"], "no column 'progress'"),
        (["--pairs", "100000"], "distinct frame pairs"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["label", str(dataset), "--labeller", "oracle", *args])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["label", str(tmp_path / "nope"), "--labeller", "oracle"])
    assert "is not a dataset" in capsys.readouterr().err


def test_sample_pairs_mix_distinct_and_extendable():
    lengths = [5, 8, 3, 10]
    pairs = sample_pairs(lengths, 200, 0.5, seed=3)
    assert len({(min((a, b), (c, d)), max((a, b), (c, d))) for a, b, c, d in pairs}) == 200
    same = pairs[:, 0] == pairs[:, 2]
    assert 0.35 < same.mean() < 0.65
    assert (pairs[same, 1] != pairs[same, 3]).all()
    assert all(f < lengths[e] for e, f in np.concatenate([pairs[:, :2], pairs[:, 2:]]))
    assert (sample_pairs(lengths, 250, 0.5, seed=3)[:200] == pairs).all()
    assert (sample_pairs([4], 6, 0.0, seed=0)[:, 0] == 0).all()  # one episode: same-episode only
