"""Bradley-Terry reward model: learns a synthetic preference (state and image), reports held-out
accuracy and Spearman rho, rejects labels that do not fit the dataset; relabelling writes a
declared column crash-safely and keeps next.reward."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tether.policies.configs import RewardModelConfig
from tether.policies.relabel import relabel
from tether.policies.reward_model import (
    BradleyTerryEnsemble, LabelFileError, fit_reward_model, load_reward_model, split_pairs,
)
from tether.policies.sampling import TrainingDataset
from tether.robot.dataset import Dataset, DatasetWriter
from tether.robot.dataset.columns import ColumnError, add_column, remove_column
from tether.robot.spec import Feature, RobotSpec

FIXTURE = Path(__file__).parents[1] / "fixtures" / "lerobot_v30"
SPEC = RobotSpec(
    "toy", 10.0,
    {"observation.state": Feature("float32", (3,), ("x", "y", "z")),
     "observation.images.front": Feature("uint8", (32, 32, 3), unit="pixel")},
    Feature("float32", (2,), ("x", "y"), low=(-1, -1), high=(1, 1)),
)


pytestmark = pytest.mark.usefixtures("one_thread")


def true_reward(state: np.ndarray) -> np.ndarray:
    """The hidden preference: closer to (0.5, -0.5) in x, y is better (z is a distractor)."""
    return -np.linalg.norm(state[..., :2] - np.array([0.5, -0.5]), axis=-1)


def preference_dataset(root: Path, episodes: int = 8, length: int = 25, seed: int = 0) -> Path:
    """Random-walk states; the image is brightest where the true reward is highest."""
    writer = DatasetWriter(root, SPEC, fps=10)
    rng = np.random.default_rng(seed)
    for _ in range(episodes):
        state = np.cumsum(rng.normal(0, 0.15, (length, 3)), 0) + rng.uniform(-1, 1, 3)
        r = true_reward(state)
        level = np.clip(255 * (1 + r / 3), 0, 255).astype(np.uint8)
        image = np.zeros((length, 32, 32, 3), np.uint8)
        image[:, 8:24, 8:24] = level[:, None, None, None]  # a square whose brightness is the reward
        writer.add_episode({
            "observation.state": state.astype(np.float32), "observation.images.front": image,
            "action": rng.uniform(-1, 1, (length, 2)).astype(np.float32),
            "next.reward": r.astype(np.float32),
        }, "reach")
    return root


def write_labels(root: Path, pairs: int = 300, seed: int = 1, unsure: float = 0.0, name: str = "oracle") -> Path:
    ds = Dataset(root)
    lengths = [e["length"] for e in ds.episodes]
    truth = [true_reward(ds.episode(i, ["observation.state"])["observation.state"]) for i in range(len(ds))]
    rng = np.random.default_rng(seed)
    ea, eb = rng.integers(0, len(ds), pairs), rng.integers(0, len(ds), pairs)
    fa = np.array([rng.integers(lengths[e]) for e in ea])
    fb = np.array([rng.integers(lengths[e]) for e in eb])
    label = np.array([int(truth[b][j] > truth[a][i]) for a, i, b, j in zip(ea, fa, eb, fb)], np.int8)
    label[rng.random(pairs) < unsure] = -1
    path = root / "labels" / f"{name}.parquet"
    path.parent.mkdir(exist_ok=True)
    pq.write_table(pa.table({
        "episode_first": ea, "frame_first": fa, "episode_second": eb, "frame_second": fb,
        "label": pa.array(label, pa.int8()), "labeller": ["oracle"] * pairs, "model": ["truth"] * pairs,
        "task": ["reach"] * pairs}), path)
    return path


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("TETHER_CACHE_DIR", str(tmp_path / "cache"))
    return preference_dataset(tmp_path / "ds")


def test_state_model_learns_the_preference(dataset, tmp_path):
    labels = write_labels(dataset, unsure=0.1)
    cfg = RewardModelConfig(hidden=(64, 64), steps=300, lr=3e-3)
    result = fit_reward_model(dataset, labels, cfg, tmp_path / "rm")
    r = result.report
    assert r["pairs"] == 300 and r["unsure"] > 10 and r["unsure_policy"] == "skip"
    assert r["train_pairs"] + r["val_pairs"] == 300 - r["unsure"]
    assert r["val_accuracy"] > 0.9 and min(r["val_accuracy_members"]) > 0.85
    assert r["spearman"]["column"] == "next.reward" and r["spearman"]["rho"] > 0.9
    assert len(r["val_accuracy_members"]) == 3
    for name in ("reward_model.pt", "report.json", "report.png", "learning_curve.png"):
        assert (tmp_path / "rm" / name).stat().st_size > 100
    model, camera = load_reward_model(tmp_path / "rm" / "reward_model.pt")
    x = torch.tensor(Dataset(dataset).episode(0, ["observation.state"])["observation.state"])
    torch.testing.assert_close(model.reward(x), result.model.reward(x))
    assert camera is None


def test_noisy_labels_are_scored_against_the_true_reward(dataset, tmp_path):
    labels = write_labels(dataset, pairs=400)
    table = pq.read_table(labels)
    label = table.column("label").to_numpy().copy()
    flipped = np.random.default_rng(0).random(len(label)) < 0.25
    label[flipped] = 1 - label[flipped]
    pq.write_table(table.set_column(table.column_names.index("label"), "label", pa.array(label, pa.int8())), labels)
    cfg = RewardModelConfig(hidden=(64, 64), steps=300, lr=3e-3)
    r = fit_reward_model(dataset, labels, cfg, tmp_path / "rm").report
    # the noisy labels of the held-out pairs are right ~75% of the time; the model, fitted through
    # the noise, orders those pairs as the true reward does far more often than that
    assert 0.6 < r["val_label_accuracy_true"] < 0.9
    assert r["val_accuracy"] < 0.9
    assert r["val_accuracy_true"] > 0.85 and r["val_accuracy_true"] > r["val_label_accuracy_true"] + 0.05


def test_image_model_learns_the_preference(dataset, tmp_path):
    labels = write_labels(dataset, pairs=200)
    cfg = RewardModelConfig(input="image", hidden=(32,), channels=(8, 16), steps=150, lr=3e-3, batch_size=32)
    r = fit_reward_model(dataset, labels, cfg, tmp_path / "rm").report
    assert r["camera"] == "observation.images.front"
    assert r["val_accuracy"] > 0.85 and r["spearman"]["rho"] > 0.8


def test_bradley_terry_loss_is_the_cross_entropy_of_the_reward_difference():
    torch.manual_seed(0)
    model = BradleyTerryEnsemble(RewardModelConfig(ensemble=2, hidden=(8,)), obs_dim=3)
    first, second = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    target = torch.tensor([[1.0, 0.0, 0.5, 1.0, 0.0]] * 2)
    want = []
    for k, m in enumerate(model.members):
        p = torch.sigmoid(m(second[k]) - m(first[k]))  # P(second preferred)
        want.append(-(target[k] * p.log() + (1 - target[k]) * (1 - p).log()).mean())
    torch.testing.assert_close(model.loss(first, second, target), torch.stack(want).mean())


def test_unsure_labels_skipped_or_halved():
    label = np.array([0, 1, -1, -1, 1, 0, 1, 0, 1, 1], np.int8)
    train, val = split_pairs(label, RewardModelConfig(val_fraction=0.25))
    assert len(train) + len(val) == 8 and not set(np.flatnonzero(label == -1)) & (set(train) | set(val))
    train, val = split_pairs(label, RewardModelConfig(unsure="half", val_fraction=0.2))
    assert len(train) + len(val) == 10 and len(val) == 2
    with pytest.raises(LabelFileError, match="only 1 usable labelled pairs"):
        split_pairs(np.array([1, -1, -1], np.int8), RewardModelConfig())


def test_labels_that_do_not_fit_the_dataset_are_precise_errors(dataset):
    labels = write_labels(dataset, pairs=20)
    table = pq.read_table(labels)
    frames = table.column("frame_second").to_numpy().copy()
    frames[3] = 25  # episodes have 25 frames: 0..24
    pq.write_table(table.set_column(3, "frame_second", pa.array(frames)), labels)
    with pytest.raises(LabelFileError, match=r"1 second frames are not in .* row 3: episode \d+ frame 25"):
        fit_reward_model(dataset, labels, RewardModelConfig(steps=1))
    pq.write_table(table.drop_columns(["label"]), labels)
    with pytest.raises(LabelFileError, match=r"lacks columns \['label'\]"):
        fit_reward_model(dataset, labels, RewardModelConfig(steps=1))
    pq.write_table(table.set_column(4, "label", pa.array([2] * 20, pa.int8())), labels)
    with pytest.raises(LabelFileError, match="labels must be 0, 1 or -1; row 0 has 2"):
        fit_reward_model(dataset, labels, RewardModelConfig(steps=1))
    with pytest.raises(FileNotFoundError, match="no label file"):
        fit_reward_model(dataset, dataset / "labels" / "nope.parquet", RewardModelConfig(steps=1))


def declared_columns_match_files(root: Path) -> None:
    """What LeRobot's loader needs: every data file holds exactly the declared non-video features
    (it passes them to ``datasets`` as the schema), with float32 for the relabelled ones."""
    ds = Dataset(root)
    declared = {k for k, f in ds.features.items() if f["dtype"] != "video"}
    for path in {ds._data_file(e) for e in ds.episodes}:
        schema = pq.read_schema(path)
        assert set(schema.names) == declared, path
        for k in declared:
            if k.startswith("reward."):
                assert schema.field(k).type == pa.float32()


def test_relabel_round_trip_keeps_next_reward(dataset, tmp_path):
    before = Dataset(dataset).frames(["next.reward"])["next.reward"]
    model = BradleyTerryEnsemble(RewardModelConfig(hidden=(8,)), obs_dim=3).eval()
    ds, column = relabel(dataset, model, "oracle")
    assert column == "reward.oracle" and ds.features[column] == {"dtype": "float32", "shape": [1], "names": None}
    states = ds.frames(["observation.state"])["observation.state"]
    with torch.no_grad():
        want = model.reward(torch.from_numpy(states)).numpy()
    frames = ds.frames([column, "next.reward"])
    np.testing.assert_allclose(frames[column], want, rtol=1e-6)
    np.testing.assert_array_equal(frames["next.reward"], before)
    stats = json.loads((dataset / "meta" / "stats.json").read_text())[column]
    assert stats["count"] == [len(want)] and np.isclose(stats["mean"][0], want.mean(), atol=1e-5)
    assert np.isclose(ds.episode_stats(2)[column]["max"][0], want[50:75].max())
    declared_columns_match_files(dataset)
    sample = TrainingDataset(dataset, keys=[column]).sample(4, np.random.default_rng(0))
    assert sample[column].shape == (4,)
    # again, with another model: replaced, not duplicated
    other = BradleyTerryEnsemble(RewardModelConfig(hidden=(8,)), obs_dim=3).eval()
    ds, _ = relabel(dataset, other, "reward.oracle")
    with torch.no_grad():
        np.testing.assert_allclose(ds.frames([column])[column], other.reward(torch.from_numpy(states)).numpy(), rtol=1e-6)
    declared_columns_match_files(dataset)
    remove_column(dataset, column)
    assert column not in Dataset(dataset).features and column not in json.loads(
        (dataset / "meta" / "stats.json").read_text())
    declared_columns_match_files(dataset)


def test_a_crash_between_files_leaves_a_readable_dataset(dataset):
    ds = Dataset(dataset)
    values = [np.full(e["length"], i, np.float32) for i, e in enumerate(ds.episodes)]
    written = []

    def crash_after_three(path):
        written.append(path)
        if len(written) == 3:
            raise KeyboardInterrupt  # as a Ctrl-C mid-run; a real exception, not a mock

    with pytest.raises(KeyboardInterrupt):
        add_column(dataset, "reward.x", values, after_file=crash_after_three)
    ds = Dataset(dataset)
    assert "reward.x" not in ds.features  # info.json, the commit point, was never written
    frames = TrainingDataset(dataset).sample(8, np.random.default_rng(0))  # every declared column
    assert frames["action"].shape == (8, 2)
    assert len(ds.frames(["next.reward"])["next.reward"]) == 200
    # running again completes it
    ds = add_column(dataset, "reward.x", values)
    np.testing.assert_array_equal(ds.frames(["reward.x"])["reward.x"], np.repeat(np.arange(8), 25))
    declared_columns_match_files(dataset)
    # a crash while replacing: still declared, each file old or new, all readable
    written.clear()
    with pytest.raises(KeyboardInterrupt):
        add_column(dataset, "reward.x", [v + 100 for v in values], after_file=crash_after_three)
    got = Dataset(dataset).frames(["reward.x"])["reward.x"].reshape(8, 25)[:, 0]
    assert list(got) == [100, 101, 102, 3, 4, 5, 6, 7]


def test_add_column_on_lerobot_packed_file(tmp_path):
    root = shutil.copytree(FIXTURE, tmp_path / "lerobot")
    ds = Dataset(root)
    values = {int(e["episode_index"]): np.arange(e["length"], dtype=np.float32) + 100 * i
              for i, e in enumerate(ds.episodes)}
    ds = add_column(root, "reward.count", values)
    for i, e in enumerate(ds.episodes):
        np.testing.assert_array_equal(ds.episode(i, ["reward.count"])["reward.count"], values[int(e["episode_index"])])
    declared_columns_match_files(root)


def test_add_column_refuses_recorded_names_and_bad_values(dataset):
    lengths = [e["length"] for e in Dataset(dataset).episodes]
    ok = [np.zeros(n) for n in lengths]
    with pytest.raises(ColumnError, match="'next.reward' is a recorded column"):
        add_column(dataset, "next.reward", ok)
    with pytest.raises(ColumnError, match="7 episodes of values for the 8 episodes"):
        add_column(dataset, "reward.x", ok[:7])
    with pytest.raises(ColumnError, match=r"episode 2: values of shape \(24,\), expected \(25,\)"):
        add_column(dataset, "reward.x", ok[:2] + [np.zeros(24)] + ok[3:])
    with pytest.raises(ColumnError, match="NaN"):
        add_column(dataset, "reward.x", [np.full(n, np.nan) for n in lengths])
    add_column(dataset, "reward.x", ok)
    with pytest.raises(ColumnError, match="already has a column 'reward.x'"):
        add_column(dataset, "reward.x", ok, overwrite=False)
