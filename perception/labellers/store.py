"""A crash-safe, append-only store of preference labels on disk (sqlite3, standard library).

Key of a label: sha256 over both images' pixel digests (in order: swapping the images is another
question), the labeller's key text (the rendered prompt; for an oracle, the true values) and its
model string. A label is committed (``synchronous=FULL``, write-ahead log) the moment it
arrives, so a run killed at any point loses only answers still in flight, and the next run with
the same queries asks only for what is missing: no pair is paid for twice.

Answers without a result (a VLM's retries exhausted) are not stored; abstentions and
unparseable replies are (they were paid for, and asking again is not free either).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tether.perception.labellers.base import (
    UNSURE, Labeller, LabelError, PreferenceAnswer, PreferenceQuery, image_digest,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    key TEXT PRIMARY KEY,
    label INTEGER NOT NULL CHECK (label IN (-1, 0, 1)),
    labeller TEXT NOT NULL,
    model TEXT NOT NULL,
    image_first TEXT NOT NULL,
    image_second TEXT NOT NULL,
    prompt_sha256 TEXT NOT NULL,
    parse_failed INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    text TEXT,
    extra TEXT,
    created REAL NOT NULL
)
"""


@dataclass
class Prices:
    """Per-1000-token prices (any currency; USD on OpenAI's pricing page) for a cost estimate."""

    input_per_1k: float = 0.0
    output_per_1k: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1k + completion_tokens * self.output_per_1k) / 1000.0


@dataclass
class LabelReport:
    """What one :meth:`LabelStore.label` run did.

    Attributes:
        queries: queries asked.
        calls: queries sent to the labeller (not in the store).
        cache_hits: queries answered from the store (repeats within the batch included).
        failures: calls without an answer (retries exhausted); not stored, asked again next run.
        abstentions: -1 labels among the queries (stored ones included; failures excluded).
        parse_failures: unparseable replies among the queries (counted in ``abstentions`` too).
        first, second: labels 0 and 1 among the queries.
        requests: HTTP requests of this run's calls, retries included.
        prompt_tokens, completion_tokens: token usage of this run's calls.
        cost: estimated cost of this run's calls, or None without prices.
        accuracy: fraction of queries where labeller and oracle both prefer an image and agree,
            or None without oracle labels (or nothing to compare).
        compared: queries counted in ``accuracy``.
    """

    queries: int = 0
    calls: int = 0
    cache_hits: int = 0
    failures: int = 0
    abstentions: int = 0
    parse_failures: int = 0
    first: int = 0
    second: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    accuracy: float | None = None
    compared: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [
            f"{self.queries} pairs: {self.calls} labeller calls, {self.cache_hits} cache hits, "
            f"{self.failures} failed",
            f"labels: {self.first} first better, {self.second} second better, "
            f"{self.abstentions} unsure ({self.parse_failures} unparseable)",
        ]
        if self.requests or self.prompt_tokens or self.completion_tokens:
            cost = f", estimated cost {self.cost:.4f}" if self.cost is not None else ""
            lines.append(f"{self.requests} requests, {self.prompt_tokens} prompt + "
                         f"{self.completion_tokens} completion tokens{cost}")
        if self.accuracy is not None:
            lines.append(f"accuracy vs oracle: {self.accuracy:.3f} over {self.compared} pairs "
                         f"both prefer")
        return "\n".join(lines)


def label_accuracy(labels: np.ndarray, oracle: np.ndarray) -> tuple[float | None, int]:
    """(fraction of agreeing labels, count) over pairs where neither label is -1.

    Raises:
        LabelError: the arrays differ in length.
    """
    labels, oracle = np.asarray(labels), np.asarray(oracle)
    if labels.shape != oracle.shape:
        raise LabelError(f"{labels.shape[0]} labels but {oracle.shape[0]} oracle labels")
    both = (labels != UNSURE) & (oracle != UNSURE)
    n = int(both.sum())
    return (float((labels[both] == oracle[both]).mean()) if n else None), n


class LabelStore:
    """Labels on disk, keyed by (image digests, prompt, model); see the module docstring.

    Args:
        path: the sqlite file (created with its parent folder).
        prices: per-1k-token prices for :attr:`LabelReport.cost`.

    Raises:
        LabelError: ``path`` exists but is not a label store.
    """

    def __init__(self, path: Path | str, prices: Prices | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.prices = prices
        try:
            self._db = sqlite3.connect(self.path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
            self._db.commit()
        except sqlite3.DatabaseError as e:
            raise LabelError(f"{self.path} is not a label store: {e}") from e

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "LabelStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]

    @staticmethod
    def key(query: PreferenceQuery, labeller: Labeller) -> tuple[str, str, str, str]:
        """(key, first image digest, second image digest, prompt digest) of ``query``."""
        a, b = image_digest(query.first), image_digest(query.second)
        prompt = hashlib.sha256(labeller.key_text(query).encode()).hexdigest()
        key = hashlib.sha256("\n".join([a, b, prompt, labeller.model]).encode()).hexdigest()
        return key, a, b, prompt

    def get(self, key: str) -> PreferenceAnswer | None:
        """The stored answer under ``key``, or None."""
        row = self._db.execute(
            "SELECT label, text, parse_failed, prompt_tokens, completion_tokens, requests, extra "
            "FROM labels WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return PreferenceAnswer(row[0], text=row[1], parse_failed=bool(row[2]), prompt_tokens=row[3],
                                completion_tokens=row[4], requests=row[5],
                                extra=json.loads(row[6]) if row[6] else {})

    def put(self, key: tuple[str, str, str, str], labeller: Labeller, answer: PreferenceAnswer) -> None:
        """Commit one answer (to disk before returning). Answers with ``error`` are refused.

        Raises:
            LabelError: the answer has an error.
        """
        if answer.error is not None:
            raise LabelError(f"not storing a failed answer: {answer.error}")
        k, a, b, prompt = key
        with self._db:  # one transaction: committed (and fsynced) on exit
            self._db.execute(
                "INSERT OR REPLACE INTO labels VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (k, answer.label, labeller.name, labeller.model, a, b, prompt, int(answer.parse_failed),
                 answer.prompt_tokens, answer.completion_tokens, answer.requests, answer.text,
                 json.dumps(answer.extra, default=str) if answer.extra else None, time.time()),
            )

    def label(self, labeller: Labeller, queries: Sequence[PreferenceQuery],
              oracle: np.ndarray | Sequence[int] | None = None,
              on_progress: Callable[[int], None] | None = None,
              ) -> tuple[np.ndarray, LabelReport]:
        """Labels of ``queries``: from the store where present, else from ``labeller`` (each
        answer stored as it arrives).

        Args:
            labeller: any :class:`~tether.perception.labellers.base.Labeller`.
            queries: the pairs to label.
            oracle: optional int [N] true labels (0 / 1 / -1) for the report's accuracy.
            on_progress: called with how many of ``queries`` have an answer (or a failure), once
                for the stored ones and then as each answer arrives.

        Returns:
            (int8 [N] labels: 0 first better, 1 second better, -1 unsure or failed; the report).
            Failed queries (``report.failures``) are -1 here and absent from the store.

        Raises:
            whatever the labeller raises (e.g. VLMError); answers received before are kept.
        """
        report = LabelReport(queries=len(queries))
        keys = [self.key(q, labeller) for q in queries]
        answers: list[PreferenceAnswer | None] = [None] * len(queries)
        missing: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            stored = self.get(key[0])
            if stored is not None:
                answers[i] = stored
                report.cache_hits += 1
            elif key[0] in missing:  # the same question twice in one batch: ask once
                missing[key[0]].append(i)
                report.cache_hits += 1
            else:
                missing[key[0]] = [i]
        ask = [indices[0] for indices in missing.values()]
        report.calls = len(ask)
        done = [len(queries) - sum(len(indices) for indices in missing.values())]
        if on_progress is not None:
            on_progress(done[0])

        def on_answer(j: int, answer: PreferenceAnswer) -> None:
            i = ask[j]
            report.requests += answer.requests
            report.prompt_tokens += answer.prompt_tokens
            report.completion_tokens += answer.completion_tokens
            if answer.error is None:
                self.put(keys[i], labeller, answer)
            else:
                report.failures += 1
            for k in missing[keys[i][0]]:
                answers[k] = answer
            done[0] += len(missing[keys[i][0]])
            if on_progress is not None:
                on_progress(done[0])

        if ask:
            labeller.label([queries[i] for i in ask], on_answer=on_answer)
        labels = np.full(len(queries), UNSURE, np.int8)
        for i, answer in enumerate(answers):
            if answer is None or answer.error is not None:
                continue
            labels[i] = answer.label
            report.abstentions += answer.label == UNSURE
            report.parse_failures += answer.parse_failed
        report.first = int((labels == 0).sum())
        report.second = int((labels == 1).sum())
        if self.prices is not None:
            report.cost = self.prices.cost(report.prompt_tokens, report.completion_tokens)
        if oracle is not None:
            ok = np.array([a is not None and a.error is None for a in answers], bool)
            report.accuracy, report.compared = label_accuracy(labels[ok], np.asarray(oracle)[ok])
        return labels, report
