"""Replay buffers: the ring (versions, interventions, overwrite), save/load, and symmetric
offline/online sampling proportions (RLPD 50/50, WSRL none offline)."""

from __future__ import annotations

import numpy as np
import pytest

from tether.policies.replay import MixedSampler, ReplayBuffer


def filled(n, capacity=100, version=0, reward=0.0, intervention=False):
    buf = ReplayBuffer(capacity, 3, 2)
    buf.add(np.arange(3 * n, dtype=np.float32).reshape(n, 3), np.zeros((n, 2)), np.full(n, reward),
            np.zeros((n, 3)), np.zeros(n), task=0, version=version, intervention=intervention)
    return buf


def test_ring_keeps_the_newest_rows_with_versions_and_flags(tmp_path):
    buf = ReplayBuffer(5, 3, 2)
    for v in range(4):  # 4 adds of 2: 8 transitions into 5 rows
        rows = buf.add(np.full((2, 3), v), np.zeros((2, 2)), [v, v], np.zeros((2, 3)), [0, 1], task=1,
                       version=v, intervention=[v == 3, False])
    assert len(buf) == 5 and buf.added == 8 and list(rows) == [1, 2]
    assert sorted(buf.version.tolist()) == [1, 2, 2, 3, 3]  # versions 0 and half of 1 overwritten
    assert buf.intervention.sum() == 1 and np.all(np.isneginf(buf.mc_return))
    buf.mc_return[rows] = [7.0, 8.0]
    back = ReplayBuffer.load(buf.save(tmp_path / "buf.npz"), capacity=10)
    assert len(back) == 5 and back.added == 8
    assert back.version.tolist()[:5] == [1, 2, 2, 3, 3]  # oldest first
    assert back.mc_return[3:5].tolist() == [7.0, 8.0]


def test_bad_shapes_and_empty_buffers_are_refused():
    buf = ReplayBuffer(5, 3, 2)
    with pytest.raises(ValueError, match="expected action"):
        buf.add(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(2), np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="reward has 3 rows"):
        buf.add(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros(3), np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="empty"):
        buf.sample(4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs offline data"):
        MixedSampler(buf, None, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        MixedSampler(buf, buf, 1.5)


def test_symmetric_sampling_proportions():
    online, offline = filled(50, reward=1.0), filled(30, reward=-1.0)
    rlpd = MixedSampler(online, offline, 0.5, seed=0)
    for n in (256, 7):
        batch = rlpd.sample(n)
        assert batch["offline"].sum() == round(n * 0.5)
        assert np.all(batch["reward"][batch["offline"]] == -1) and np.all(batch["reward"][~batch["offline"]] == 1)
    wsrl = MixedSampler(online, None, 0.0)
    assert not wsrl.sample(64)["offline"].any()
    # before the first online transition the offline data is all there is, and the reverse
    assert MixedSampler(ReplayBuffer(10, 3, 2), offline, 0.5).sample(16)["offline"].all()
    assert not MixedSampler(online, ReplayBuffer(10, 3, 2), 0.5).sample(16)["offline"].any()
    # uniform within each buffer
    batch = rlpd.sample(20_000)
    counts = np.bincount((batch["obs"][~batch["offline"], 0] / 3).astype(int), minlength=50)
    assert counts.min() > 100 and counts.max() < 300  # 10 000 draws of 50 rows: ~200 each
