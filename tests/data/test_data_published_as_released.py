"""The published datasets as they are actually released, and the split policy that keeps evaluation
patients out of training (issue 17: "Data" and "Formats as released")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medic_ad.data.adapters.mimic_diff_vqa import change_from_difference
from medic_ad.data.holdout import Holdout, patient_keys
from medic_ad.data.registry import detect_format, get_dataset, load_dataset
from medic_ad.data.templates import make_example
from medic_ad.training.config import DataSource, load_config
from medic_ad.training.mixture import load_holdout, load_source
from published_layouts import build_datasets_root


@pytest.fixture(scope="module")
def layout(tmp_path_factory, shared_data):
    return build_datasets_root(shared_data, tmp_path_factory.mktemp("datasets"))


# ------------------------------------------------------------------ MMXU as released


def test_mmxu_released_test_file_alone_loads_with_content_type_labels(layout) -> None:
    root = layout.root / "MMXU"
    record = json.loads((root / "MMXU-test.jsonl").read_text().splitlines()[0])
    assert sorted(record) == sorted(["id", "content_type", "question", "options", "answer", "cur_image_path",
                                     "prior_image_path"]) and isinstance(record["prior_image_path"], str)
    assert detect_format(root) == "mmxu"
    samples = get_dataset("mmxu").load(root, image_root=layout.root / "MIMIC-CXR-JPG")
    assert [s.change for s in samples] == ["worsened", "improved", "no change"]
    assert {s.split for s in samples} == {"test"} and samples[0].meta["patient"] == "mimic-cxr/p10000032"


def test_mmxu_content_type_wins_over_option_keywords_and_test_beside_dev_loads(tmp_path, write_png) -> None:
    root = tmp_path / "MMXU"
    for rel in ("files/p10/p10000032/s1/a.jpg", "files/p10/p10000032/s2/b.jpg"):
        write_png(root / rel)
    base = {"question": "What is the condition of the left lung?", "cur_image_path": "files/p10/p10000032/s2/b.jpg",
            "prior_image_path": "files/p10/p10000032/s1/a.jpg"}
    # the option text says "decreased" but the record's own label is worsened
    test = [dict(base, id=1, content_type="worsened", options={"A": "Decreased", "B": "Stable"}, answer="A")]
    dev = [dict(base, id=2, content_type="Pleural effusion", related_region_name="left lung",
                options={"A": "Improved", "B": "Worsened"}, answer="A", prior_image_path=[base["prior_image_path"]])]
    (root / "MMXU-test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    (root / "MMXU-dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dev))
    samples = load_dataset(root)
    assert sorted((s.id, s.split, s.change) for s in samples) == [("mmxu/1", "test", "worsened"),
                                                                   ("mmxu/2", "train", "improved")]
    assert len(load_dataset(root, split="test")) == 1


# ------------------------------------------------------------------ BMAD as released


def test_bmad_liver_resc_and_parent_folder(layout) -> None:
    bmad = layout.root / "BMAD"
    assert (bmad / "Liver/valid/img/Ungood").is_dir() and (bmad / "RESC/val/ungood/img").is_dir()
    for name in ("BraTS2021", "RESC", "Liver"):
        assert detect_format(bmad / name) == "bmad"
    liver = get_dataset("bmad").load(bmad / "Liver", split_policy="folders")
    masked = [s for s in liver if s.label == "abnormal" and s.masks[0] is not None]
    assert masked and all("/label/Ungood/" in s.masks[0].as_posix() for s in masked)
    assert {s.split for s in liver} == {"train", "val", "test"}
    everything = load_dataset(bmad)
    assert {s.dataset for s in everything} == {"BraTS2021", "RESC", "Liver"}


def test_bmad_train_split_holds_abnormal_masked_images_volume_disjoint_and_stable(layout) -> None:
    root = layout.root / "BMAD" / "BraTS2021"
    train = get_dataset("bmad").load(root, split="train")
    test = get_dataset("bmad").load(root, split="test")
    assert any(s.label == "abnormal" and s.masks[0] is not None for s in train)
    assert any(s.label == "abnormal" and s.masks[0] is not None for s in test)
    train_volumes, test_volumes = {s.meta["volume"] for s in train}, {s.meta["volume"] for s in test}
    assert not train_volumes & test_volumes
    assert set(layout.bmad_volumes["BraTS2021"]["test"]) == {v for v in test_volumes}
    again = get_dataset("bmad").load(root, split="train")
    assert [s.id for s in again] == [s.id for s in train]


# ------------------------------------------------------------------ SLAKE, PathVQA, ChestX-Det as unpacked


def test_slake_pathvqa_chestx_det_unpacked_folders(layout) -> None:
    assert detect_format(layout.root / "SLAKE") == "slake" and (layout.root / "SLAKE/Slake1.0").is_dir()
    assert {s.split for s in load_dataset(layout.root / "SLAKE")} == {"train", "val", "test"}
    assert detect_format(layout.root / "PathVQA") == "pathvqa" and (layout.root / "PathVQA/pvqa").is_dir()
    assert len(load_dataset(layout.root / "PathVQA", split="train")) == 3
    chest = layout.root / "ChestX-Det"
    assert (chest / "train").is_dir() and not (chest / "train_data").exists()
    samples = get_dataset("chestx_det").load(chest, masks="array")
    assert {s.split for s in samples} == {"train", "test"}
    assert all(s.images[0].parent.name == s.split for s in samples)
    assert any(s.masks[0].any() for s in samples)


# ------------------------------------------------------------------ MIMIC-Diff-VQA change questions


def test_mimic_diff_vqa_change_task_trains_free_text_and_derived_choices(layout) -> None:
    samples = get_dataset("mimic_diff_vqa").load(layout.root / "MIMIC-Diff-VQA", split="train",
                                                 image_root=layout.root / "MIMIC-CXR-JPG")
    examples = [make_example(s, "change") for s in samples]  # raised before: free-text answers
    free = [e for s, e in zip(samples, examples) if s.change is None]
    choices = sorted(s.change for s in samples if s.change is not None)
    assert len(free) == 3 and all(e.answer == s.answer for s, e in zip(samples, examples) if s.change is None)
    assert choices == ["improved", "no change", "worsened"]
    assert all(len(e.images) == 2 for e in examples)


@pytest.mark.parametrize("answer, change", [
    ("the main image has an additional finding of edema than the reference image.", "worsened"),
    ("the main image is missing the findings of edema, and atelectasis than the reference image.", "improved"),
    ("nothing has changed.", "no change"),
    ("the level of pleural effusion has changed from moderate to mild.", "improved"),
    ("the main image has an additional finding of edema than the reference image. the main image is missing "
     "the finding of atelectasis than the reference image.", None),
])
def test_change_from_difference(answer: str, change: str | None) -> None:
    assert change_from_difference(answer) == change


# ------------------------------------------------------------------ patient-level holdout


def test_mmxu_test_patients_are_dropped_from_mimic_diff_vqa_training(layout) -> None:
    root = layout.root
    holdout = load_holdout([DataSource(name="mmxu", root=str(root / "MMXU"), split="test",
                                       options={"image_root": str(root / "MIMIC-CXR-JPG")})])
    source = DataSource(name="mimic_diff_vqa", root=str(root / "MIMIC-Diff-VQA"), split="train", task="change",
                        options={"image_root": str(root / "MIMIC-CXR-JPG")})
    everything = load_source(source)
    kept = load_source(source, holdout)
    shared = [s for s in everything if holdout.holds(s)]
    assert len(shared) == 2 and len(kept) == len(everything) - 2  # the free-text question and its choice
    assert not any(k in holdout.keys for s in kept for k in patient_keys(s))


def test_change_pairs_on_a_source_without_lesions_is_a_clear_error(tmp_path, write_png) -> None:
    root = tmp_path / "BMAD" / "Normals"
    for volume in range(1, 7):  # normal images only, as BMAD's training folders are
        write_png(root / f"train/good/img/{volume:05d}_1.png")
        write_png(root / f"valid/good/img/{volume:05d}_2.png")
    with pytest.raises(ValueError, match=r"change_pairs source .*Normals split 'train': no abnormal image with a "
                                         r"lesion mask"):
        load_source(DataSource(name="change_pairs", root=str(root), split="train", options={"source": "bmad"}))


@pytest.mark.parametrize("config", ["stage0_pretrain", "stage3_heatmap"])
def test_tiny_recipes_never_train_on_the_figshare_blocks_the_paper_suite_scores(shared_data, config) -> None:
    if not (shared_data / "figshare_masks").is_dir():
        pytest.skip("figshare_masks not in the shared data")
    from medic_ad.eval.samples import load_task_samples
    from medic_ad.eval.tasks import get_task

    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / f"recipes/configs/tiny/{config}.yaml")
    task = get_task("figshare")
    figshare = next(s for s in cfg.data if s.root and s.root.endswith("figshare_masks"))
    assert figshare.split == "train" and figshare.options["blocks"] == task.options["blocks"]
    scored = load_task_samples(task, data_root=shared_data).samples
    holdout = load_holdout(cfg.holdout)
    assert holdout.sets[0]["samples"] == len(scored) == 161
    trained = load_source(figshare, holdout)
    assert len(trained) == 964 == len(load_source(figshare))  # the split already left the held-back blocks out
    number = lambda s: int(Path(s.images[0]).stem)  # noqa: E731
    # no trained slice is within the guard margin of a scored one (a patient's slices are neighbours)
    gap = min(abs(number(a) - number(b)) for a in trained for b in scored)
    assert gap > task.options["blocks"]["margin"]
    assert not any(holdout.holds(s) for s in trained)


def test_cxr_pairs_split_by_patient_with_shared_images_joined(shared_data) -> None:
    if not (shared_data / "cxr_pairs").is_dir():
        pytest.skip("cxr_pairs not in the shared data")
    from medic_ad.data.registry import load_dataset

    samples = load_dataset(shared_data / "cxr_pairs")
    images = {split: {str(p) for s in samples if s.split == split for p in s.images} for split in ("train", "val")}
    groups = {split: {s.group for s in samples if s.split == split} for split in ("train", "val")}
    assert not images["train"] & images["val"] and not groups["train"] & groups["val"]
    assert len(load_dataset(shared_data / "cxr_pairs", split="val")) == 31


def test_holdout_keys_images_when_no_patient_is_known(tmp_path, write_png) -> None:
    from medic_ad.data.schema import Sample

    a = write_png(tmp_path / "a.png")
    holdout = Holdout()
    holdout.add([Sample(id="x", images=[a], dataset="d")], name="eval", root=None, split=None)
    assert holdout.holds(Sample(id="y", images=[tmp_path / "." / "a.png"], dataset="other"))
    assert not holdout.holds(Sample(id="z", images=[write_png(tmp_path / "b.png")], dataset="other"))
