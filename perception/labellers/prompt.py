"""RL-VLM-F's two-stage preference prompt.

Written from the description in RL-VLM-F (Wang et al., "RL-VLM-F: Reinforcement Learning from
Vision Language Foundation Model Feedback", ICML 2024, https://arxiv.org/abs/2402.03681, Sec. 4.2
and Fig. 2): in the *analysis* stage the VLM sees the two images and the task description and is
asked what each image shows and whether they differ in how well they achieve the goal; in the
*labelling* stage it is given its own analysis and asked for a single label: 0 if the goal is
better achieved in Image 1, 1 if in Image 2, -1 if there is no difference or it is unsure.
Splitting the two lets the model reason freely first and keeps the second reply trivially
parseable.
"""

from __future__ import annotations

PROMPT_VERSION = "rl-vlm-f-v1"
"""Changes whenever the wording below changes, so cached labels of an old prompt are not reused."""

ANALYSIS_INTRO = "Consider the following two images of a robot attempting a task."
IMAGE_1 = "Image 1:"
IMAGE_2 = "Image 2:"

ANALYSIS_QUESTIONS = (
    "1. What is shown in Image 1?\n"
    "2. What is shown in Image 2?\n"
    "3. The goal is: {task}. Is there any difference between Image 1 and Image 2 in terms of "
    "achieving the goal?"
)

LABEL_PROMPT = (
    "Based on the text below answering these questions:\n"
    "{questions}\n"
    "\n"
    "Text:\n"
    "{analysis}\n"
    "\n"
    "Is the goal better achieved in Image 1 or Image 2?\n"
    "Reply with a single line containing only 0 if the goal is better achieved in Image 1, "
    "or 1 if it is better achieved in Image 2.\n"
    "Reply -1 if the text is unsure or there is no difference."
)


def analysis_questions(task: str) -> str:
    """The analysis-stage questions for ``task`` (shown after the two images)."""
    return ANALYSIS_QUESTIONS.format(task=task.strip())


def label_prompt(task: str, analysis: str) -> str:
    """The labelling-stage prompt: the questions, the model's analysis, and the label request."""
    return LABEL_PROMPT.format(questions=analysis_questions(task), analysis=analysis.strip())


def prompt_key(task: str) -> str:
    """The text that identifies this prompt for ``task`` in the label store."""
    return "\n".join([PROMPT_VERSION, ANALYSIS_INTRO, analysis_questions(task), LABEL_PROMPT])
