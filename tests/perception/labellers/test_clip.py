"""CLIP labeller: preference from image-text cosine similarity, with a margin for "unsure"."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tether.perception.labellers import PreferenceQuery

torch = pytest.importorskip("torch")


class BrightnessClip(torch.nn.Module):
    """A stand-in CLIP whose image embedding points towards the text as the image gets brighter."""

    def encode_image(self, images):
        b = images.mean(dim=(1, 2, 3))
        return torch.stack([b, 1 - b], dim=1)

    def encode_text(self, tokens):
        return torch.tensor([[1.0, 0.0]]).repeat(len(tokens), 1)


def preprocess(pil_image):
    return torch.from_numpy(np.asarray(pil_image, np.float32) / 255.0).permute(2, 0, 1)


def tokenizer(texts):
    return torch.zeros(len(texts), 4, dtype=torch.long)


def gray(level: int) -> np.ndarray:
    return np.full((6, 6, 3), level, np.uint8)


def test_brighter_image_is_preferred_and_close_calls_are_unsure():
    from tether.perception.labellers.clip import ClipLabeller

    clip = ClipLabeller(margin=0.01, model=BrightnessClip(), preprocess=preprocess, tokenizer=tokenizer)
    qs = [PreferenceQuery(gray(200), gray(50), "t"), PreferenceQuery(gray(50), gray(200), "t"),
          PreferenceQuery(gray(100), gray(101), "t")]
    answers = clip.label(qs)
    assert [a.label for a in answers] == [0, 1, -1]
    s1, s2 = answers[0].extra["similarity"]
    assert -1 <= s2 < s1 <= 1


def test_open_clip_small_model_without_weights(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    from tether.perception.labellers.clip import ClipLabeller

    # A tiny architecture registered for the test: no weights are downloaded (pretrained=None).
    name = "tether-test-tiny"
    (tmp_path / f"{name}.json").write_text(json.dumps({
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    clip = ClipLabeller(name, pretrained=None)
    rng = np.random.default_rng(0)
    qs = [PreferenceQuery(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8),
                          rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), "open the drawer")
          for _ in range(3)]
    answers = clip.label(qs)
    assert all(a.label in (0, 1, -1) for a in answers)
    swapped = clip.label([PreferenceQuery(q.second, q.first, q.task) for q in qs])
    for a, b in zip(answers, swapped):
        assert a.label == -1 and b.label == -1 or a.label == 1 - b.label
