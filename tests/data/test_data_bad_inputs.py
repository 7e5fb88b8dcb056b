"""Bad inputs give one clear, one-line error naming the file, or a counted skip - never a raw traceback."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medic_ad.data.errors import DatasetFormatError, EmptyDatasetError, ImageReadError, LoadWarning
from medic_ad.data.registry import detect_format, get_dataset, load_dataset

nib = pytest.importorskip("nibabel")


def _png_bytes(shape: tuple[int, int] = (64, 64)) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _assert_clean(info: pytest.ExceptionInfo[BaseException], path: Path, phrase: str) -> None:
    message = str(info.value)
    assert isinstance(info.value, ImageReadError) and isinstance(info.value, ValueError)
    assert str(path) in message and phrase in message, message
    assert "\n" not in message
    err = info.value
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)  # no foreign traceback


@pytest.mark.parametrize(
    ("name", "content", "phrase"),
    [
        ("empty.png", b"", "0-byte file"),
        ("x.foo", b"just some text, not an image", "unknown image format (not PNG/JPEG/TIFF/DICOM/NIfTI)"),
        ("fake.png", b"this is not a png at all", "not a valid PNG file"),
        ("fake.dcm", b"\x00" * 200, "not a valid DICOM file"),
        ("truncated.png", _png_bytes()[:300], "truncated PNG (image data ends early)"),
        ("corrupt.png", _png_bytes()[:60] + b"\xff" * 40 + _png_bytes()[100:], "corrupt PNG"),
        ("header_only.dcm", b"\x00" * 128 + b"DICM" + b"\xff" * 64, "DICOM"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: bytes, phrase: str) -> None:
    from medic_ad.data.io import read_image

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    _assert_clean(info, path, phrase)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    from medic_ad.data.io import read_image

    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="is a directory"):
        read_image(tmp_path)


def test_truncated_dicom(tmp_path: Path, make_dicom) -> None:
    from medic_ad.data.io import read_image

    path = make_dicom(tmp_path / "scan.dcm", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 4000])
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    _assert_clean(info, path, "truncated DICOM (pixel data ends early)")


def test_truncated_and_corrupt_nifti(tmp_path: Path) -> None:
    from medic_ad.data.io import read_image

    volume = np.random.default_rng(0).random((32, 32, 16)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "v.nii")
    raw = (tmp_path / "v.nii").read_bytes()

    cut = tmp_path / "cut.nii"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageReadError) as info:
        read_image(cut)
    _assert_clean(info, cut, "truncated NIfTI (voxel data ends early)")

    cut_gz = tmp_path / "cut.nii.gz"
    cut_gz.write_bytes(gzip.compress(raw)[: len(raw) // 3])
    with pytest.raises(ImageReadError) as info:
        read_image(cut_gz)
    _assert_clean(info, cut_gz, "truncated NIfTI")

    bad = tmp_path / "bad.nii"
    header = bytearray(raw[:352])
    header[40:56] = np.array([9, 1, 1, 1, 1, 1, 1, 1], dtype="<i2").tobytes()  # dim[0] = 9 is illegal
    bad.write_bytes(bytes(header) + raw[352:])
    with pytest.raises(ImageReadError) as info:
        read_image(bad)
    _assert_clean(info, bad, "NIfTI")


# ------------------------------------------------------------------ adapters: counted skips


def test_csv_row_to_missing_file_is_a_counted_skip(tmp_path: Path, write_png) -> None:
    root = tmp_path / "set"
    write_png(root / "yes" / "a.png")
    write_png(root / "no" / "b.png")
    (root / "labels.csv").write_text("path,label\nyes/a.png,abnormal\nno/b.png,normal\nyes/gone.png,abnormal\n")
    with pytest.warns(LoadWarning, match="skipped 1 of 3 row"):
        samples = load_dataset(root)
    assert len(samples) == 2
    assert samples.report.skipped == {"missing image file": 1}
    assert "gone.png" in samples.report.examples["missing image file"][0]


def test_mask_size_mismatch_is_a_counted_skip(tmp_path: Path, write_png) -> None:
    root = tmp_path / "masks_set"
    write_png(root / "images" / "1.png", (16, 16))
    write_png(root / "masks" / "1.png", (16, 16), value=255)
    write_png(root / "images" / "2.png", (16, 16))
    write_png(root / "masks" / "2.png", (8, 16), value=255)
    with pytest.warns(LoadWarning, match="mask size differs from its image"):
        samples = get_dataset("image_mask").load(root)
    assert [s.id for s in samples] == ["masks_set/images/1.png"]
    assert samples.report.skipped == {"mask size differs from its image": 1}


def test_malformed_json_line_is_a_counted_skip(tmp_path: Path, write_png, write_json) -> None:
    root = tmp_path / "pvqa"
    write_png(root / "images" / "train" / "train_0001.jpg")
    good = {"image": "train_0001", "question": "Is this benign?", "answer": "yes"}
    path = write_json(root / "qas" / "train" / "train_qa.jsonl", [good, good])
    path.write_text(path.read_text() + '{"image": "train_0002", "question": "broken\n')
    with pytest.warns(LoadWarning, match="malformed JSON line"):
        samples = load_dataset(root)
    assert len(samples) == 2 and samples.report.skipped == {"malformed JSON line": 1}
    assert samples.report.examples["malformed JSON line"] == [f"{path}:3"]


def test_malformed_json_file_is_a_clear_error(tmp_path: Path, write_png) -> None:
    root = tmp_path / "slake"
    write_png(root / "imgs" / "xmlab0" / "source.jpg")
    (root / "train.json").write_text('[{"img_name": "xmlab0/source.jpg", "q_lang": "en", ')
    with pytest.raises(DatasetFormatError, match="train.json: malformed JSON"):
        get_dataset("slake").load(root)


def test_empty_dataset_names_the_folder(tmp_path: Path, write_png) -> None:
    root = tmp_path / "empty_set"
    (root / "yes").mkdir(parents=True)
    (root / "no").mkdir()
    with pytest.raises(EmptyDatasetError, match="empty_set: no image_folder samples found"):
        get_dataset("image_folder").load(root)
    write_png(root / "images" / "1.png")
    (root / "labels.csv").write_text("path,label\nyes/gone.png,abnormal\n")
    with pytest.warns(LoadWarning), pytest.raises(EmptyDatasetError, match="missing image file"):
        get_dataset("image_folder").load(root)


def test_unknown_and_ambiguous_layouts_name_candidates(tmp_path: Path, write_png, write_json) -> None:
    unknown = tmp_path / "unknown"
    write_png(unknown / "images" / "1.png")
    with pytest.raises(DatasetFormatError, match="partly looks like image_mask") as info:
        detect_format(unknown)
    assert "image_mask" in info.value.candidates

    nothing = tmp_path / "nothing"
    nothing.mkdir()
    with pytest.raises(DatasetFormatError, match="known formats are") as info:
        detect_format(nothing)

    both = tmp_path / "both"
    (both / "images").mkdir(parents=True)
    (both / "pairs.csv").write_text("patientid,prior,current\n")
    write_json(both / "ChestX_Det_train.json", [{"file_name": "1.png", "syms": [], "boxes": [], "polygons": []}])
    with pytest.raises(DatasetFormatError, match="ambiguous layout") as info:
        detect_format(both)
    assert set(info.value.candidates) == {"chestx_det", "cxr_pairs"}

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "absent")


def test_split_of_a_dataset_without_splits_is_an_error(tmp_path: Path, write_png) -> None:
    root = tmp_path / "nosplit"
    write_png(root / "normal" / "a.png")
    write_png(root / "abnormal" / "b.png")
    with pytest.raises(ValueError, match="defines no splits"):
        load_dataset(root, split="train")


def test_missing_split_names_the_splits_there(shared_data: Path) -> None:
    with pytest.raises(EmptyDatasetError, match=r"no image_folder samples in split 'test' \(splits: train, val\)"):
        load_dataset(shared_data / "br35h", split="test")
    with pytest.raises(ValueError, match="defines no splits"):
        load_dataset(shared_data / "head_ct_dev", split="test")
