"""Task templates: HF chat messages with image placeholders and the target answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medic_ad.data.schema import Sample
from medic_ad.data.templates import (
    DETECTION_PROMPT,
    NO_ABNORMALITY,
    PLAIN_CHANGE_PROMPT,
    change_example,
    describe_region,
    detection_example,
    grounding_example,
    make_example,
    vqa_example,
)

MMXU_QUESTION = "What is the condition of the left lower lung zone across the two chest CXR images?"
OPTIONS = {"A": "No significant change", "B": "Improved", "C": "Worsened"}


def _content(example) -> list[dict]:
    (turn,) = example.messages
    assert turn["role"] == "user"
    return turn["content"]


def test_detection_prompt_and_configurable_answers() -> None:
    sample = Sample(id="d/1", images=["a.png"], label="abnormal", dataset="d")
    ex = detection_example(sample)
    assert ex.messages == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": DETECTION_PROMPT}]}]
    assert DETECTION_PROMPT == "Is there any abnormality in this image?"
    assert ex.answer == "Yes." and ex.task == "detection"
    normal = Sample(id="d/2", images=["a.png"], label="normal", dataset="d")
    assert detection_example(normal).answer == "No."
    assert detection_example(normal, answers={"normal": "no", "abnormal": "yes"}).answer == "no"
    assert ex.conversation[-1] == {"role": "assistant", "content": [{"type": "text", "text": "Yes."}]}
    with pytest.raises(ValueError):
        detection_example(Sample(id="d/3", images=["a.png"], dataset="d"))


def test_mmxu_multiple_choice() -> None:
    sample = Sample(
        id="m/1", images=["p.png", "c.png"], question=MMXU_QUESTION, options=OPTIONS, answer="C",
        change="worsened", region="left lower lung zone", dataset="mmxu",
    )
    ex = change_example(sample)
    content = _content(ex)
    assert content[:2] == [{"type": "image"}, {"type": "image"}]
    assert content[2]["text"] == f"{MMXU_QUESTION} A: No significant change, B: Improved, C: Worsened."
    assert ex.answer == "C: Worsened" and ex.task == "change"
    assert make_example(sample).answer == "C: Worsened"


def test_change_label_only_and_plain_question() -> None:
    sample = Sample(id="s/1", images=["p.png", "c.png"], change="improved", region="lesion", dataset="synthetic")
    ex = change_example(sample)
    assert _content(ex)[2]["text"] == (
        "What is the condition of the lesion across the two images? "
        "A: No significant change, B: Improved, C: Worsened."
    )
    assert ex.answer == "B: Improved"
    plain = change_example(sample, multiple_choice=False)
    assert _content(plain)[2]["text"] == PLAIN_CHANGE_PROMPT and plain.answer == "improved"
    assert change_example(
        Sample(id="s/2", images=["p.png", "c.png"], change="no change", dataset="x"), multiple_choice=False
    ).answer == "no change"
    with pytest.raises(ValueError, match="two images"):
        change_example(Sample(id="s/3", images=["p.png"], dataset="x"))


def test_vqa_open_and_closed() -> None:
    closed = Sample(id="v/1", images=["a.png"], question="Is the lung healthy?", answer="No", dataset="slake")
    ex = vqa_example(closed)
    assert _content(ex) == [{"type": "image"}, {"type": "text", "text": "Is the lung healthy?"}]
    assert ex.answer == "No" and make_example(closed).task == "vqa"
    diff = Sample(id="v/2", images=["a.png", "b.png"], question="what has changed?", answer="new effusion", dataset="d")
    assert len(_content(vqa_example(diff))) == 3 and make_example(diff).task == "vqa"


def test_grounding_from_region_mask_or_normal(tmp_path: Path) -> None:
    assert grounding_example(
        Sample(id="g/1", images=["a.png"], region="left lower lung zone", label="abnormal", dataset="g")
    ).answer == "left lower lung zone"
    mask = np.zeros((90, 90), np.uint8)
    mask[5:15, 65:80] = 1
    ex = grounding_example(Sample(id="g/2", images=["a.png"], masks=[mask], label="abnormal", dataset="g"))
    assert _content(ex)[1]["text"] == "Where is the abnormality?"
    assert ex.answer == "A small region in the upper right of the image."
    assert grounding_example(Sample(id="g/3", images=["a.png"], label="normal", dataset="g")).answer == NO_ABNORMALITY
    big = np.zeros((10, 10), np.uint8)
    big[3:7, 3:7] = 1
    assert describe_region(big) == "A large region in the centre of the image."


def test_make_example_needs_a_task() -> None:
    with pytest.raises(ValueError, match="no task fits"):
        make_example(Sample(id="n/1", images=["a.png"], dataset="n"))
