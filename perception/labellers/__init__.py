"""Preference labellers: which of two images better achieves a task?

Labels everywhere: 0 = the first image is better, 1 = the second is better, -1 = no difference or
unsure (RL-VLM-F, Wang et al., ICML 2024). Labellers: :class:`VLMLabeller` (an OpenAI-compatible
VLM with RL-VLM-F's two-stage prompt), :class:`~tether.perception.labellers.clip.ClipLabeller`
(open_clip similarity; import it from its module, it needs torch), :class:`OracleLabeller` and
:class:`NoisyOracleLabeller` (true reward, for benchmarks). :class:`LabelStore` keeps every label
on disk so that labelling resumes after a crash and never pays twice for a pair.
"""

from tether.perception.labellers.base import (
    FIRST, SECOND, UNSURE, Labeller, LabelError, PreferenceAnswer, PreferenceQuery, image_digest,
)
from tether.perception.labellers.oracle import NoisyOracleLabeller, OracleLabeller, oracle_labels
from tether.perception.labellers.parse import parse_label
from tether.perception.labellers.store import LabelReport, LabelStore, Prices, label_accuracy
from tether.perception.labellers.vlm import VLMConfig, VLMError, VLMLabeller

__all__ = [
    "FIRST", "SECOND", "UNSURE", "Labeller", "LabelError", "PreferenceAnswer", "PreferenceQuery",
    "image_digest", "NoisyOracleLabeller", "OracleLabeller", "oracle_labels", "parse_label",
    "LabelReport", "LabelStore", "Prices", "label_accuracy", "VLMConfig", "VLMError", "VLMLabeller",
]
