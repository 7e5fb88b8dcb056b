"""Sanity checks: every corpus file refused with its reason before decoding; real studies accepted."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from medic_ad.data.io import ImageMeta, MedicalImage
from medic_ad.serve.sanity import REASONS, Limits, SanityError, check_image, check_pair, load_checked, probe


def test_corpus_reasons(bad_corpus) -> None:
    folder, expected = bad_corpus
    assert len(expected) >= 30
    got = {}
    for name in expected:
        with pytest.raises(SanityError) as info:
            load_checked(folder / name, name=name)
        err = info.value
        assert isinstance(err, ValueError) and err.reason in REASONS
        assert "\n" not in str(err) and str(err).startswith(f"{name}: refused ({err.reason}): ")
        assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
        got[name] = err.reason
    assert got == expected


def test_huge_headers_are_refused_without_decoding(bad_corpus, monkeypatch) -> None:
    import medic_ad.serve.sanity as sanity

    def no_decoding(*a, **k):
        raise AssertionError("decoded a file whose header is over the limit")

    monkeypatch.setattr(sanity, "read_image", no_decoding)
    folder, _ = bad_corpus
    for name in ("huge_header_20000.png", "huge_header_30000.jpg", "huge_header_40000.dcm", "huge_header_volume.nii",
                 "strip_1x2000.png", "tiny_16x16.png", "page_renamed.png"):
        with pytest.raises(SanityError):
            load_checked(folder / name)


def test_real_studies_pass(shared_data, dicom_file) -> None:
    for path in [*sorted((shared_data / "br35h" / "yes").glob("*.png"))[:2],
                 *sorted((shared_data / "cxr_pairs" / "images").glob("*"))[:2],
                 dicom_file("CT_small.dcm"), dicom_file("MR_small.dcm"), dicom_file("RG1_UNCR.dcm"),
                 dicom_file("US1_UNCR.dcm")]:
        image = load_checked(path)
        assert image.pixels.std() > 0.01


def test_limits_are_configurable(good_images, tmp_path) -> None:
    p = good_images[0]
    with pytest.raises(SanityError, match="too_large"):
        probe(p, limits=Limits(max_bytes=100))
    with pytest.raises(SanityError, match="too_many_pixels"):
        probe(p, limits=Limits(max_pixels=1000))
    with pytest.raises(SanityError, match="too_small"):
        probe(p, limits=Limits(min_side=200))
    assert probe(p).size == (96, 112)
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "missing.png")


def test_gzip_bomb_is_refused(tmp_path) -> None:
    import nibabel as nib

    raw = nib.Nifti1Image(np.ones((8, 8, 8), np.int16), np.eye(4)).to_bytes()
    bomb = tmp_path / "bomb.nii.gz"
    bomb.write_bytes(gzip.compress(raw + b"\x00" * (80 * 1024 * 1024), compresslevel=1))  # 80 MB after the data
    assert bomb.stat().st_size < 1024 * 1024
    with pytest.raises(SanityError, match="decompression bomb"):
        probe(bomb)


def _img(modality=None, orientation=None, value=None) -> MedicalImage:
    px = np.random.default_rng(0).random((64, 64)).astype(np.float32) if value is None else np.full((64, 64), value,
                                                                                                    np.float32)
    return MedicalImage(px, ImageMeta(size=(64, 64), source_format="dicom", modality=modality, orientation=orientation))


def test_pair_checks() -> None:
    check_pair(_img("CT", "LPS"), _img("ct", "LPS"))
    check_pair(_img(None, None), _img("MR", "RAS"))  # unknown metadata is not a mismatch
    with pytest.raises(SanityError) as info:
        check_pair(_img("CT"), _img("MR"))
    assert info.value.reason == "modality_mismatch" and "CT" in str(info.value) and "MR" in str(info.value)
    with pytest.raises(SanityError) as info:
        check_pair(_img("CT", "LPS"), _img("CT", "LIP"))
    assert info.value.reason == "orientation_mismatch"


def test_check_image_blank_and_status_codes() -> None:
    with pytest.raises(SanityError) as info:
        check_image(_img(value=0.5))
    assert info.value.reason == "blank_image" and info.value.status_code == 422
    assert info.value.to_dict() == {"error": str(info.value), "reason": "blank_image"}
    assert SanityError("too_large", "x").status_code == 413 and SanityError("not_an_image", "x").status_code == 415
    with pytest.raises(AssertionError):
        SanityError("made_up", "x")
    assert str(SanityError("blank_image", "two\nlines")) == "refused (blank_image): two lines"
