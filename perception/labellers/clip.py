"""Preferences from CLIP image-text similarity (open_clip).

The image whose embedding has the higher cosine similarity to the task description's is taken
to better achieve the task, as in RL-VLM-F's CLIP-score baseline (Wang et al., ICML 2024,
https://arxiv.org/abs/2402.03681, after Rocamonde et al., "Vision-Language Models are Zero-Shot
Reward Models for Reinforcement Learning", 2023). Models and pretrained tags come from open_clip
(https://github.com/mlfoundations/open_clip); a pretrained tag downloads weights on first use,
``pretrained=None`` builds a randomly initialised model (tests).

torch and open_clip are imported only here and only when a labeller is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tether.perception.labellers.base import (
    FIRST, SECOND, UNSURE, LabelError, OnAnswer, PreferenceAnswer, PreferenceQuery, image_digest,
)


class ClipLabeller:
    """Label = which image is closer to the task text in CLIP space.

    Label: 0 when ``sim(first) - sim(second) > margin``, 1 when ``sim(second) - sim(first) >
    margin``, else -1 (cosine similarities in [-1, 1]).

    Args:
        model_name: an open_clip architecture, e.g. "ViT-B-32".
        pretrained: an open_clip pretrained tag (e.g. "openai", "laion2b_s34b_b79k"), or None
            for random weights.
        margin: smallest similarity difference that counts as a preference.
        device: torch device.
        batch_size: images encoded per forward pass.
        model, preprocess, tokenizer: a ready open_clip triple (model with ``encode_image`` /
            ``encode_text``, PIL-image transform, tokenizer); default: built from ``model_name``.

    Raises:
        ImportError: open_clip (the ``train`` extra) is not installed.
        LabelError: a negative margin or batch size < 1.
    """

    name = "clip"

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | None = "openai",
                 margin: float = 0.0, device: str = "cpu", batch_size: int = 32,
                 model: Any = None, preprocess: Any = None, tokenizer: Any = None):
        if margin < 0 or batch_size < 1:
            raise LabelError(f"clip margin must be >= 0 and batch_size >= 1, got {margin}, {batch_size}")
        import torch

        self._torch = torch
        if model is None:
            try:
                import open_clip
            except ImportError as e:
                raise ImportError("the clip labeller needs open_clip: pip install 'tether[train]'") from e
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=device)
            tokenizer = open_clip.get_tokenizer(model_name)
        if preprocess is None or tokenizer is None:
            raise LabelError("a ClipLabeller given a model also needs its preprocess and tokenizer")
        self.clip, self.preprocess, self.tokenizer = model.eval(), preprocess, tokenizer
        self.device, self.batch_size, self.margin = device, batch_size, margin
        self.model = f"clip:{model_name}:{pretrained}:margin={margin:g}"
        self._text: dict[str, Any] = {}

    def key_text(self, query: PreferenceQuery) -> str:
        return query.task

    def _text_embedding(self, task: str):
        if task not in self._text:
            with self._torch.no_grad():
                tokens = self.tokenizer([task]).to(self.device)
                e = self.clip.encode_text(tokens).float()
            self._text[task] = e / e.norm(dim=-1, keepdim=True)
        return self._text[task]

    def similarities(self, images: Sequence[np.ndarray], task: str) -> np.ndarray:
        """Cosine similarity of each uint8 [H, W, 3] image to ``task``: float [N] in [-1, 1]."""
        from PIL import Image

        text = self._text_embedding(task)
        out = []
        with self._torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                batch = self._torch.stack(
                    [self.preprocess(Image.fromarray(im)) for im in images[start:start + self.batch_size]]
                ).to(self.device)
                e = self.clip.encode_image(batch).float()
                e = e / e.norm(dim=-1, keepdim=True)
                out.append((e @ text.T)[:, 0].cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def label(self, queries: Sequence[PreferenceQuery], on_answer: OnAnswer | None = None
              ) -> list[PreferenceAnswer]:
        """One answer per query (0 / 1 / -1); each distinct image is encoded once per task."""
        answers: list[PreferenceAnswer] = []
        by_task: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            by_task.setdefault(q.task, []).append(i)
        result: dict[int, PreferenceAnswer] = {}
        for task, indices in by_task.items():
            unique: dict[str, int] = {}
            images: list[np.ndarray] = []
            slots = []
            for i in indices:
                pair = []
                for image in (queries[i].first, queries[i].second):
                    d = image_digest(image)
                    if d not in unique:
                        unique[d] = len(images)
                        images.append(image)
                    pair.append(unique[d])
                slots.append(pair)
            sims = self.similarities(images, task)
            for i, (a, b) in zip(indices, slots):
                diff = float(sims[a] - sims[b])
                label = FIRST if diff > self.margin else SECOND if -diff > self.margin else UNSURE
                result[i] = PreferenceAnswer(label, extra={"similarity": (float(sims[a]), float(sims[b]))})
        for i in range(len(queries)):
            answers.append(result[i])
            if on_answer is not None:
                on_answer(i, result[i])
        return answers
