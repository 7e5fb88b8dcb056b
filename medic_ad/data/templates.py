"""Task templates: a :class:`~medic_ad.data.schema.Sample` as a :class:`ChatExample` (question + answer).

The example's ``messages`` follow the processor chat format, one ``{"type": "image"}`` placeholder per image (prior
first) before the text::

    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]

The model side inserts its own ``<Ano>``/``<Diff>`` tokens; templates only state the task.

Tasks: ``detection`` (the paper's zero-shot prompt, Yes./No.), ``change`` (MMXU-style multiple
choice "C: Worsened", or a plain question answered worsened / improved / no change), ``vqa``
(the dataset's own open or closed question), ``grounding`` ("Where is the abnormality?" answered
with the region, or a description of the mask's position).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from medic_ad.data.io import load_mask
from medic_ad.data.schema import Sample

__all__ = [
    "CHANGE_LETTER",
    "CHANGE_OF_LETTER",
    "CHANGE_OPTIONS",
    "CHANGE_QUESTION",
    "DETECTION_ANSWERS",
    "DETECTION_PROMPT",
    "GROUNDING_PROMPT",
    "MMXU_CHANGE_QUESTION",
    "NO_ABNORMALITY",
    "PLAIN_CHANGE_PROMPT",
    "ChatExample",
    "Task",
    "change_example",
    "change_prompt",
    "choice_answer",
    "describe_region",
    "detection_example",
    "format_options",
    "grounding_example",
    "make_example",
    "user_message",
    "vqa_example",
]

Task = Literal["detection", "change", "vqa", "grounding"]

DETECTION_PROMPT = "Is there any abnormality in this image?"
DETECTION_ANSWERS: Mapping[str, str] = {"abnormal": "Yes.", "normal": "No."}
MMXU_CHANGE_QUESTION = "What is the condition of the {region} across the two chest CXR images?"
CHANGE_QUESTION = "What is the condition of the {region} across the two images?"
CHANGE_OPTIONS: Mapping[str, str] = {"A": "No significant change", "B": "Improved", "C": "Worsened"}
CHANGE_LETTER: Mapping[str, str] = {"no change": "A", "improved": "B", "worsened": "C"}
CHANGE_OF_LETTER: Mapping[str, str] = {letter: change for change, letter in CHANGE_LETTER.items()}
PLAIN_CHANGE_PROMPT = (
    "Compared with the prior image, has the abnormality worsened, improved, or not changed? "
    "Answer with worsened, improved or no change."
)
GROUNDING_PROMPT = "Where is the abnormality?"
NO_ABNORMALITY = "There is no abnormality."


@dataclass(frozen=True)
class ChatExample:
    """One model input: a single user turn with 1 or 2 images (prior first) and a question, and the
    answer when the example is for training or scoring.

    ``images`` are whatever the readers take (paths, PIL images, arrays); the model side loads them.
    ``messages`` is the same turn in Hugging Face chat format, ``conversation`` adds the answer.
    """

    images: Sequence[Any]
    question: str
    answer: str | None = None
    task: Task | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The user turn in HF chat format: one ``{"type": "image"}`` per image, then the question."""
        return user_message(len(self.images), self.question)

    @property
    def conversation(self) -> list[dict[str, Any]]:
        """``messages`` followed by the assistant turn holding ``answer`` (for training)."""
        if self.answer is None:
            raise ValueError("an example without an answer has no conversation")
        reply = {"role": "assistant", "content": [{"type": "text", "text": self.answer}]}
        return [*self.messages, reply]


def user_message(n_images: int, text: str) -> list[dict[str, Any]]:
    """One user turn: ``n_images`` image placeholders, then ``text``."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
    content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


def format_options(options: Mapping[str, str]) -> str:
    """``"A: No significant change, B: Improved, C: Worsened."``"""
    return ", ".join(f"{k}: {v}" for k, v in options.items()) + "."


def choice_answer(letter: str, options: Mapping[str, str]) -> str:
    """The target of a multiple-choice question: ``"C: Worsened"``."""
    return f"{letter}: {options[letter]}"


def change_prompt(region: str | None = None) -> str:
    """The MMXU-style multiple-choice question about a prior/current pair, options included."""
    return f"{CHANGE_QUESTION.format(region=region or 'abnormality')} {format_options(CHANGE_OPTIONS)}"


def detection_example(
    sample: Sample,
    *,
    prompt: str = DETECTION_PROMPT,
    answers: Mapping[str, str] = DETECTION_ANSWERS,
) -> ChatExample:
    """"Is there any abnormality in this image?" -> "Yes."/"No."."""
    if sample.label is None or sample.is_pair:
        raise ValueError(f"{sample.id}: detection needs one image with a normal/abnormal label")
    return ChatExample(list(sample.images), prompt, answers[sample.label], "detection")


def change_example(
    sample: Sample,
    *,
    multiple_choice: bool = True,
    region: str | None = None,
    question: str | None = None,
) -> ChatExample:
    """A change question over the (prior, current) pair.

    Multiple choice: the sample's own question and options (MMXU), or ``CHANGE_QUESTION`` with
    ``CHANGE_OPTIONS`` for samples that only carry a ``change`` label; the target is
    ``"C: Worsened"``. A pair with neither but a question and a free-text answer (MIMIC-Diff-VQA's
    difference questions) keeps them: its answer is the target. Plain: ``PLAIN_CHANGE_PROMPT`` (or ``question``) -> ``"worsened"``.
    """
    if not sample.is_pair:
        raise ValueError(f"{sample.id}: a change question needs two images")
    if multiple_choice:
        if sample.options is not None and sample.answer is not None:
            options, letter = dict(sample.options), sample.answer
            text = question or sample.question or CHANGE_QUESTION.format(region=_region(sample, region))
        elif sample.change is not None:
            options, letter = dict(CHANGE_OPTIONS), CHANGE_LETTER[sample.change]
            text = question or CHANGE_QUESTION.format(region=_region(sample, region))
        elif sample.question is not None and sample.answer is not None:
            # a difference question answered in free text (MIMIC-Diff-VQA): its own answer is the target
            return ChatExample(list(sample.images), question or sample.question, sample.answer, "change")
        else:
            raise ValueError(f"{sample.id}: no change label, answered options or free-text answer")
        if not all(v in text for v in options.values()):
            text = f"{text} {format_options(options)}"
        return ChatExample(list(sample.images), text, choice_answer(letter, options), "change")
    if sample.change is None:
        raise ValueError(f"{sample.id}: a plain change question needs a change label")
    return ChatExample(list(sample.images), question or PLAIN_CHANGE_PROMPT, sample.change, "change")


def _region(sample: Sample, region: str | None) -> str:
    return region or sample.region or "abnormality"


def vqa_example(sample: Sample) -> ChatExample:
    """The dataset's own question and answer (open or closed)."""
    if sample.question is None or sample.answer is None:
        raise ValueError(f"{sample.id}: VQA needs a question and an answer")
    answer = sample.options[sample.answer] if sample.options and sample.answer in sample.options else None
    target = f"{sample.answer}: {answer}" if answer is not None else sample.answer
    return ChatExample(list(sample.images), sample.question, target, "vqa")


def grounding_example(sample: Sample, *, prompt: str = GROUNDING_PROMPT) -> ChatExample:
    """"Where is the abnormality?" -> the region, a description of the mask, or NO_ABNORMALITY."""
    if sample.is_pair:
        raise ValueError(f"{sample.id}: grounding needs a single image")
    if sample.label == "normal":
        return ChatExample(list(sample.images), prompt, NO_ABNORMALITY, "grounding")
    if sample.region:
        return ChatExample(list(sample.images), prompt, sample.region, "grounding")
    mask_ref = sample.masks[0]
    if mask_ref is None:
        raise ValueError(f"{sample.id}: grounding needs a region or a mask")
    mask = load_mask(mask_ref)
    target = describe_region(mask) if mask.any() else NO_ABNORMALITY
    return ChatExample(list(sample.images), prompt, target, "grounding")


def describe_region(mask: np.ndarray) -> str:
    """Where a binary mask lies, in image terms: "A small region in the upper left of the image."

    Position is the foreground centroid in thirds of the image; size is the foreground share
    (small < 2 %, medium < 10 %, else large). Left/right are the image's, not the patient's.
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("empty mask has no region")
    h, w = mask.shape
    row = ("upper", "middle", "lower")[min(int(3 * ys.mean() / h), 2)]
    col = ("left", "centre", "right")[min(int(3 * xs.mean() / w), 2)]
    share = ys.size / float(h * w)
    size = "small" if share < 0.02 else "medium-sized" if share < 0.10 else "large"
    where = "centre" if (row, col) == ("middle", "centre") else f"{row} {col}"
    return f"A {size} region in the {where} of the image."


def make_example(sample: Sample, task: Task | None = None) -> ChatExample:
    """The example of ``task``, or of the task the sample is made for when ``task`` is None.

    Inference order: answered options or a change label on a pair -> change; a question ->
    vqa; an image label -> detection.
    """
    if task is None:
        if sample.is_pair and (sample.change is not None or sample.options is not None):
            task = "change"
        elif sample.question is not None and sample.answer is not None:
            task = "vqa"
        elif sample.label is not None:
            task = "detection"
        else:
            raise ValueError(f"{sample.id}: no task fits this sample (no label, change or question)")
    builders = {
        "detection": detection_example,
        "change": change_example,
        "vqa": vqa_example,
        "grounding": grounding_example,
    }
    return builders[task](sample)
