"""Preference queries and answers, and the interface every labeller implements.

Label convention, the same everywhere in tether (RL-VLM-F, Wang et al., ICML 2024,
https://arxiv.org/abs/2402.03681):

* ``0`` (:data:`FIRST`): the first image better achieves the task,
* ``1`` (:data:`SECOND`): the second image better achieves the task,
* ``-1`` (:data:`UNSURE`): no difference, or the labeller is unsure (an abstention; a
  Bradley-Terry reward model skips these pairs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

FIRST = 0
"""Label: the first image better achieves the task."""
SECOND = 1
"""Label: the second image better achieves the task."""
UNSURE = -1
"""Label: no difference, or unsure (abstention)."""
LABELS = (FIRST, SECOND, UNSURE)


class LabelError(ValueError):
    """A preference query or labeller setting that cannot be used (wrong image shape, missing
    true values for an oracle, a probability outside [0, 1], ...)."""


def image_digest(image: np.ndarray) -> str:
    """sha256 (hex) of an image's pixels, dtype and shape: the image's part of a label-store key.

    Hashing decoded pixels rather than an encoded file makes the key independent of the PNG/JPEG
    encoder used to send the image.
    """
    array = np.ascontiguousarray(image)
    h = hashlib.sha256()
    h.update(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.tobytes())
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class PreferenceQuery:
    """Which of two images better achieves ``task``?

    Args:
        first: uint8 [H, W, 3] RGB image shown first ("Image 1").
        second: uint8 [H, W, 3] RGB image shown second ("Image 2"); may differ in size from
            ``first``.
        task: the task description in words, e.g. "open the drawer".
        true_first, true_second: the true reward or progress of each image where known (a
            simulator's dense reward); the oracle labellers need them, others ignore them.

    Raises:
        LabelError: an image that is not uint8 [H, W, 3], or an empty task.
    """

    first: np.ndarray
    second: np.ndarray
    task: str
    true_first: float | None = None
    true_second: float | None = None

    def __post_init__(self) -> None:
        for name in ("first", "second"):
            image = getattr(self, name)
            if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
                    or image.shape[2] != 3:
                got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
                raise LabelError(f"PreferenceQuery.{name} must be uint8 [H, W, 3] RGB, got {got}")
        if not self.task.strip():
            raise LabelError("PreferenceQuery.task is empty: a preference needs a task description")

    @property
    def has_truth(self) -> bool:
        """Both true values are known."""
        return self.true_first is not None and self.true_second is not None


@dataclass
class PreferenceAnswer:
    """A labeller's answer to one :class:`PreferenceQuery`.

    Attributes:
        label: 0 (first better), 1 (second better) or -1 (no difference / unsure).
        text: the model's raw reply (for a VLM: the analysis, then the label reply), or None.
        parse_failed: the reply could not be read as a label, so ``label`` is -1.
        error: set when no answer was obtained (retries exhausted); such answers are not stored,
            so a later run asks again.
        prompt_tokens, completion_tokens: token usage reported by the endpoint (0 if none).
        requests: HTTP requests made for this answer, retries included.
    """

    label: int
    text: str | None = None
    parse_failed: bool = False
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise LabelError(f"a preference label is 0, 1 or -1, got {self.label!r}")


OnAnswer = Callable[[int, PreferenceAnswer], None]
"""Called with (position of the query in the batch, its answer) as each answer arrives, so a
store can persist it at once (a crash loses at most the answers in flight)."""


@runtime_checkable
class Labeller(Protocol):
    """Anything that answers preference queries.

    Attributes:
        name: the labeller kind ("vlm", "clip", "oracle", "noisy-oracle").
        model: what answers, with every setting that changes answers (e.g. ``"vlm:gpt-4o"``,
            ``"noisy-oracle:flip=0.1,abstain=0.05,seed=0"``); part of the label-store key.
    """

    name: str
    model: str

    def key_text(self, query: PreferenceQuery) -> str:
        """Everything besides the two images and :attr:`model` that determines the answer (the
        rendered prompt; for an oracle, the true values): the rest of the label-store key."""
        ...

    def label(self, queries: Sequence[PreferenceQuery], on_answer: OnAnswer | None = None
              ) -> list[PreferenceAnswer]:
        """Answer ``queries``; returns one answer per query, in order (labels 0 / 1 / -1)."""
        ...
