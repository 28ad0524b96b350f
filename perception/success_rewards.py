"""Success detectors as rewards for online fine-tuning, run on the robot computer by the actor
(onnxruntime and an HTTP client; no torch), where the robot itself reports no reward (hardware)
or where the simulator's should not be used (to fine-tune as on hardware). The actor
(``tether.robot.actor``) is handed one; it imports nothing from here.

* ``ClassifierReward``: a success classifier (``tether success-classifier``, exported to ONNX) on
  the camera frame of every new state, thresholded: reward 1.0 and the episode ends on success, 0.0
  otherwise (SERL, Luo et al., ICRA 2024; RoboFuME, Yang et al., ICRA 2024). It runs with
  onnxruntime, like the policy.
* ``VlmSuccessReward``: a vision-language model behind an OpenAI-compatible endpoint judges the
  final frame of each episode ("has the task been completed? yes/no"), as RoboFuME's VLM success
  detector does; the episode's last step gets reward 1.0 and is terminal on "yes". Remote models
  answer in seconds, so they are asked once per episode, at its end (the robot holds still
  between episodes), never inside the control loop. An unreadable answer counts as "no" and is
  counted.

Both give ``step(observation) -> (reward, success)`` for every new state and
``end(observation, task) -> success or None`` when the episode is over (None: no verdict to add).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from tether.robot.spec import RobotSpec, SpecError

CLASSIFIER_META_KEY = "tether.classifier"
"""ONNX metadata of a success classifier (``tether.policies.success_classifier`` writes it)."""


class RewardSourceError(ValueError):
    """A reward source cannot be used: the file is not a tether success classifier, or a state
    lacks the camera's frame. (A robot without the camera is a ``SpecError``.)"""


def _camera_check(spec: RobotSpec, camera: str, shape: tuple[int, ...] | None) -> None:
    feature = spec.observation.get(camera)
    if feature is None:
        cameras = [k for k in spec.observation if k.startswith("observation.images.")]
        raise SpecError(f"the reward needs camera {camera!r}, which the robot does not serve "
                        f"(it has {cameras or 'no camera'}; start tether serve with --cameras)")
    if shape is not None and tuple(feature.shape) != tuple(shape):
        raise SpecError(f"the reward's classifier takes {camera} frames of shape {tuple(shape)}, "
                        f"the robot serves {tuple(feature.shape)}")


def _frame(observation: dict, camera: str) -> np.ndarray:
    image = observation.get(camera)
    if image is None:
        raise RewardSourceError(f"the state carries no {camera} frame")
    return np.asarray(image, np.uint8)


class ClassifierReward:
    """A success classifier's sparse reward (see the module docstring).

    Args:
        path: ``classifier.onnx`` written by ``tether success-classifier``.
        threshold: success when P(success) >= threshold (default: the classifier's own).
        providers: onnxruntime execution providers (default CPU).

    Raises:
        RewardSourceError: the file is not a tether success classifier.
        FileNotFoundError: no such file.
    """

    name = "classifier"

    def __init__(self, path: Path | str, threshold: float | None = None, providers: list[str] | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no classifier at {path} (write one with tether success-classifier)")
        self.session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map.get(CLASSIFIER_META_KEY)
        if meta is None:
            raise RewardSourceError(f"{path} is not a tether success classifier (no {CLASSIFIER_META_KEY} metadata)")
        meta = json.loads(meta)
        self.camera: str = meta["camera"]
        self.image_shape = tuple(meta["image_shape"])
        self.threshold = float(meta["threshold"] if threshold is None else threshold)
        self.last_probability = float("nan")

    def check(self, spec: RobotSpec) -> None:
        """Raises ``SpecError`` unless the robot serves the classifier's camera at its size."""
        _camera_check(spec, self.camera, self.image_shape)

    def probability(self, observation: dict) -> float:
        """P(success) of the state's frame."""
        frame = _frame(observation, self.camera)
        return float(self.session.run(None, {"image": frame[None]})[0][0])

    def step(self, observation: dict) -> tuple[float, bool]:
        """(1.0, True) when the frame is classified a success, else (0.0, False)."""
        self.last_probability = self.probability(observation)
        success = self.last_probability >= self.threshold
        return float(success), success

    def end(self, observation: dict, task: str | None) -> bool | None:
        """None: every step was judged already, the episode's end adds no verdict."""
        return None

    def close(self) -> None:
        """Nothing to release (the onnxruntime session goes with the object)."""


SUCCESS_PROMPT = (
    "The image shows a robot's workspace at the end of an attempt at this task: \"{task}\".\n"
    "Has the task been completed in the image? Answer with a single word: yes or no."
)
_YES_NO = re.compile(r"^\W*(yes|no)\W*$", re.IGNORECASE)


def parse_yes_no(text: str | None) -> bool | None:
    """True for a reply whose only word is "yes", False for "no", None otherwise (markdown and
    punctuation around the word are allowed; "yes, but ..." is not an answer)."""
    if not text:
        return None
    matches = [m for m in (_YES_NO.match(line) for line in text.strip().splitlines()) if m]
    answers = {m.group(1).lower() for m in matches}
    return (answers.pop() == "yes") if len(answers) == 1 else None


class VlmSuccessReward:
    """A VLM's success verdict on each episode's final frame (see the module docstring).

    Args:
        camera: the camera whose frame is shown (None: the robot's first, chosen by ``check``).
        config: a ``tether.perception.labellers.vlm.VLMConfig`` (endpoint, model, key, timeouts,
            retries, rate limit); its environment fallbacks apply.
        client: a ``ChatClient`` to use instead of building one (tests share one).

    Raises:
        tether.perception.labellers.vlm.VLMError: no model name.
    """

    name = "vlm"

    def __init__(self, camera: str | None = None, config=None, client=None):
        from tether.perception.labellers.vlm import ChatClient, VLMConfig

        self.config = (config or VLMConfig()).resolved()
        self.client = client or ChatClient(self.config)
        self.camera = camera
        self.queries = 0
        self.unreadable = 0

    def check(self, spec: RobotSpec) -> None:
        """Raises ``SpecError`` unless the robot serves the camera (or, with none named, any)."""
        if self.camera is None:
            cameras = [k for k in spec.observation if k.startswith("observation.images.")]
            if not cameras:
                raise SpecError("the VLM reward needs a camera; the robot serves none (tether serve --cameras)")
            self.camera = cameras[0]
        _camera_check(spec, self.camera, None)

    def step(self, observation: dict) -> tuple[float, bool]:
        """(0.0, False): the VLM judges only the episode's final frame (:meth:`end`)."""
        return 0.0, False

    def end(self, observation: dict, task: str | None) -> bool | None:
        """Ask the VLM about the final frame: True on "yes", False on "no" or an unreadable reply.

        Raises:
            VLMError, RetriesExhausted: the endpoint refuses, or keeps failing after retries.
        """
        from tether.perception.labellers.vlm import image_data_url

        image = image_data_url(_frame(observation, self.camera), self.config.image_format, self.config.jpeg_quality)
        messages = [{"role": "user", "content": [
            {"type": "text", "text": SUCCESS_PROMPT.format(task=task or "the task")},
            {"type": "image_url", "image_url": {"url": image}},
        ]}]
        self.queries += 1
        verdict = parse_yes_no(self.client.chat(messages, self.config.max_tokens_label).text)
        if verdict is None:
            self.unreadable += 1
            return False
        return verdict

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()
