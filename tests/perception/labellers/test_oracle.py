"""Oracle and noisy-oracle labellers: labels from true values, B-Pref flips and abstentions."""

from __future__ import annotations

import numpy as np
import pytest

from tether.perception.labellers import (
    LabelError, LabelStore, NoisyOracleLabeller, OracleLabeller, PreferenceQuery, oracle_labels,
)


def truth_queries(n: int, seed: int = 0) -> list[PreferenceQuery]:
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 10, (n, 2))
    blank = np.zeros((1, 1, 3), np.uint8)
    return [PreferenceQuery(blank, blank, "reach", float(a), float(b)) for a, b in values]


def test_oracle_labels_and_margin():
    assert oracle_labels([3.0, 1.0, 2.0], [1.0, 3.0, 2.05], margin=0.1).tolist() == [0, 1, -1]
    with pytest.raises(LabelError, match="shape"):
        oracle_labels([1.0], [1.0, 2.0])
    with pytest.raises(LabelError, match="true_first"):
        OracleLabeller().label([PreferenceQuery(np.zeros((2, 2, 3), np.uint8),
                                                np.zeros((2, 2, 3), np.uint8), "reach")])


def test_noisy_oracle_flip_and_abstain_rates():
    n, flip, abstain = 4000, 0.2, 0.1
    qs = truth_queries(n)
    clean = np.array([a.label for a in OracleLabeller().label(qs)])
    noisy = np.array([a.label for a in NoisyOracleLabeller(flip, abstain, seed=1).label(qs)])
    abstained = noisy == -1
    flipped = (noisy != clean) & ~abstained
    # binomial proportions within 4 standard deviations
    assert abs(abstained.mean() - abstain) < 4 * np.sqrt(abstain * (1 - abstain) / n)
    kept = (~abstained).sum()
    assert abs(flipped.sum() / kept - flip) < 4 * np.sqrt(flip * (1 - flip) / kept)


def test_noisy_oracle_is_reproducible_and_independent_of_batching():
    qs = truth_queries(50)
    noisy = NoisyOracleLabeller(0.3, 0.2, seed=5)
    whole = [a.label for a in noisy.label(qs)]
    pieces = [a.label for a in noisy.label(qs[:20])] + [a.label for a in noisy.label(qs[20:])]
    assert whole == pieces
    other = [a.label for a in NoisyOracleLabeller(0.3, 0.2, seed=6).label(qs)]
    assert other != whole


def test_noisy_oracle_settings_are_part_of_the_store_key(tmp_path):
    qs = truth_queries(10)
    with LabelStore(tmp_path / "s.sqlite") as store:
        _, first = store.label(NoisyOracleLabeller(0.1, seed=0), qs)
        _, same = store.label(NoisyOracleLabeller(0.1, seed=0), qs)
        _, other = store.label(NoisyOracleLabeller(0.2, seed=0), qs)
    assert first.calls == 10 and same.calls == 0 and other.calls == 10


def test_bad_probabilities():
    with pytest.raises(LabelError, match="flip_prob"):
        NoisyOracleLabeller(flip_prob=1.5)
    with pytest.raises(LabelError, match="abstain_prob"):
        NoisyOracleLabeller(abstain_prob=-0.1)


def test_query_checks_images_and_task():
    with pytest.raises(LabelError, match=r"uint8 \[H, W, 3\]"):
        PreferenceQuery(np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.uint8), "reach")
    with pytest.raises(LabelError, match="task"):
        PreferenceQuery(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8), " ")
