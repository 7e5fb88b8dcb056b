"""Adapters of sets not held locally, on tiny fixtures written in their exact published formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medic_ad.data.errors import LoadWarning
from medic_ad.data.io import load_mask
from medic_ad.data.registry import detect_format, get_dataset, load_dataset


# ------------------------------------------------------------------ BMAD


def test_bmad_pixel_level_image_level_and_parent(tmp_path: Path, write_png) -> None:
    brain = tmp_path / "BMAD" / "Brain"
    write_png(brain / "train/good/img/00003_60.png")
    write_png(brain / "train/good/img/00003_61.png")
    write_png(brain / "valid/good/img/00025_99.png")
    write_png(brain / "valid/good/label/00025_99.png", value=0)
    write_png(brain / "valid/Ungood/img/00124_60.png")
    write_png(brain / "valid/Ungood/label/00124_60.png", value=255)
    write_png(brain / "test/Ungood/img/00002_60.png")
    write_png(brain / "test/Ungood/label/00002_60.png", (8, 16), value=255)  # wrong size: skipped
    write_png(brain / "test/good/img/00005_60.png")
    camelyon = tmp_path / "BMAD" / "camelyon16"
    for rel in ("train/good/1000.png", "valid/good/1080.png", "valid/Ungood/1000.png", "test/good/1000.png", "test/Ungood/100.png"):
        write_png(camelyon / rel)

    assert detect_format(brain) == "bmad" and detect_format(camelyon) == "bmad"
    with pytest.warns(LoadWarning, match="mask size differs"):
        samples = load_dataset(brain, group_regex=r"^(\d+)_", split_policy="folders")
    by_id = {s.id: s for s in samples}
    assert len(samples) == 5 and samples.report.skipped == {"mask size differs from its image": 1}
    ungood = by_id["Brain/valid/Ungood/img/00124_60.png"]
    assert ungood.label == "abnormal" and ungood.split == "val" and ungood.masks[0].name == "00124_60.png"
    assert by_id["Brain/train/good/img/00003_60.png"].group == "Brain/00003"
    assert by_id["Brain/test/good/img/00005_60.png"].masks == [None]
    assert [s.split for s in get_dataset("bmad").load(brain, split="train", split_policy="folders")] == ["train", "train"]

    cam = load_dataset(camelyon, split_policy="folders")
    assert sorted((s.split, s.label) for s in cam) == [
        ("test", "abnormal"), ("test", "normal"), ("train", "normal"), ("val", "abnormal"), ("val", "normal")
    ]
    assert detect_format(tmp_path / "BMAD") == "bmad"
    with pytest.warns(LoadWarning):
        both = load_dataset(tmp_path / "BMAD", split_policy="folders")
    assert {s.dataset for s in both} == {"Brain", "camelyon16"} and len(both) == 10


# ------------------------------------------------------------------ ChestX-Det


def _chestx_det(root: Path, write_png, write_json) -> None:
    train = [
        {"file_name": "36199.png", "syms": [], "boxes": [], "polygons": []},
        {
            "file_name": "36302.png",
            "syms": ["Effusion"],
            "boxes": [[10, 12, 30, 40]],
            "polygons": [[[10, 12], [30, 12], [30, 40], [10, 40]]],
        },
        {
            "file_name": "36331.png",
            "syms": ["Nodule", "Mass"],
            "boxes": [[40, 40, 50, 50], [5, 50, 15, 60]],
            "polygons": [[[40, 40], [50, 40], [45, 50]], []],
        },
        {"file_name": "gone.png", "syms": ["Mass"], "boxes": [[1, 1, 5, 5]], "polygons": [[[1, 1], [5, 1], [5, 5]]]},
    ]
    write_json(root / "ChestX_Det_train.json", train)
    write_json(root / "ChestX_Det_test.json", [{"file_name": "40000.png", "syms": [], "boxes": [], "polygons": []}])
    for name in ("36199.png", "36302.png", "36331.png"):
        write_png(root / "train_data" / name, (64, 64))
    write_png(root / "test_data" / "40000.png", (64, 64))


def test_chestx_det_rasterises_polygons(tmp_path: Path, write_png, write_json) -> None:
    root = tmp_path / "ChestX-Det"
    _chestx_det(root, write_png, write_json)
    assert detect_format(root) == "chestx_det"
    with pytest.warns(LoadWarning, match="missing image file"):
        samples = get_dataset("chestx_det").load(root, masks="array")
    by_id = {s.id: s for s in samples}
    assert len(samples) == 4 and samples.report.skipped == {"missing image file": 1}
    normal = by_id["chestx_det/train/36199.png"]
    assert normal.label == "normal" and normal.masks[0].sum() == 0 and normal.masks[0].shape == (64, 64)
    effusion = by_id["chestx_det/train/36302.png"].masks[0]
    assert effusion.dtype == np.uint8 and effusion.sum() == 21 * 29 and effusion[12:41, 10:31].all()
    two = by_id["chestx_det/train/36331.png"]
    assert two.meta["findings"] == ["Nodule", "Mass"] and two.masks[0][50:61, 5:16].all()  # box fallback
    assert by_id["chestx_det/test/40000.png"].split == "test"

    with pytest.warns(LoadWarning):
        cached = get_dataset("chestx_det").load(root, masks="cache", cache_dir=tmp_path / "cache")
    cached_by_id = {s.id: s for s in cached}
    mask_path = cached_by_id["chestx_det/train/36302.png"].masks[0]
    assert isinstance(mask_path, Path) and mask_path.is_file()
    np.testing.assert_array_equal(load_mask(mask_path), effusion)
    assert len(get_dataset("chestx_det").load(root, split="test", masks="none")) == 1


# ------------------------------------------------------------------ VQA-RAD, SLAKE, PathVQA


def test_vqa_rad_public_json(tmp_path: Path, write_png, write_json) -> None:
    root = tmp_path / "VQA_RAD"
    base = {
        "qid_linked_id": "03f451ca-de62-4617-9679-e836026a7642",
        "image_case_url": "https://medpix.nlm.nih.gov/case?id=48e1dd0e-8552-46ad-a354-5eb55be86de6",
        "image_organ": "HEAD",
        "evaluation": "not evaluated",
        "question_rephrase": "NULL",
        "question_relation": "NULL",
        "question_frame": "NULL",
    }
    records = [
        {**base, "qid": 0, "phrase_type": "freeform", "image_name": "synpic54610.jpg",
         "question": "Are regions of the brain infarcted?", "question_type": "PRES", "answer": "Yes",
         "answer_type": "CLOSED"},
        {**base, "qid": 1, "phrase_type": "test_freeform", "image_name": "synpic54610.jpg",
         "question": "Where is the lesion?", "question_type": "POS", "answer": "Right temporal lobe",
         "answer_type": "OPEN"},
        {**base, "qid": 2, "phrase_type": "para", "image_name": "synpic29265.jpg",
         "question": "How many lesions are there?", "question_type": "COUNT", "answer": 3, "answer_type": "OPEN"},
    ]
    write_json(root / "VQA_RAD Dataset Public.json", records)
    write_png(root / "VQA_RAD Image Folder" / "synpic54610.jpg")
    write_png(root / "VQA_RAD Image Folder" / "synpic29265.jpg")
    assert detect_format(root) == "vqa_rad"
    samples = load_dataset(root)
    by_id = {s.id: s for s in samples}
    assert by_id["vqa_rad/0"].split == "train" and by_id["vqa_rad/1"].split == "test"
    assert by_id["vqa_rad/0"].meta["answer_type"] == "closed" and by_id["vqa_rad/1"].meta["answer_type"] == "open"
    assert by_id["vqa_rad/2"].answer == "3"
    assert by_id["vqa_rad/0"].group == by_id["vqa_rad/1"].group  # same image: one group
    assert len(load_dataset(root, split="test")) == 1


def test_slake_keeps_english_by_default(tmp_path: Path, write_png, write_json) -> None:
    root = tmp_path / "Slake1.0"

    def rec(qid: int, lang: str, question: str, answer: str, kind: str = "CLOSED") -> dict:
        return {"img_id": 0, "img_name": "xmlab0/source.jpg", "question": question, "answer": answer,
                "q_lang": lang, "location": "Lung", "modality": "CT", "answer_type": kind,
                "base_type": "vqa", "content_type": "Abnormality", "triple": ["vhead", "_", "_"], "qid": qid}

    write_json(root / "train.json", [rec(1, "en", "Is the lung healthy?", "No"), rec(2, "zh", "肺部健康吗？", "不")])
    write_json(root / "validate.json", [rec(3, "en", "What modality is used?", "CT", "OPEN")])
    write_json(root / "test.json", [rec(4, "en", "Does the picture contain liver?", "No")])
    write_png(root / "imgs" / "xmlab0" / "source.jpg")
    assert detect_format(root) == "slake"
    samples = load_dataset(root)
    assert sorted(s.id for s in samples) == ["slake/1", "slake/3", "slake/4"]
    assert samples.report.notes == {"question not in language 'en'": 1}
    by_id = {s.id: s for s in samples}
    assert by_id["slake/3"].split == "val" and by_id["slake/3"].meta["answer_type"] == "open"
    assert by_id["slake/1"].meta["body_part"] == "Lung" and by_id["slake/1"].group == "slake/xmlab0"
    assert len(get_dataset("slake").load(root, lang=None)) == 4


def test_pathvqa_json_and_jsonl(tmp_path: Path, write_png, write_json) -> None:
    root = tmp_path / "pvqa"
    write_json(root / "qas" / "train" / "train_qa.json", [
        {"image": "train_0422", "question": "Are the nuclei pyknotic?", "answer": "yes"},
        {"image": "train_0422", "question": "What have lost their nuclei?", "answer": "neutrophils"},
    ])
    write_json(root / "qas" / "val" / "val_qa.jsonl", [
        {"image": "val_0261", "question": "What is present?", "answer": "granuloma"},
    ])
    write_png(root / "images" / "train" / "train_0422.jpg")
    write_png(root / "images" / "val" / "val_0261.jpg")
    assert detect_format(root) == "pathvqa"
    samples = load_dataset(root)
    assert [(s.split, s.meta["answer_type"]) for s in samples] == [("train", "closed"), ("train", "open"), ("val", "open")]
    assert samples[0].images[0].name == "train_0422.jpg" and samples[0].group == samples[1].group


# ------------------------------------------------------------------ MIMIC-Diff-VQA, MMXU

LABEL_COLUMNS = (
    "Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,Lung Lesion,"
    "Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices"
)
PRIOR_DICOM = "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"
LATERAL_DICOM = "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962"
MAIN_DICOM = "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab"


def _mimic_files(root: Path, write_png) -> tuple[Path, Path]:
    prior = write_png(root / "files/p10/p10000032/s50414267" / f"{PRIOR_DICOM}.jpg")
    write_png(root / "files/p10/p10000032/s50414267" / f"{LATERAL_DICOM}.jpg")
    main = write_png(root / "files/p10/p10000032/s53189527" / f"{MAIN_DICOM}.jpg")
    return prior, main


def test_mimic_diff_vqa(tmp_path: Path, write_png) -> None:
    root = tmp_path / "medical-diff-vqa"
    prior, main = _mimic_files(root, write_png)
    empty = "," * LABEL_COLUMNS.count(",")
    (root / "mimic_all.csv").write_text(
        f"subject_id,study_id,{LABEL_COLUMNS},dicom_id,view,split,study_date,study_order\n"
        f"10000032,50414267,{empty},{LATERAL_DICOM},lateral,train,21800506,1\n"
        f"10000032,50414267,{empty},{PRIOR_DICOM},postero-anterior,train,21800506,1\n"
        f"10000032,53189527,{empty},{MAIN_DICOM},postero-anterior,train,21800626,2\n"
    )
    (root / "mimic_pair_questions.csv").write_text(
        "study_id,subject_id,ref_id,question_type,question,answer,split\n"
        "53189527,10000032,50414267,abnormality,what abnormalities are seen in this image?,atelectasis,train\n"
        "53189527,10000032,50414267,difference,what has changed compared to the reference image?,"
        '"the main image has an additional finding of pneumothorax than the reference image.",train\n'
        "53189527,10000032,59999999,difference,what has changed compared to the reference image?,nothing,test\n"
    )
    assert detect_format(root) == "mimic_diff_vqa"
    with pytest.warns(LoadWarning, match="malformed row"):
        samples = load_dataset(root)
    assert [s.id for s in samples] == ["mimic_diff_vqa/1", "mimic_diff_vqa/1/choice"]
    pair, choice = samples
    assert choice.change == "worsened" and choice.question is None and choice.images == [prior, main]
    assert pair.images == [prior, main] and pair.meta["ref_is_earlier"] is True
    assert pair.question.startswith("what has changed") and "pneumothorax" in pair.answer
    assert pair.group == "mimic_diff_vqa/10000032" and pair.change is None and pair.split == "train"
    with pytest.warns(LoadWarning):
        everything = get_dataset("mimic_diff_vqa").load(root, question_types=None, change_choices=False)
    assert sorted(len(s.images) for s in everything) == [1, 2]


def test_mmxu_multiple_choice_pairs(tmp_path: Path, write_png, write_json) -> None:
    root = tmp_path / "MMXU"
    prior, main = _mimic_files(root, write_png)
    options = {"A": "No significant change", "B": "Improved", "C": "Worsened"}

    def rec(i: int, answer: str, opts: dict | None = None) -> dict:
        return {
            "id": i,
            "content_type": "Pleural effusion",
            "related_region_name": "left lower lung zone",
            "question": "What is the condition of the left lower lung zone across the two chest CXR images?",
            "options": opts or options,
            "answer": answer,
            "explanation": "The effusion has increased.",
            "cur_image_path": f"files/p10/p10000032/s53189527/{MAIN_DICOM}.jpg",
            "cur_report": "restricted report text",
            "cur_region_report": "restricted region text",
            "cur_image_bboxs": {"left lower lung zone": [10, 20, 30, 40]},
            "prior_image_path": [f"files/p10/p10000032/s50414267/{PRIOR_DICOM}.jpg"],
            "prior_report": "restricted prior report",
            "prior_image_bboxs": {},
        }

    path = write_json(root / "MMXU-test.jsonl", [
        rec(1, "C"),
        rec(2, "B"),
        rec(3, "A"),
        rec(4, "B", {"A": "Slightly increased", "B": "Markedly decreased", "C": "Unchanged"}),
        rec(5, "A", {"A": "Cannot be assessed", "B": "Improved"}),
    ])
    path.write_text(path.read_text() + "{not json\n")
    assert detect_format(root) == "mmxu"
    with pytest.warns(LoadWarning, match="malformed JSON line"):
        samples = load_dataset(root)
    by_id = {s.id: s for s in samples}
    assert [by_id[f"mmxu/{i}"].change for i in range(1, 6)] == ["worsened", "improved", "no change", "improved", None]
    assert samples.report.notes == {"content_type states no change label: answer option text used": 5,
                                    "answer option not mappable to a change label": 1}
    first = by_id["mmxu/1"]
    assert first.images == [prior, main] and first.answer == "C" and first.options == options
    assert first.region == "left lower lung zone" and first.split == "test" and first.group == "mmxu/p10000032"
    assert not any("report" in key for key in first.meta)
