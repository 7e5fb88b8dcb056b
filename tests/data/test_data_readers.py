"""Readers: PNG/JPEG/TIFF decoding and scaling, content sniffing, any-input loading, masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medic_ad.data.errors import ImageReadError
from medic_ad.data.io import (
    ImageMeta,
    MedicalImage,
    image_size,
    load_image_any,
    load_mask,
    read_image,
    sniff_format,
    window_from_center_width,
)


# ------------------------------------------------------------------ PNG / JPEG / TIFF


def test_png_8bit_grey_is_divided_by_255(tmp_path: Path) -> None:
    arr = np.array([[0, 128, 255]], dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.pixels.dtype == np.float32
    np.testing.assert_allclose(img.pixels, arr / 255.0, atol=1e-6)
    assert img.meta == ImageMeta(size=(1, 3), source_format="png", photometric="MONOCHROME2")


@pytest.mark.parametrize(("top", "scale"), [(4095, 4095), (1000, 1023), (40000, 65535)])
def test_png_16bit_scaled_by_its_bit_depth(tmp_path: Path, top: int, scale: int) -> None:
    arr = np.array([[0, top // 2, top]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    np.testing.assert_allclose(img.pixels, arr / scale, atol=1e-6)


def test_png_rgb_rgba_palette(tmp_path: Path) -> None:
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert read_image(tmp_path / "rgb.png").pixels.shape == (4, 5, 3)

    grey_rgb = np.repeat(np.arange(20, dtype=np.uint8).reshape(4, 5, 1), 3, axis=2)
    Image.fromarray(grey_rgb).save(tmp_path / "grey_rgb.png")
    collapsed = read_image(tmp_path / "grey_rgb.png")
    assert collapsed.pixels.shape == (4, 5)  # identical channels -> grey, losslessly

    rgba = np.dstack([rgb, np.array([[0, 255, 255, 255, 255]] * 4, dtype=np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    px = read_image(tmp_path / "rgba.png").pixels
    assert px.shape == (4, 5, 3) and px[0, 0].max() == 0.0 and px[0, 1, 0] == pytest.approx(200 / 255)

    pal = Image.fromarray(np.arange(20, dtype=np.uint8).reshape(4, 5) % 3).convert("P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    pal.save(tmp_path / "pal.png")
    img = read_image(tmp_path / "pal.png")
    assert img.meta.photometric == "PALETTE" and img.pixels.shape == (4, 5, 3)


def test_jpeg_and_tiff_variants(tmp_path: Path) -> None:
    grey = (np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)
    Image.fromarray(grey).save(tmp_path / "a.jpg", quality=95)
    jpg = read_image(tmp_path / "a.jpg")
    assert jpg.meta.source_format == "jpeg" and jpg.pixels.shape == (64, 64)

    deep = (np.arange(32 * 32, dtype=np.uint16) * 60).reshape(32, 32)
    Image.fromarray(deep).save(tmp_path / "a.tif")
    tif = read_image(tmp_path / "a.tif")
    assert tif.meta.source_format == "tiff"
    np.testing.assert_allclose(tif.pixels, deep / 65535.0, atol=1e-6)

    floats = np.linspace(-5, 5, 16, dtype=np.float32).reshape(4, 4)
    Image.fromarray(floats).save(tmp_path / "f.tif")
    px = read_image(tmp_path / "f.tif").pixels
    assert px.min() == 0.0 and px.max() == 1.0

    pages = [Image.fromarray(np.full((8, 8), v, dtype=np.uint8)) for v in (10, 200)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    assert read_image(tmp_path / "pages.tif").meta.n_frames == 2
    assert read_image(tmp_path / "pages.tif", frame=1).pixels[0, 0] == pytest.approx(200 / 255)
    with pytest.raises(ImageReadError, match="frame 2 out of range"):
        read_image(tmp_path / "pages.tif", frame=2)


def test_format_is_sniffed_from_content_not_extension(tmp_path: Path, make_dicom) -> None:
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "really_png.jpg", format="PNG")
    assert read_image(tmp_path / "really_png.jpg").meta.source_format == "png"
    make_dicom(tmp_path / "scan.png", np.zeros((4, 4), dtype=np.uint16))
    assert sniff_format(tmp_path / "scan.png") == "dicom"
    assert read_image(tmp_path / "scan.png").meta.source_format == "dicom"


def test_window_overrides_default_scaling(tmp_path: Path) -> None:
    Image.fromarray(np.array([[50, 100, 150]], dtype=np.uint8)).save(tmp_path / "a.png")
    px = read_image(tmp_path / "a.png", window=(100, 150)).pixels
    np.testing.assert_allclose(px, [[0.0, 0.0, 1.0]])
    assert window_from_center_width(40, 80) == (0.0, 80.0)
    with pytest.raises(ValueError):
        read_image(tmp_path / "a.png", window=(5, 5))


# ------------------------------------------------------------------ any input, masks, sizes


def test_load_image_any_accepts_every_input(tmp_path: Path) -> None:
    arr = np.array([[0, 255]], dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    from_path = load_image_any(str(tmp_path / "a.png"))
    assert load_image_any(from_path) is from_path
    np.testing.assert_allclose(load_image_any(Image.fromarray(arr)).pixels, [[0, 1]])
    np.testing.assert_allclose(load_image_any(arr).pixels, [[0, 1]])
    np.testing.assert_allclose(load_image_any(np.array([[0, 4095]], dtype=np.uint16)).pixels, [[0, 1]])
    np.testing.assert_allclose(load_image_any(np.array([[0.25, 0.5]])).pixels, [[0.25, 0.5]])
    np.testing.assert_allclose(load_image_any(np.array([[-3.0, 1.0]])).pixels, [[0, 1]])
    assert load_image_any(np.zeros((2, 3, 1), dtype=np.uint8)).pixels.shape == (2, 3)
    assert load_image_any(np.zeros((2, 3, 4), dtype=np.uint8)).pixels.shape == (2, 3, 3)
    assert load_image_any(np.zeros((2, 3), dtype=bool)).meta.source_format == "array"
    with pytest.raises(ValueError):
        load_image_any(np.zeros((2, 3, 5)))
    with pytest.raises(TypeError):
        load_image_any([[0, 1]])  # type: ignore[arg-type]


def test_medical_image_conversions_and_validation() -> None:
    img = load_image_any(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    np.testing.assert_array_equal(img.to_uint8(), [[0, 128, 255]])
    pil = img.to_pil()
    assert pil.mode == "RGB" and pil.size == (3, 1)
    assert "shape=(1, 3)" in repr(img)
    with pytest.raises(ValueError):
        MedicalImage(np.array([[1.5]], dtype=np.float32), img.meta)


def test_load_mask_and_image_size(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 255], [0, 0]], dtype=np.uint8)).save(tmp_path / "m255.png")
    Image.fromarray(np.array([[0, 1], [0, 0]], dtype=np.uint8)).save(tmp_path / "m1.png")
    for name in ("m255.png", "m1.png"):
        mask = load_mask(tmp_path / name)
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, [[0, 1], [0, 0]])
    assert image_size(tmp_path / "m1.png") == (2, 2)
    with pytest.raises(ValueError, match="differs"):
        load_mask(tmp_path / "m1.png", size=(3, 3))


def test_real_png_from_shared_data(shared_data: Path) -> None:
    img = read_image(shared_data / "br35h" / "yes" / "y0.png")
    assert img.meta.size == (256, 211) and img.pixels.ndim == 2
    mask = load_mask(shared_data / "br35h_masks" / "masks" / "y0.png")
    assert mask.shape == (256, 211) and set(np.unique(mask)) == {0, 1}
