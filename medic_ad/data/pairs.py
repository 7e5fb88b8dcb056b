"""Longitudinal pairs labelled by construction, from real images with real lesion masks.

Stage 2 needs (prior, current) pairs with worsened / improved / no change labels; when none exist,
they are made from one image and its lesion mask:

1. **Attenuate the lesion** (:func:`remove_lesion`): the mask is dilated by ``margin`` pixels
   (plus ``feather``) into a *hole*; the hole is filled from its boundary inwards, ring by ring,
   each pixel taking the mean of its already-known 8-neighbours ("onion peel"), then smoothed
   inside the hole by ``smooth_steps`` diffusion steps at each of three scales (9 x 9, 5 x 5 and
   3 x 3 means); Gaussian noise at the level of the high-pass residual in a ring around the hole
   (median absolute deviation, so anatomical edges do not count) gives the fill the local grain;
   finally the fill is blended in with a feathered weight that is 1 over the lesion and its margin
   and falls to 0 over the last ``feather`` pixels of the hole.
   ``strength`` < 1 keeps a fraction of the lesion (a fainter lesion instead of none).
2. **Pair** the two states: (attenuated -> original) is *worsened*, (original -> attenuated)
   *improved*, and (original -> original) or (attenuated -> attenuated), chosen at random, *no
   change*.
3. **Change the acquisition of both images independently** (:func:`apply_acquisition`, the same
   ranges as :class:`~medic_ad.data.synthetic.Acquisition`): shift +-3 % and rotation +-5 deg
   (image bilinear, mask nearest), gamma 0.8-1.25, contrast 0.8-1.2, brightness +-0.06, noise.
   So acquisition differences never tell the label.

Everything is seeded: pair ``i`` of :class:`ChangePairs` depends only on (seed, i) and its source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import overload

import numpy as np

from medic_ad.data.io import load_image_any, load_mask
from medic_ad.data.schema import CHANGES, Change, Sample
from medic_ad.data.synthetic import Acquisition

__all__ = ["BuiltOnAccess", "ChangePairs", "apply_acquisition", "make_change_pairs", "remove_lesion"]


def _shift(a: np.ndarray, dy: int, dx: int, fill: float | bool) -> np.ndarray:
    """``a`` moved by (dy, dx) pixels, uncovered border set to ``fill``."""
    out = np.full_like(a, fill)
    h, w = a.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = a[ys, xs]
    return out


_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by ``radius`` pixels (alternating 3 x 3 box and cross: near-disc)."""
    out = mask.astype(bool)
    for step in range(radius):
        grown = out.copy()
        for dy, dx in _NEIGHBOURS:
            if step % 2 == 1 and dy and dx:  # cross on odd steps
                continue
            grown |= _shift(out, dy, dx, False)
        out = grown
    return out


def _box_blur(a: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window (edge-replicated), via an integral image."""
    if radius <= 0:
        return a.astype(np.float32)
    k = 2 * radius + 1
    padded = np.pad(a.astype(np.float64), radius + 1, mode="edge")
    c = padded.cumsum(0).cumsum(1)
    s = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return (s[: a.shape[0], : a.shape[1]] / (k * k)).astype(np.float32)


def _onion_fill(values: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Fill ``hole`` from its boundary inwards with the mean of known 8-neighbours."""
    out = np.where(hole, 0.0, values).astype(np.float32)
    known = ~hole
    while not known.all():
        total = np.zeros_like(out)
        count = np.zeros_like(out)
        for dy, dx in _NEIGHBOURS:
            total += _shift(np.where(known, out, 0.0), dy, dx, 0.0)
            count += _shift(known.astype(np.float32), dy, dx, 0.0)
        front = ~known & (count > 0)
        if not front.any():  # a hole covering the whole image: nothing to grow from
            out[~known] = float(values[~hole].mean()) if (~hole).any() else 0.0
            break
        out[front] = total[front] / count[front]
        known = known | front
    return out


def remove_lesion(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    rng: np.random.Generator,
    strength: float = 1.0,
    margin: int = 2,
    feather: int = 3,
    smooth_steps: int = 8,
) -> np.ndarray:
    """``image`` (H x W float32 in [0, 1]) with the lesion under ``mask`` inpainted away.

    Args:
        rng: source of the matched noise.
        strength: 1 removes the lesion, 0.5 halves its contrast, 0 changes nothing.
        margin: pixels the mask is grown by before filling (lesion rim, partial volume).
        feather: width in pixels of the blend between fill and image.
        smooth_steps: diffusion steps per scale (9 x 9, 5 x 5, 3 x 3 means) smoothing the fill.
    """
    if image.ndim != 2 or mask.shape != image.shape:
        raise ValueError(f"need an H x W image and a same-size mask, got {image.shape} and {mask.shape}")
    mask = mask.astype(bool)
    if not mask.any() or strength <= 0:
        return image.astype(np.float32)
    hole_full = _dilate(mask, margin + feather)
    ys, xs = np.nonzero(hole_full)
    pad = 2 * feather + 6
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, image.shape[0])
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, image.shape[1])
    crop, hole = image[y0:y1, x0:x1].astype(np.float32), hole_full[y0:y1, x0:x1]

    filled = _onion_fill(crop, hole)
    for radius in (4, 2, 1):  # coarse-to-fine diffusion washes out the onion peel's streaks
        for _ in range(smooth_steps):
            filled = np.where(hole, _box_blur(filled, radius), filled)
    ring = _dilate(hole, 6) & ~hole
    residual = (crop - _box_blur(crop, 1))[ring]
    # robust noise level (median absolute deviation): anatomical edges in the ring do not count
    sigma = float(1.4826 * np.median(np.abs(residual - np.median(residual)))) if residual.size else 0.0
    filled = np.where(hole, filled + rng.normal(0.0, sigma, crop.shape).astype(np.float32), filled)

    # 0 at the hole's edge rising to 1 ``feather`` pixels inside it, 1 over lesion and margin
    alpha = np.clip(_box_blur(hole.astype(np.float32), feather) * 2.0 - 1.0, 0.0, 1.0)
    alpha = np.where(_dilate(mask[y0:y1, x0:x1], margin), 1.0, alpha)
    out = image.astype(np.float32).copy()
    region = crop + strength * alpha * (filled - crop)
    out[y0:y1, x0:x1] = np.clip(region, 0.0, 1.0)
    return out


def _warp(a: np.ndarray, acq: Acquisition, nearest: bool, zoom: float = 1.0) -> np.ndarray:
    """``a`` rotated and shifted as ``acq`` says (normalised units: the image spans [-1, 1]), then
    magnified ``zoom`` times about the centre (a narrower field of view rescaled to the same size)."""
    h, w = a.shape
    if acq.rotation == 0.0 and acq.shift == (0.0, 0.0) and zoom == 1.0:
        return a.copy()
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    cy, cx, scale = (h - 1) / 2.0, (w - 1) / 2.0, max(h, w) / 2.0
    x, y = (xx - cx) / scale - acq.shift[0], (yy - cy) / scale - acq.shift[1]
    c, s = float(np.cos(-acq.rotation)), float(np.sin(-acq.rotation))
    scale_in = scale / zoom
    sx, sy = (c * x - s * y) * scale_in + cx, (s * x + c * y) * scale_in + cy
    inside = (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
    sx, sy = np.clip(sx, 0, w - 1), np.clip(sy, 0, h - 1)
    if nearest:
        out = a[np.round(sy).astype(np.intp), np.round(sx).astype(np.intp)]
        return np.where(inside, out, 0).astype(a.dtype)
    x0, y0 = np.minimum(sx.astype(np.intp), w - 2), np.minimum(sy.astype(np.intp), h - 2)
    fx, fy = sx - x0, sy - y0
    top = a[y0, x0] * (1 - fx) + a[y0, x0 + 1] * fx
    bottom = a[y0 + 1, x0] * (1 - fx) + a[y0 + 1, x0 + 1] * fx
    return np.where(inside, top * (1 - fy) + bottom * fy, 0.0).astype(np.float32)


def apply_acquisition(
    image: np.ndarray, mask: np.ndarray, acq: Acquisition, rng: np.random.Generator, *, zoom: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """``image`` and ``mask`` under a new acquisition: geometry on both, intensities on the image.
    ``zoom`` > 1 narrows the field of view (a central crop 1/zoom wide, rescaled to the image size)."""
    warped = _warp(image.astype(np.float32), acq, nearest=False, zoom=zoom)
    warped_mask = _warp(mask.astype(np.uint8), acq, nearest=True, zoom=zoom)
    out = np.clip(warped, 0.0, 1.0) ** acq.gamma * acq.gain + acq.bias
    out = out + acq.noise * rng.standard_normal(out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32), warped_mask.astype(np.uint8)


def _grey(x: object) -> np.ndarray:
    pixels = load_image_any(x).pixels  # type: ignore[arg-type]
    return pixels if pixels.ndim == 2 else pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


class BuiltOnAccess(Sequence[Sample]):
    """A sequence of samples built on access from their index (:meth:`_item`, given ``0 <= i < len``):
    indexing with negatives and slices, and one readable error out of range."""

    def _item(self, i: int) -> Sample:
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> Sample: ...

    @overload
    def __getitem__(self, i: slice) -> list[Sample]: ...

    def __getitem__(self, i: int | slice) -> Sample | list[Sample]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range ({len(self)} samples)")
        return self._item(i % len(self))


class ChangePairs(BuiltOnAccess):
    """Lazily built change pairs: ``len(kinds)`` pairs per source sample, built on access.

    Args:
        sources: samples with one image and a lesion mask (e.g. ``br35h_masks``, BMAD Ungood).
        seed: seed of every random choice; pair ``i`` is the same on every access.
        kinds: change labels to make per source, cycled in this order.
        strength: lesion attenuation, a number or a (low, high) range drawn per pair.
        validate: load every mask now and reject sources without a lesion.
    """

    def __init__(
        self,
        sources: Sequence[Sample],
        *,
        seed: int = 0,
        kinds: Sequence[Change] = CHANGES,
        strength: float | tuple[float, float] = 1.0,
        validate: bool = True,
    ) -> None:
        if not kinds or any(k not in CHANGES for k in kinds):
            raise ValueError(f"kinds must be a non-empty subset of {CHANGES}, got {kinds}")
        for s in sources:
            if s.is_pair or s.masks[0] is None:
                raise ValueError(f"{s.id}: a pair source needs one image and its lesion mask")
            if validate and not load_mask(s.masks[0]).any():
                raise ValueError(f"{s.id}: mask is empty, no lesion to attenuate")
        self.sources = list(sources)
        self.seed = seed
        self.kinds = tuple(kinds)
        self.strength = strength

    def __len__(self) -> int:
        return len(self.sources) * len(self.kinds)

    def _item(self, i: int) -> Sample:
        return self._build(i, self.sources[i // len(self.kinds)], self.kinds[i % len(self.kinds)])

    def _build(self, i: int, source: Sample, kind: Change) -> Sample:
        rng = np.random.default_rng([self.seed, i])
        image = _grey(source.images[0])
        mask = load_mask(source.masks[0], size=image.shape)  # type: ignore[arg-type]
        if isinstance(self.strength, tuple):
            strength = float(rng.uniform(*self.strength))
        else:
            strength = float(self.strength)
        attenuated = remove_lesion(image, mask, rng=rng, strength=strength)
        faded_mask = mask if strength < 1.0 else np.zeros_like(mask)
        states = {"original": (image, mask), "attenuated": (attenuated, faded_mask)}
        if kind == "worsened":
            order = ("attenuated", "original")
        elif kind == "improved":
            order = ("original", "attenuated")
        else:
            state = "original" if rng.uniform() < 0.5 else "attenuated"
            order = (state, state)
        images, masks, acqs = [], [], []
        for state in order:
            acq = Acquisition.random(rng)
            img, msk = apply_acquisition(*states[state], acq, rng)
            images.append(img)
            masks.append(msk)
            acqs.append(acq)
        return Sample(
            id=f"pairs/{source.id}/{kind.replace(' ', '_')}",
            images=images,
            masks=masks,
            label="abnormal" if masks[1].any() else "normal",
            change=kind,
            region=source.region,
            dataset=f"{source.dataset}_pairs",
            split=source.split,
            group=source.group or source.id,
            meta={
                "source": source.id,
                "states": list(order),
                "strength": strength,
                "acquisition": [asdict(a) for a in acqs],
            },
        )


def make_change_pairs(sources: Sequence[Sample], *, seed: int = 0, **kwargs: object) -> list[Sample]:
    """All pairs of :class:`ChangePairs` built eagerly (fine for small source sets)."""
    return list(ChangePairs(sources, seed=seed, **kwargs))  # type: ignore[arg-type]
