"""Chest X-ray change pairs with a synthetic airspace opacity, labelled by construction.

Real frontal chest X-rays carry no change labels; these pairs get theirs from an opacity painted
onto one base image in two states (prior, current):

=========  ==========================================  ===========
state      opacity prior -> current                    change
=========  ==========================================  ===========
appear     none -> present                             worsened
grow       area a -> a x 1.8-3.6                       worsened
shrink     area a -> a x 0.2-0.49                      improved
resolve    present -> none                             improved
stay       the same opacity (texture jittered 5 %)     no change
clear      none -> none                                no change
=========  ==========================================  ===========

``clear`` is a quarter of the no-change pairs: without it "no opacity in the prior" would always
mean worsened and "none in the current" always improved, a shortcut that needs no comparison.

**Lung fields** (:func:`lung_fields`) are a crude estimate: two ellipses where frontal films put
the lungs (centres at 29 % and 71 % of the width, 47 % of the height; semi-axes 19 % x 32 %), in
each the pixels darker (after a 2 % blur) than that ellipse's 60th percentile, smoothed; when that
leaves under 5 % of the image the ellipses themselves are used. Lungs are the dark air-filled part
of the chest; mediastinum, diaphragm, shoulders and soft tissue are brighter.

**The opacity** is a level set of a field ``phi`` = (anisotropic distance to a centre inside the
lungs, radius modulated by harmonics 2-4) - 0.3 x (smooth noise): irregular, with satellite
islands at its rim. It is clipped to the lung fields, and its threshold is the k-th smallest
``phi`` in the lungs, k the drawn area (the larger state 4-15 % of the lung area; the smaller state
of grow / shrink at least 1.5 %): the two states' areas have exactly the drawn ratio, and the
smaller state lies inside the larger one. Pixels are brightened by
``density x weight x texture x (1 - pixel)``: density 0.25-0.5, an ill-defined edge (the weight
fades from 1 well inside the mask to 0 about 20 % of the radius outside it), faded at the lung
boundary, and a two-scale texture (0.5-1.5) so it looks mottled rather than flat. Vessels stay
visible under it, as in ground-glass and early consolidation.

**Re-acquisition** of prior and current independently (:func:`~medic_ad.data.pairs.apply_acquisition`
with :meth:`~medic_ad.data.synthetic.Acquisition.random`): shift +-3 %, rotation +-5 deg, gamma
0.8-1.25, contrast 0.8-1.2, brightness +-0.06, noise 0.005-0.03, and a field of view narrowed by a
zoom of 1.0-1.15 (crop and rescale). So acquisition never tells the label.

The masks are the opacity's (empty where there is none), after the same geometry as the image.
The base images come from patients with real disease (COVID-19, SARS): an empty mask does not mean
a normal film, so the samples carry no image label.

Pair ``i`` of :class:`OpacityPairs` depends only on (seed, i) and the source list: its change is
``CHANGES[i % 3]`` (balanced), its base image ``sources[(i // 3) % len(sources)]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from medic_ad.data.io import load_image_any
from medic_ad.data.pairs import BuiltOnAccess, _box_blur, apply_acquisition
from medic_ad.data.schema import CHANGES, Change, Sample
from medic_ad.data.synthetic import Acquisition

__all__ = ["OpacityPairs", "STATES", "base_images", "lung_fields", "opacity_field"]

# what each (prior -> current) state of the opacity means
STATES: dict[str, Change] = {
    "appear": "worsened", "grow": "worsened", "shrink": "improved", "resolve": "improved",
    "stay": "no change", "clear": "no change",
}
GROW = (1.8, 3.6)
SHRINK = (0.2, 0.49)
LESION_SHARE = (0.04, 0.15)  # larger state's area / lung area
MIN_SHARE = 0.015  # the smaller state of grow / shrink stays visible at 168 px: >= 1.5 % of the lungs
DENSITY = (0.25, 0.5)
ZOOM = (1.0, 1.15)
STAY_JITTER = 0.05


def _resample(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation matrix, its tent widened when shrinking (anti-aliased)."""
    support = max(1.0, n_in / n_out)
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    w = np.maximum(0.0, 1.0 - np.abs(np.arange(n_in)[None, :] - centres[:, None]) / support)
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def _resize_longest(image: np.ndarray, size: int | None) -> np.ndarray:
    h, w = image.shape
    if size is None or max(h, w) == size:
        return image.astype(np.float32)
    f = size / max(h, w)
    oh, ow = max(1, round(h * f)), max(1, round(w * f))
    return _resample(h, oh) @ image.astype(np.float32) @ _resample(w, ow).T


def _ellipses(shape: tuple[int, int]) -> list[np.ndarray]:
    """Where frontal films put the right and left lung (fractions of the width and height)."""
    h, w = shape
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    return [((xx - cx) / 0.19) ** 2 + ((yy - 0.47) / 0.32) ** 2 <= 1.0 for cx in (0.29, 0.71)]


def lung_fields(image: np.ndarray) -> np.ndarray:
    """A crude boolean lung-field estimate of a frontal chest X-ray (see the module docstring)."""
    h, w = image.shape
    blurred = _box_blur(image, max(1, round(0.02 * max(h, w))))
    lungs = np.zeros((h, w), dtype=bool)
    sides = _ellipses((h, w))
    for side in sides:
        lungs |= side & (blurred <= np.percentile(blurred[side], 60))
    lungs = _box_blur(lungs.astype(np.float32), max(1, round(0.015 * max(h, w)))) > 0.5
    if lungs.mean() < 0.05:
        lungs = sides[0] | sides[1]
    return lungs


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], radius: int) -> np.ndarray:
    """Zero-mean unit-variance noise blurred twice over ``radius`` (a tent-shaped kernel)."""
    n = _box_blur(_box_blur(rng.standard_normal(shape).astype(np.float32), radius), radius)
    return (n - n.mean()) / (n.std() + 1e-8)


def opacity_field(rng: np.random.Generator, lungs: np.ndarray) -> tuple[np.ndarray, float]:
    """(phi, nominal radius in pixels): the opacity is ``phi <= t`` for a threshold ``t`` near 1."""
    h, w = lungs.shape
    inner = _box_blur(lungs.astype(np.float32), max(1, round(0.04 * max(h, w)))) > 0.99
    ys, xs = np.nonzero(inner if inner.any() else lungs)
    k = int(rng.integers(len(ys)))
    cy, cx = float(ys[k]), float(xs[k])
    radius = float(np.sqrt(lungs.sum() * 0.08 / np.pi))
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    angle, ratio = rng.uniform(0, np.pi), rng.uniform(0.6, 1.0)  # elongated, any orientation
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = (-(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)) / ratio
    theta = np.arctan2(v, u)
    wobble = sum(rng.uniform(0.05, 0.15) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4))
    phi = np.hypot(u, v) / radius / (1.0 + wobble) - 0.3 * _smooth_noise(rng, (h, w), max(1, round(radius / 4)))
    return phi.astype(np.float32), radius


def _threshold(phi: np.ndarray, lungs: np.ndarray, area: float) -> float:
    """The ``t`` whose mask ``(phi <= t) & lungs`` has ``area`` pixels (the nearest a level set can)."""
    values = np.sort(phi[lungs])
    k = int(np.clip(round(area), 1, len(values)))
    return float(values[k - 1])


def _texture(rng: np.random.Generator, shape: tuple[int, int], radius: float) -> np.ndarray:
    coarse = _smooth_noise(rng, shape, max(1, round(radius / 5)))
    fine = _smooth_noise(rng, shape, 1)
    return np.clip(1.0 + 0.18 * coarse + 0.06 * fine, 0.5, 1.5).astype(np.float32)


def _paint(image: np.ndarray, phi: np.ndarray, t: float, radius: float, lung_soft: np.ndarray,
           texture: np.ndarray, density: float) -> tuple[np.ndarray, np.ndarray]:
    """(image with the opacity ``phi <= t`` painted on, its mask)."""
    # ill-defined edge (airspace disease, not a mass): the weight fades out over ``outer`` beyond the
    # mask and rises to full density over ``inner`` within it (phi units, ~ fractions of the radius)
    scale = np.sqrt(max(t, 0.05))
    outer, inner = max(0.2 * scale, 2.0 / radius), 0.5 * scale
    weight = np.clip((t + outer - phi) / (outer + inner), 0.0, 1.0)
    weight = _box_blur(weight * weight * (3.0 - 2.0 * weight), max(1, round(radius / 10))) * lung_soft
    out = image + density * weight * texture * (1.0 - image)
    return np.clip(out, 0.0, 1.0).astype(np.float32), (phi <= t)


def _grey(x: object) -> np.ndarray:
    pixels = load_image_any(x).pixels  # type: ignore[arg-type]
    return pixels if pixels.ndim == 2 else pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def base_images(samples: Sequence[Sample]) -> list[Sample]:
    """Each distinct image of ``samples`` (pairs or single images) once, as a one-image sample that
    keeps its sample's split, group, dataset and view."""
    seen: set[Path] = set()
    out = []
    for s in samples:
        for image in s.images:
            if not isinstance(image, Path) or image in seen:
                continue
            seen.add(image)
            out.append(Sample(id=f"{s.dataset}/{image.name}", images=[image], dataset=s.dataset, split=s.split,
                              group=s.group, meta={"view": s.meta.get("view")}))
    return out


class OpacityPairs(BuiltOnAccess):
    """Lazily built opacity change pairs (see the module docstring), ``n`` of them.

    Args:
        sources: one-image samples of frontal chest X-rays (:func:`base_images` makes them from pairs).
        seed: seed of every random choice; pair ``i`` is the same on every access.
        n: number of pairs (default three per source: each source once per change).
        size: longest side the base image is resampled to before painting (None: as stored).
    """

    def __init__(self, sources: Sequence[Sample], *, seed: int = 0, n: int | None = None,
                 size: int | None = 256) -> None:
        for s in sources:
            if s.is_pair:
                raise ValueError(f"{s.id}: an opacity pair source is one image (use base_images for pairs)")
        if not sources:
            raise ValueError("no source image to build opacity pairs from")
        self.sources = list(sources)
        self.seed = seed
        self.n = len(self.sources) * len(CHANGES) if n is None else int(n)
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.size = size

    def __len__(self) -> int:
        return self.n

    def _item(self, i: int) -> Sample:
        return self._build(i)

    def change_of(self, i: int) -> Change:
        return CHANGES[i % len(CHANGES)]  # type: ignore[return-value]

    def source_of(self, i: int) -> Sample:
        return self.sources[(i // len(CHANGES)) % len(self.sources)]

    def pair_id(self, i: int) -> str:
        """The id of pair ``i`` without building it."""
        return f"opacity/{self.source_of(i).id}/{i}_{self.change_of(i).replace(' ', '_')}"

    def _build(self, i: int) -> Sample:
        rng = np.random.default_rng([self.seed, i])
        change, source = self.change_of(i), self.source_of(i)
        if change == "worsened":
            state = "appear" if rng.uniform() < 0.5 else "grow"
        elif change == "improved":
            state = "resolve" if rng.uniform() < 0.5 else "shrink"
        else:
            state = "clear" if rng.uniform() < 0.25 else "stay"
        image = _resize_longest(_grey(source.images[0]), self.size)
        lungs = lung_fields(image)
        phi, radius = opacity_field(rng, lungs)
        lung_soft = _box_blur(lungs.astype(np.float32), 2)
        texture = _texture(rng, image.shape, radius)
        density = float(rng.uniform(*DENSITY))
        factor = float({"grow": rng.uniform(*GROW), "shrink": rng.uniform(*SHRINK)}.get(state, 1.0))
        smaller = min(factor, 1.0 / factor)  # the smaller state's area / the larger's
        big = float(rng.uniform(max(LESION_SHARE[0], MIN_SHARE / smaller), LESION_SHARE[1])) * lungs.sum()
        # area of the (prior, current) opacity; 0 means none
        areas = {"appear": (0.0, big), "grow": (big / factor, big), "shrink": (big, big * factor),
                 "resolve": (big, 0.0), "stay": (big, big), "clear": (0.0, 0.0)}[state]
        states, true_areas = [], []
        for k, area in enumerate(areas):
            if area <= 0:
                states.append((image, np.zeros(image.shape, dtype=np.uint8)))
                true_areas.append(0)
                continue
            tex = texture
            if state == "stay" and k == 1:
                tex = texture * (1.0 + STAY_JITTER * _smooth_noise(rng, image.shape, 1))
            t = _threshold(phi, lungs, area)
            painted, mask = _paint(image, phi, t, radius, lung_soft, tex, density)
            mask &= lungs
            states.append((painted, mask.astype(np.uint8)))
            true_areas.append(int(mask.sum()))
        images, masks, acqs = [], [], []
        for img, msk in states:
            acq, zoom = Acquisition.random(rng), float(rng.uniform(*ZOOM))
            img, msk = apply_acquisition(img, msk, acq, rng, zoom=zoom)
            images.append(img)
            masks.append(msk)
            acqs.append({**asdict(acq), "zoom": zoom})
        return Sample(
            id=self.pair_id(i),
            images=images,
            masks=masks,
            change=change,
            region=None,
            dataset=f"{source.dataset}_opacity",
            split=source.split,
            group=source.group or source.id,
            meta={
                "source": source.id,
                "state": state,
                "areas": true_areas,  # opacity pixels before re-acquisition (prior, current)
                "lung_area": int(lungs.sum()),
                "density": density,
                "acquisition": acqs,
            },
        )


class OpacityImages(BuiltOnAccess):
    """Single chest X-rays with a synthetic opacity and its mask, for stages 1 and 3: the current film
    of each worsened pair of an :class:`OpacityPairs` (every one has an opacity).

    Compare reads the anomaly maps' lesion burden of the two studies; maps that never saw an
    opacity do not mark one, so stage 1 is shown the same opacities that stage 2 compares.
    """

    def __init__(self, pairs: OpacityPairs) -> None:
        self.pairs = pairs
        self.worsened = CHANGES.index("worsened")

    @property
    def sources(self) -> list[Sample]:
        return self.pairs.sources

    def __len__(self) -> int:
        return len(self.pairs) // len(CHANGES)

    def image_id(self, i: int) -> str:
        return self.pairs.pair_id(i * len(CHANGES) + self.worsened) + "/current"

    def _item(self, i: int) -> Sample:
        pair = self.pairs[i * len(CHANGES) + self.worsened]
        return Sample(id=pair.id + "/current", images=[pair.images[1]], masks=[pair.masks[1]], label="abnormal",
                      dataset=pair.dataset, split=pair.split, group=pair.group, meta=pair.meta)
