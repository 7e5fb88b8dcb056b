"""Answer parsing on a table of real phrasings (VLM outputs seen in medical VQA / anomaly papers)."""

from __future__ import annotations

import pytest

from medic_ad.eval.parsing import (
    change_from_text,
    normalize_answer,
    parse_change,
    parse_choice,
    parse_yes_no,
    token_recall,
)

YES_NO = [
    ("Yes.", True),
    ("yes", True),
    ("Yes, there is a hyperdense lesion in the left frontal lobe.", True),
    ("**Yes**", True),
    ("YES", True),
    ("Answer: Yes", True),
    ("No.", False),
    ("no", False),
    ("No abnormality is seen.", False),
    ("No, the brain parenchyma appears normal.", False),
    ("No evidence of intracranial hemorrhage.", False),
    ("There is no evidence of a mass or midline shift.", False),
    ("There is no abnormality in this image.", False),
    ("The image appears normal.", False),
    ("The scan is unremarkable.", False),
    ("Normal.", False),
    ("Normal brain MRI.", False),
    ("The findings are within normal limits.", False),
    ("Negative for acute intracranial abnormality.", False),
    ("The lungs are clear.", False),
    ("I do not see any abnormality.", False),
    ("No acute findings.", False),
    ("No significant abnormalities are identified.", False),
    ("This chest X-ray does not show any signs of pneumonia.", False),
    ("The CT shows no signs of bleeding.", False),
    ("There is a lesion in the right temporal lobe.", True),
    ("There is a large mass with surrounding edema.", True),
    ("The image shows a tumor in the left hemisphere.", True),
    ("Abnormal.", True),
    ("The MRI demonstrates an enhancing mass consistent with glioma.", True),
    ("There appears to be a hemorrhage in the left basal ganglia.", True),
    ("Bilateral ground-glass opacities consistent with COVID-19 pneumonia.", True),
    ("The chest X-ray shows consolidation in the right lower lobe.", True),
    ("There is a lesion, no mass effect.", True),
    ("Although the ventricles are normal, there is a small hemorrhage.", True),
    ("It is abnormal.", True),
    ("Findings suggestive of an infarct.", True),
    ("None.", False),
    ("The image shows normal anatomy.", False),
    ("This is a normal chest X-ray.", False),
    ("Present.", True),
    ("I cannot determine this from the image.", None),
    ("It is unclear.", None),
    ("Maybe.", None),
    ("", None),
    (None, None),
    ("Nofuent", None),
    ("The image is a brain MRI.", None),
]


@pytest.mark.parametrize("text,expected", YES_NO, ids=[repr(t) for t, _ in YES_NO])
def test_yes_no_table(text, expected):
    assert parse_yes_no(text) is expected


MMXU = {"A": "No significant change", "B": "Improved", "C": "Worsened"}
CHOICES = [
    ("C", "C"),
    ("C: Worsened", "C"),
    ("(B)", "B"),
    ("B.", "B"),
    ("B)", "B"),
    ("[A]", "A"),
    ("c", "C"),
    ("A: No significant change", "A"),
    ("Answer: C", "C"),
    ("The answer is (A).", "A"),
    ("The correct answer is B: Improved", "B"),
    ("Option B", "B"),
    ("**C**", "C"),
    ("C Worsened", "C"),
    ("worsened", "C"),
    ("Worsened.", "C"),
    ("improved", "B"),
    ("no significant change", "A"),
    ("No change.", "A"),
    ("The opacity in the left lower lung zone has worsened.", "C"),
    ("The condition has improved compared with the prior study.", "B"),
    ("The findings are stable.", "A"),
    ("Unchanged", "A"),
    ("The effusion has progressed.", "C"),
    ("The consolidation has largely resolved.", "B"),
    ("A small effusion has improved.", "B"),
    ("It has not worsened.", None),
    ("D", None),
    ("I am not sure.", None),
    ("", None),
]


@pytest.mark.parametrize("text,expected", CHOICES, ids=[repr(t) for t, _ in CHOICES])
def test_choice_table(text, expected):
    assert parse_choice(text, MMXU) == expected


def test_choice_respects_the_questions_own_letters():
    options = {"A": "Worsened", "B": "Improved", "C": "No significant change"}
    assert parse_choice("worse", options) == "A"
    assert parse_change("A", options) == "worsened"
    assert parse_change("C: No significant change", options) == "no change"
    assert parse_change("(B)", options) == "improved"
    assert parse_change("E", options) is None


@pytest.mark.parametrize("text,expected", [
    ("worsened", "worsened"), ("Improved", "improved"), ("no change", "no change"),
    ("Slightly improved", "improved"), ("Increased", "worsened"), ("stable", "no change"),
    ("neither improved nor worsened", "no change"), ("banana", None),
])
def test_change_from_text(text, expected):
    assert change_from_text(text) == expected


def test_vqa_normalisation_and_token_recall():
    assert normalize_answer("The Liver.") == "liver"
    assert normalize_answer("  Left   lung, upper-lobe! ") == "left lung upper lobe"
    assert token_recall("the left upper lobe of the lung", "Left lung") == 1.0
    assert token_recall("right lung", "left lung") == 0.5
    assert token_recall("", "left lung") == 0.0
    assert token_recall(None, "") == 1.0


def test_the_table_is_big_enough():
    assert len(YES_NO) + len(CHOICES) >= 60
