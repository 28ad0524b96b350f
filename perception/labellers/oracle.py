"""Oracle labellers for benchmarks: preferences from the true per-frame reward or progress.

``oracle`` answers perfectly from the true values (a simulator's dense reward, e.g. MetaWorld's,
recorded in a dataset's ``next.reward``); ``noisy-oracle`` adds the two kinds of teacher
imperfection of B-Pref (Lee et al., "B-Pref: Benchmarking Preference-Based Reinforcement
Learning", NeurIPS 2021 Datasets and Benchmarks, https://arxiv.org/abs/2111.03026): a *mistake*
(the label flipped with probability ``flip_prob``) and an abstention (-1 with probability
``abstain_prob``), which mimic a VLM that errs or is unsure.

Labels: 0 = the first image's true value is higher, 1 = the second's, -1 = within ``margin``
of each other (no difference) or an abstention.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from tether.perception.labellers.base import (
    FIRST, SECOND, UNSURE, LabelError, OnAnswer, PreferenceAnswer, PreferenceQuery, image_digest,
)


def oracle_labels(true_first: np.ndarray, true_second: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Noise-free labels from true values.

    Args:
        true_first, true_second: [N] true reward/progress of the first and second images.
        margin: differences with ``|a - b| <= margin`` are "no difference" (-1).

    Returns:
        int8 [N]: 0 where the first is higher, 1 where the second is, -1 for ties.

    Raises:
        LabelError: shapes differ, a value is NaN, or the margin is negative.
    """
    a = np.asarray(true_first, dtype=np.float64)
    b = np.asarray(true_second, dtype=np.float64)
    if a.shape != b.shape:
        raise LabelError(f"true values of the first and second images differ in shape: {a.shape} vs {b.shape}")
    if margin < 0:
        raise LabelError(f"oracle margin must be >= 0, got {margin}")
    if np.isnan(a).any() or np.isnan(b).any():
        raise LabelError("true values contain NaN")
    out = np.full(a.shape, UNSURE, np.int8)
    out[a - b > margin] = FIRST
    out[b - a > margin] = SECOND
    return out


def _truth(query: PreferenceQuery) -> tuple[float, float]:
    if not query.has_truth:
        raise LabelError("an oracle labeller needs true_first and true_second in every query "
                         "(the dataset has no reward or progress signal?)")
    return float(query.true_first), float(query.true_second)  # type: ignore[arg-type]


class OracleLabeller:
    """Perfect labels from the queries' true values (see the module docstring).

    Args:
        margin: true values closer than this are labelled -1.
    """

    name = "oracle"

    def __init__(self, margin: float = 0.0):
        if margin < 0:
            raise LabelError(f"oracle margin must be >= 0, got {margin}")
        self.margin = margin
        self.model = f"oracle:margin={margin:g}"

    def key_text(self, query: PreferenceQuery) -> str:
        a, b = _truth(query)
        return f"{query.task}\ntrue={a!r},{b!r}"

    def _clean(self, query: PreferenceQuery) -> int:
        a, b = _truth(query)
        return int(oracle_labels(np.array([a]), np.array([b]), self.margin)[0])

    def label(self, queries: Sequence[PreferenceQuery], on_answer: OnAnswer | None = None
              ) -> list[PreferenceAnswer]:
        """One answer per query (0 / 1 / -1); raises LabelError when true values are missing."""
        answers = []
        for i, q in enumerate(queries):
            answers.append(PreferenceAnswer(self._clean(q)))
            if on_answer is not None:
                on_answer(i, answers[-1])
        return answers


class NoisyOracleLabeller(OracleLabeller):
    """The oracle with B-Pref's mistakes and abstentions.

    Per query, with probability ``abstain_prob`` the answer is -1; otherwise the oracle's label,
    flipped (0 <-> 1) with probability ``flip_prob`` (ties stay -1). The random draws come from
    ``seed`` and the query's content (images, task, true values), not from call order, so a
    rerun, a resumed run or a different batching gives the same labels.

    Raises:
        LabelError: a probability outside [0, 1].
    """

    name = "noisy-oracle"

    def __init__(self, flip_prob: float = 0.1, abstain_prob: float = 0.0, seed: int = 0,
                 margin: float = 0.0):
        super().__init__(margin)
        for label, p in (("flip_prob", flip_prob), ("abstain_prob", abstain_prob)):
            if not 0.0 <= p <= 1.0:
                raise LabelError(f"{label} must be in [0, 1], got {p}")
        self.flip_prob, self.abstain_prob, self.seed = flip_prob, abstain_prob, seed
        self.model = (f"noisy-oracle:flip={flip_prob:g},abstain={abstain_prob:g},seed={seed},"
                      f"margin={margin:g}")

    def _draws(self, query: PreferenceQuery) -> np.ndarray:
        h = hashlib.sha256(f"{self.seed}\n{self.key_text(query)}\n{image_digest(query.first)}\n"
                           f"{image_digest(query.second)}".encode()).digest()
        return np.random.default_rng(int.from_bytes(h[:8], "little")).random(2)

    def label(self, queries: Sequence[PreferenceQuery], on_answer: OnAnswer | None = None
              ) -> list[PreferenceAnswer]:
        """One answer per query (0 / 1 / -1); raises LabelError when true values are missing."""
        answers = []
        for i, q in enumerate(queries):
            clean = self._clean(q)
            u_abstain, u_flip = self._draws(q)
            if u_abstain < self.abstain_prob:
                answer = PreferenceAnswer(UNSURE, extra={"abstained": True, "oracle": clean})
            elif clean != UNSURE and u_flip < self.flip_prob:
                answer = PreferenceAnswer(1 - clean, extra={"flipped": True, "oracle": clean})
            else:
                answer = PreferenceAnswer(clean, extra={"oracle": clean})
            answers.append(answer)
            if on_answer is not None:
                on_answer(i, answer)
        return answers
