"""Overlays and the change map, tested by their properties."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from medic_ad.serve.files import atomic_write_bytes
from medic_ad.serve.overlay import (MASK_COLOUR, blend, change_map, comparison_png, heatmap_png, outline, overlay_png,
                                    resize_map)


def _grey(h=64, w=80):
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx + yy) / (h + w)).astype(np.float32)


def test_blend_opacity_and_peak() -> None:
    img = _grey()
    heat = np.zeros_like(img)
    heat[10:20, 30:40] = 1.0
    none, full = blend(img, heat, alpha=0.0), blend(img, heat, alpha=1.0)
    assert none.dtype == np.uint8 and none.shape == (64, 80, 3)
    assert np.array_equal(none[..., 0], np.round(img * 255).astype(np.uint8))
    # inferno: 1.0 is bright yellow, 0.0 near black
    assert full[15, 35].mean() > 150 and full[50, 5].mean() < 30
    assert np.array_equal(blend(none, heat, alpha=0.0), none)  # uint8 RGB passes through unchanged


def test_change_map_sign_and_size() -> None:
    prior = np.full((32, 40), 0.2, np.float32)
    current = np.full((64, 80), 0.2, np.float32)
    current[:32] = 0.9
    change = change_map(prior, current)
    assert change.shape == (64, 80) and change.dtype == np.float32
    assert np.allclose(change[:30], 0.7, atol=1e-5) and np.allclose(change[34:], 0, atol=1e-5)
    assert resize_map(prior, (64, 80)).shape == (64, 80)


def test_pngs_have_colour_bars() -> None:
    img, heat = _grey(), np.random.default_rng(0).random((64, 80)).astype(np.float32)
    png = overlay_png(img, heat, alpha=0.5, title="t")
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.width > im.height  # image plus a colour bar at its side
        assert im.text == {}  # no text chunks: nothing can ride along
    side = comparison_png(img, img, heat, heat[::-1], alpha=0.5, title="worsened")
    with Image.open(io.BytesIO(side)) as im:
        arr = np.asarray(im.convert("RGB")).astype(int)
        assert im.width > 2.5 * im.height
        # the diverging bar holds both a red and a blue end
        red = (arr[..., 0] > 150) & (arr[..., 2] < 80)
        blue = (arr[..., 2] > 150) & (arr[..., 0] < 80)
        assert red.any() and blue.any()
    with Image.open(io.BytesIO(heatmap_png(heat))) as im:
        assert im.mode == "L" and im.size == (80, 64)


def test_mask_outline_panel() -> None:
    img, heat = _grey(), np.zeros((64, 80), np.float32)
    mask = np.zeros((64, 80), np.uint8)
    mask[20:40, 30:50] = 1
    grey_u8 = np.repeat((img * 255).astype(np.uint8)[..., None], 3, axis=2)
    drawn = outline(grey_u8, mask)
    edge = (drawn == MASK_COLOUR).all(-1)
    assert edge[20, 40] and edge[39, 30] and not edge[30, 40] and not edge[5, 5]  # the border only, inside
    assert np.array_equal(drawn[~edge], grey_u8[~edge])
    assert outline(grey_u8, np.zeros((32, 40), np.uint8)).tolist() == grey_u8.tolist()  # no lesion: no line
    plain, three = overlay_png(img, heat, title=None), overlay_png(img, heat, title=None, mask=mask)
    with Image.open(io.BytesIO(plain)) as a, Image.open(io.BytesIO(three)) as b:
        assert b.height == a.height and b.width > 2 * a.width  # image | heatmap + bar | mask outline
        assert (np.asarray(b.convert("RGB")) == MASK_COLOUR).all(-1).any()


def test_atomic_write(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.png"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two" and [p.name for p in target.parent.iterdir()] == ["x.png"]
