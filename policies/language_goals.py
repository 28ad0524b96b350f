"""Language goals: task strings embedded by open_clip's text tower (BESO on CALVIN, Reuss et al.,
RSS 2023; MDT, Reuss et al., RSS 2024, condition on CLIP text embeddings of the instruction).

The embeddings are computed once, on the machine that has torch (training, export, or a client
given ``--goal-text``); the exported policy takes the embedding as its ``goal`` input and carries
the embeddings of its training tasks in its metadata, so a robot computer needs no torch to run
it on those tasks.
"""

from __future__ import annotations

import numpy as np


class LanguageGoalError(ValueError):
    """An empty or otherwise unusable language goal."""


def text_embeddings(texts: list[str], model_name: str = "ViT-S-32", weights: str | None = None) -> np.ndarray:
    """L2-normalized CLIP text embeddings, float32 [N, E] (E: the model's embedding size, 384 for
    ViT-S-32), of ``texts``. ``weights``: an open_clip pretrained tag or local file; None: random
    weights (distinct strings still get distinct embeddings).

    Raises:
        LanguageGoalError: an empty (or all-whitespace) text.
        ImportError: open_clip is not installed (the ``train`` extra).
        ValueError: an architecture open_clip does not know.
    """
    import open_clip
    import torch

    from tether.policies.image_encoders import clip_model

    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise LanguageGoalError(f"language goal {i} is empty ({text!r}): give the instruction "
                                    "as text, e.g. --goal-text 'open the drawer'")
    model = clip_model(model_name, weights).eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    with torch.no_grad():
        e = model.encode_text(tokenizer(list(texts))).float()
    return (e / e.norm(dim=-1, keepdim=True).clamp(min=1e-8)).numpy().astype(np.float32)
