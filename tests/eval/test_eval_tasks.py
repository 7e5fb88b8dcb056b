"""Tasks as data: every YAML loads, the registry, data loading per kind, pair files, subsampling."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medic_ad.eval.samples import evenly_spaced, load_task_samples, sample_ids
from medic_ad.eval.tasks import TASKS_DIR, SuiteSpec, TaskSpec, get_suite, get_task, list_tasks, load_task_file


@pytest.mark.parametrize("path", sorted(TASKS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_task_file_loads(path: Path):
    spec = load_task_file(path)
    assert spec.name == path.stem
    if isinstance(spec, TaskSpec):
        assert spec.kind in ("detection", "change", "grounding", "vqa")


def test_registry_has_the_papers_tasks_and_suite():
    names = set(list_tasks())
    assert {"detection", "change", "grounding", "vqa", "brain_mri", "head_ct", "br35h", "covid_cxr", "mmxu",
            "br35h_masks", "figshare", "br35h_mask_pairs"} <= names
    suite = get_suite("paper")
    assert isinstance(suite, SuiteSpec)
    assert suite.tables["table1"]["tasks"] == ["brain_mri", "head_ct", "br35h", "covid_cxr"]
    assert get_task("br35h").split == "val"
    assert get_task("head_ct").the_prompt == "Is there any abnormality in this image?"
    assert get_task("detection").generic and not get_task("head_ct").generic


def test_unknown_task_and_bad_files(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'nope'; known tasks: .*head_ct"):
        get_task("nope")
    with pytest.raises(ValueError, match="unknown suite"):
        get_suite("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nkind: segmentation\n")
    with pytest.raises(ValueError, match="kind must be one of"):
        load_task_file(bad)
    bad.write_text("name: x\nkind: detection\nprompts: oops\n")
    with pytest.raises(ValueError, match="unknown task key.*prompts"):
        load_task_file(bad)
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match="malformed YAML"):
        load_task_file(bad)
    with pytest.raises(FileNotFoundError):
        load_task_file(tmp_path / "missing.yaml")


def test_generic_task_needs_data():
    with pytest.raises(ValueError, match="--data"):
        load_task_samples(get_task("detection"))


def test_detection_samples_from_any_folder(image_folder):
    data = load_task_samples(get_task("detection").with_data(image_folder))
    assert data.format == "image_folder" and len(data.samples) == 8
    assert {s.label for s in data.samples} == {"abnormal", "normal"}
    assert len(load_task_samples(get_task("detection").with_data(image_folder), limit=4).samples) == 4


def test_folder_with_nothing_for_the_task(image_folder, mask_folder, tmp_path):
    with pytest.raises(ValueError, match="no images with a mask"):
        load_task_samples(get_task("grounding").with_data(image_folder))
    with pytest.raises(ValueError, match="no questions with answers"):
        load_task_samples(get_task("vqa").with_data(image_folder))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="unknown layout"):
        load_task_samples(get_task("detection").with_data(empty))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_task_samples(get_task("detection").with_data(tmp_path / "nowhere"))


def test_change_pairs_from_masks_are_lazy_with_known_ids(mask_folder):
    data = load_task_samples(get_task("change").with_data(mask_folder))
    ids = sample_ids(data.samples)
    assert len(ids) == 6  # 2 images with a lesion x 3 kinds; the empty mask makes none
    assert any("empty mask" in n for n in data.notes)
    assert [data.samples[i].id for i in range(len(ids))] == ids
    assert {data.samples[i].change for i in range(6)} == {"worsened", "improved", "no change"}


def test_pair_file_with_change_labels(image_folder, tmp_path):
    rows = [("abnormal/a0.png", "normal/n0.png", "improved"), ("normal/n0.png", "abnormal/a0.png", "Worsened"),
            ("normal/n1.png", "normal/n1.png", "no change"), ("missing.png", "normal/n1.png", "worsened")]
    f = image_folder / "change_pairs.csv"
    with open(f, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["prior", "current", "change", "region"])
        for r in rows:
            w.writerow([*r, "left lower lung zone"])
    with pytest.warns(UserWarning, match="skipped 1 row"):
        data = load_task_samples(get_task("change").with_data(f))
    assert data.format == "pairs_file"
    assert [s.change for s in data.samples] == ["improved", "worsened", "no change"]
    assert data.samples[0].region == "left lower lung zone"


def test_evenly_spaced_keeps_both_ends():
    assert evenly_spaced(list(range(10)), 3) == [0, 4, 9] or evenly_spaced(list(range(10)), 3) == [0, 5, 9]
    assert evenly_spaced([1, 2], 5) == [1, 2] and evenly_spaced([1, 2], None) == [1, 2]


def test_shared_folders_give_the_expected_samples(shared_data):
    d = load_task_samples(get_task("head_ct"), data_root=shared_data)
    assert len(d.samples) == 40 and sum(s.label == "abnormal" for s in d.samples) == 20
    d = load_task_samples(get_task("br35h"), data_root=shared_data, limit=10)
    assert all(s.split == "val" for s in d.samples) and {s.label for s in d.samples} == {"abnormal", "normal"}
    d = load_task_samples(get_task("figshare"), data_root=shared_data)
    assert len(d.samples) == 161 and {s.split for s in d.samples} == {"val"}  # the held-back blocks' interiors


def test_control_tasks_render_the_synthetic_control():
    from medic_ad.data.synthetic import SyntheticControl

    for name, kind in (("control_detection", "detection"), ("control_change", "change"),
                       ("control_grounding", "grounding")):
        task = get_task(name)
        assert task.kind == kind and task.format == "synthetic" and not task.generic
        assert task.synthetic["size"] == 168 and task.synthetic["seed"] == 10_007
    control = SyntheticControl(size=168, seed=10_007)
    # limit (or subset) renders that many: the same samples as the control's own sets of that size
    data = load_task_samples(get_task("control_detection"), limit=6)
    assert data.format == "synthetic" and len(data.samples) == 6 and data.describe()["n_used"] == 6
    assert sample_ids(data.samples) == [s.id for s in control.detection(6)]
    assert [s.label for s in data.samples] == [s.label for s in control.detection(6)]
    pairs = load_task_samples(get_task("control_change"), limit=3).samples
    assert [s.change for s in pairs] == ["worsened", "improved", "no change"] and all(s.is_pair for s in pairs)
    masks = load_task_samples(get_task("control_grounding")).samples
    assert len(masks) == 100 and all(s.masks[0].any() for s in masks[:4])  # the task's n


def test_synthetic_task_file_and_its_checks(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("name: mine\nkind: change\nformat: synthetic\nsynthetic: {size: 64, seed: 3, n: 5}\n")
    task = load_task_file(f)
    samples = load_task_samples(task).samples
    assert len(samples) == 5 and samples[0].images[0].shape == (64, 64)
    assert samples[0].id.startswith("synthetic/pairs/3/")
    assert task.with_data(tmp_path).synthetic is None  # --data points it at a folder instead
    for bad, match in (("format: synthetic\n", "needs it"), ("synthetic: {n: 4}\n", "goes with format synthetic"),
                       ("format: synthetic\nsynthetic: {n: 0}\n", "n ≥ 1"),
                       ("format: synthetic\nsynthetic: {n: 4, colour: red}\n", "a mapping of")):
        f.write_text("name: mine\nkind: detection\n" + bad)
        with pytest.raises(ValueError, match=match):
            load_task_file(f)


def test_demo_pairs_task_matches_the_demos_pairs(shared_data):
    """The demo's Br35H-mask pairs: a third of the images as sources (evenly spaced), lesions faded 80-100 %."""
    import dataclasses

    from medic_ad.data.pairs import ChangePairs
    from medic_ad.data.registry import get_dataset

    task = get_task("demo_br35h_mask_pairs")
    task = dataclasses.replace(task, pairs={**task.pairs, "max_sources": 5})
    data = load_task_samples(task, data_root=shared_data)
    val = list(get_dataset("image_mask").load(shared_data / "br35h_masks", split="val"))
    expected = ChangePairs(evenly_spaced(val, 5), seed=10_007, strength=(0.8, 1.0), validate=False)
    assert sample_ids(data.samples) == [s.id for s in expected]
    assert data.samples[4].meta["strength"] == expected[4].meta["strength"]
