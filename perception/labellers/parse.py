"""Reading a preference label out of a VLM's labelling-stage reply.

Asked for "a single line" with 0, 1 or -1 (see :mod:`prompt`), models still add markdown,
a trailing period, a "Label:" prefix or a sentence before the number. The parser accepts a label
only when a line consists of it (after removing such decoration) and all such lines agree;
anything else ("Image 1 is better", two different numbers, "2") is unparseable and becomes -1,
never a guess, since a wrong preference hurts a reward model more than a missing one.
"""

from __future__ import annotations

import re

from tether.perception.labellers.base import UNSURE

_DECORATION = re.compile(r"^[\s*_`'\"#>\[\](){}]+|[\s*_`'\"\[\](){}.!,;:]+$")
_PREFIX = re.compile(r"^(?:final\s+)?(?:answer|label|preference|output|result)\s*[:=\-]?\s*",
                     re.IGNORECASE)
_LABEL = re.compile(r"^(-1|0|1)$")


def parse_label(text: str | None) -> int | None:
    """The label 0 / 1 / -1 in ``text``, or None when it cannot be read unambiguously.

    Examples: ``"1"`` -> 1, ``"**0**."`` -> 0, ``"Answer: -1"`` -> -1,
    ``"The second one.\\n1"`` -> 1, ``"Image 1"`` -> None, ``"0\\n1"`` -> None.
    """
    if not text:
        return None
    found: set[int] = set()
    for line in text.splitlines():
        line = _DECORATION.sub("", line)
        line = _DECORATION.sub("", _PREFIX.sub("", line))
        match = _LABEL.match(line)
        if match:
            found.add(int(match.group(1)))
    return found.pop() if len(found) == 1 else None


def label_or_unsure(text: str | None) -> tuple[int, bool]:
    """(label, parse_failed): an unparseable reply is -1 with ``parse_failed`` True."""
    label = parse_label(text)
    return (UNSURE, True) if label is None else (label, False)
