"""``medic-ad detect | compare | explain``: real inputs answered, every bad input refused cleanly."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _one_clean_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("medic-ad: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _no_leftovers(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], list(folder.iterdir())


# ------------------------------------------------------------------------------------------ happy paths


def test_help_lists_the_verbs(capsys) -> None:
    from medic_ad.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for verb in ("detect", "compare", "explain", "serve"):
        assert verb in out


def test_detect_one_png_json(cli, shared_data) -> None:
    path = sorted((shared_data / "br35h" / "yes").glob("*.png"))[0]
    code, out, err = cli("detect", path, "--json")
    assert code == 0, err
    row = json.loads(out)
    assert row["status"] == "ok" and row["path"] == str(path)
    assert 0.0 <= row["score"] <= 1.0 and row["abnormal"] == (row["score"] >= 0.5)
    assert row["image"]["format"] == "png" and row["image"]["height"] > 0
    assert isinstance(row["answer"], str)


def test_detect_folder_batches_refusals_as_rows(cli, tmp_path, shared_data, bad_corpus) -> None:
    corpus, expected = bad_corpus
    folder = tmp_path / "studies"
    (folder / "brain").mkdir(parents=True)
    for p in sorted((shared_data / "br35h" / "yes").glob("*.png"))[:3]:
        shutil.copy(p, folder / "brain" / p.name)
    bad = ["page_renamed.png", "empty.png", "blank.png", "strip_1x2000.png", "truncated.dcm", "huge_header_20000.png",
           "truncated.nii.gz", "notes.txt"]
    for name in bad:
        shutil.copy(corpus / name, folder / name)
    (folder / "labels.csv").write_text("path,label\n")  # a sidecar: skipped, not refused
    (folder / ".hidden.png").write_bytes(b"junk")  # hidden: skipped
    out = tmp_path / "results" / "results.csv"
    code, stdout, err = cli("detect", folder, "--out", out, "--batch-size", "4")
    assert code == 0, err
    assert "Traceback" not in err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3 + len(bad)
    by_name = {Path(r["path"]).name: r for r in rows}
    for name in bad:
        assert by_name[name]["status"] == "refused"
        assert by_name[name]["reason"] == expected[name], by_name[name]
        assert by_name[name]["error"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 3 and all(0 <= float(r["score"]) <= 1 for r in ok)
    assert "3 of 11 image(s) answered, 8 refused" in err
    _no_leftovers(out.parent)

    jsonl = tmp_path / "results" / "results.jsonl"
    code, _, err = cli("detect", folder, "--out", jsonl, "--no-progress", "--json")
    assert code == 0, err
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert [r["status"] for r in lines] == [r["status"] for r in rows]


def test_explain_writes_overlay_and_heatmap(cli, tmp_path, shared_data) -> None:
    src = sorted((shared_data / "br35h" / "yes").glob("*.png"))[1]
    overlay, heat = tmp_path / "out" / "overlay.png", tmp_path / "out" / "heat.png"
    code, out, err = cli("explain", src, "-o", overlay, "--heatmap", heat, "--json", "--alpha", "0.6")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["overlay"] == str(overlay) and 0 <= payload["heatmap"]["min"] <= payload["heatmap"]["max"] <= 1
    with Image.open(src) as im:
        size = im.size
    with Image.open(overlay) as im:
        assert im.format == "PNG" and im.width > size[0]  # image + colour bar
        assert np.asarray(im.convert("RGB")).std() > 10
    with Image.open(heat) as im:
        assert im.size == size and im.mode == "L"
    _no_leftovers(overlay.parent)


def test_compare_real_pair_writes_side_by_side(cli, tmp_path, shared_data) -> None:
    import csv as _csv

    with open(shared_data / "cxr_pairs" / "pairs.csv", newline="") as fh:
        row = next(_csv.DictReader(fh))
    images = shared_data / "cxr_pairs" / "images"
    prior, current = images / Path(row["prior"]).name, images / Path(row["current"]).name
    out = tmp_path / "sidebyside.png"
    code, stdout, err = cli("compare", prior, current, "--region", "left lower lung zone", "-o", out, "--json")
    assert code == 0, err
    payload = json.loads(stdout)
    assert payload["label"] in {"worsened", "improved", "no change"}
    assert abs(sum(payload["probs"].values()) - 1) < 1e-4
    assert -1 <= payload["change_map"]["min"] <= payload["change_map"]["max"] <= 1
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 2 * im.height


@pytest.mark.parametrize("name, extra", [
    ("CT_small.dcm", []),
    ("MR_small.dcm", []),
    ("RG1_UNCR.dcm", []),         # a real computed radiograph, MONOCHROME1, 1955 x 1841
    ("US1_UNCR.dcm", []),         # ultrasound, RGB
    ("emri_small.dcm", ["--frame", "3"]),  # multi-frame MR
])
def test_detect_real_dicoms(cli, dicom_file, name, extra) -> None:
    code, out, err = cli("detect", dicom_file(name), "--json", *extra)
    assert code == 0, err
    row = json.loads(out)
    assert row["status"] == "ok" and row["image"]["format"] == "dicom"


def test_compare_and_explain_real_dicom(cli, dicom_file, tmp_path) -> None:
    ct = dicom_file("CT_small.dcm")
    code, out, err = cli("compare", ct, ct, "-o", tmp_path / "ct.png", "--json")
    assert code == 0, err
    assert json.loads(out)["prior"]["modality"] == "CT"
    code, out, err = cli("explain", dicom_file("MR_small.dcm"), "-o", tmp_path / "mr.png")
    assert code == 0, err
    assert (tmp_path / "mr.png").is_file()


def test_nifti_slice_option(cli, tmp_path) -> None:
    import nibabel as nib

    rng = np.random.default_rng(0)
    vol = rng.normal(100, 30, (64, 72, 10)).astype(np.float32)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    code, out, err = cli("detect", path, "--slice", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["image"]["format"] == "nifti"
    code, _, err = cli("detect", path, "--slice", "99")
    assert code == 2 and "refused (bad_option)" in _one_clean_line(err)


# ------------------------------------------------------------------------------------------ refusals


def test_bad_corpus_is_refused_by_every_verb(cli, bad_corpus, tmp_path) -> None:
    """Each of the >= 30 corpus files: exit 2, one line naming the reason, no traceback, nothing written."""
    corpus, expected = bad_corpus
    assert len(expected) >= 30
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    failures = []
    for name, reason in expected.items():
        path = corpus / name
        for argv in (("detect", path, "--out", out_dir / "r.csv"),
                     ("explain", path, "-o", out_dir / "o.png"),
                     ("compare", path, path, "-o", out_dir / "c.png")):
            code, out, err = cli(*argv)
            line = err.strip()
            ok = (code == 2 and len(err.strip().splitlines()) == 1 and line.startswith("medic-ad: error: ")
                  and f"refused ({reason})" in line and "Traceback" not in err and not out)
            if not ok:
                failures.append((argv[0], name, code, err))
    assert not failures, failures
    assert list(out_dir.iterdir()) == []


def test_bad_pairs_are_refused(cli, bad_pairs, tmp_path) -> None:
    for name, (prior, current, reason) in bad_pairs.items():
        out = tmp_path / f"{name}.png"
        code, stdout, err = cli("compare", prior, current, "-o", out)
        assert code == 2, (name, err)
        assert f"refused ({reason})" in _one_clean_line(err), (name, err)
        assert not out.exists() and not stdout


def test_refused_named_file_leaves_existing_output_untouched(cli, bad_corpus, good_images, tmp_path) -> None:
    corpus, _ = bad_corpus
    out = tmp_path / "results.csv"
    out.write_text("previous results\n")
    code, _, err = cli("detect", good_images[0], corpus / "blank.png", "--out", out)
    assert code == 2 and "refused (blank_image)" in _one_clean_line(err)
    assert out.read_text() == "previous results\n"
    _no_leftovers(tmp_path)


@pytest.mark.parametrize("argv, phrase", [
    (("detect", "{good}", "--out", "{tmp}/r.txt"), "written as .csv or .jsonl"),
    (("detect", "{good}", "--batch-size", "0"), "--batch-size must be at least 1"),
    (("detect", "{tmp}/missing.png"), "no such file"),
    (("explain", "{good}", "-o", "{tmp}/o.jpg"), "name it *.png"),
    (("explain", "{good}", "-o", "{tmp}/o.png", "--alpha", "2"), "--alpha must be between 0 and 1"),
    (("compare", "{good}", "{good}", "--region", "x" * 500), "refused (bad_option)"),
    (("detect", "{empty_dir}"), "no files in this folder"),
])
def test_option_errors(cli, good_images, tmp_path, argv, phrase) -> None:
    (tmp_path / "empty").mkdir()
    args = [a.format(good=good_images[0], tmp=tmp_path, empty_dir=tmp_path / "empty") for a in argv]
    code, _, err = cli(*args)
    assert code == 2
    assert phrase in _one_clean_line(err)


def test_no_model_gives_the_demo_hint(cli, good_images, monkeypatch) -> None:
    import medic_ad.paths

    monkeypatch.setattr(medic_ad.paths, "default_checkpoint", lambda: None)
    code, _, err = cli("detect", good_images[0], model=False)
    assert code == 2
    assert _one_clean_line(err) == ("medic-ad: error: no model given and no demo checkpoint found; run `medic-ad demo` "
                                    "or pass --model DIR")


def test_broken_model_folder_is_one_line(cli, good_images, tmp_path) -> None:
    code, _, err = cli("detect", good_images[0], "--model", tmp_path, model=False)
    assert code == 2 and "not a MEDIC-AD checkpoint" in _one_clean_line(err)
