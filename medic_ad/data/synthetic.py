"""A synthetic control set: anatomy-like grey images with lesions whose masks are known exactly.

Every image is rendered analytically from one subject's parameters: an elliptical "skull" rim
around textured tissue (two octaves of smooth noise) with two dark "ventricles"; lesions are
star-shaped blobs (a radius with random 2nd-4th harmonics), bright or dark, solid or
ring-enhancing, with a soft edge. Acquisition changes are applied *while rendering*: the
coordinates are rotated and shifted (so images and masks stay exactly aligned, no resampling),
then gain, bias, gamma and noise act on the intensities.

* :meth:`SyntheticControl.detection` - balanced normal/abnormal images (normals get empty masks);
* :meth:`SyntheticControl.segmentation` - abnormal images with masks;
* :meth:`SyntheticControl.pairs` - prior/current pairs of one subject, balanced worsened /
  improved / no change: the lesion grows (x1.35-1.9), shrinks (x0.3-0.7, or resolves) or stays,
  while each image gets its own acquisition. Masks for both images.

Sample ``i`` depends only on (seed, task, i): deterministic, and independent of ``n``. Images are
float32 arrays in [0, 1], masks uint8 0/1.
"""

from __future__ import annotations

from collections.abc import Sequence

from dataclasses import asdict, dataclass

import numpy as np

from medic_ad.data.schema import CHANGES, Sample

__all__ = ["Acquisition", "SyntheticControl"]

DATASET = "synthetic"
_TASK_CODE = {"detection": 1, "segmentation": 2, "pairs": 3}


@dataclass(frozen=True)
class Acquisition:
    """How one image was acquired: geometry (normalised units, radians) and intensity mapping."""

    shift: tuple[float, float] = (0.0, 0.0)
    rotation: float = 0.0
    gain: float = 1.0
    bias: float = 0.0
    gamma: float = 1.0
    noise: float = 0.0

    @classmethod
    def random(cls, rng: np.random.Generator) -> Acquisition:
        """Contrast 0.8-1.2, brightness +-0.06, gamma 0.8-1.25, shift +-3 %, rotation +-5 deg, noise <= 0.03."""
        return cls(
            shift=(float(rng.uniform(-0.06, 0.06)), float(rng.uniform(-0.06, 0.06))),
            rotation=float(rng.uniform(-0.09, 0.09)),
            gain=float(rng.uniform(0.8, 1.2)),
            bias=float(rng.uniform(-0.06, 0.06)),
            gamma=float(np.exp(rng.uniform(np.log(0.8), np.log(1.25)))),
            noise=float(rng.uniform(0.005, 0.03)),
        )


@dataclass(frozen=True)
class _Lesion:
    center: tuple[float, float]
    radius: float
    harmonics: tuple[tuple[float, float], ...]  # (amplitude, phase) for k = 2, 3, 4
    contrast: float  # signed: bright > 0, dark < 0
    ring: bool

    def scaled(self, factor: float) -> _Lesion:
        return _Lesion(self.center, self.radius * factor, self.harmonics, self.contrast, self.ring)


@dataclass(frozen=True)
class _Subject:
    center: tuple[float, float]
    axes: tuple[float, float]
    angle: float
    rim: float
    tissue: float
    skull: float
    texture: np.ndarray  # 14 x 14 control grid of smooth noise (two octaves)
    ventricle: tuple[float, float, float]  # x offset, semi-axis x, semi-axis y


def _two_octaves(rng: np.random.Generator, fine: int = 14, coarse: int = 6) -> np.ndarray:
    """A fine control grid: coarse noise (amplitude 0.06) interpolated onto it plus fine noise (0.03)."""
    low = rng.standard_normal((coarse, coarse))
    pos = np.linspace(0, coarse - 1, fine)
    # separable linear interpolation of the coarse grid onto the fine one
    weights = np.maximum(0.0, 1.0 - np.abs(pos[:, None] - np.arange(coarse)[None, :]))
    up = weights @ low @ weights.T
    return (0.06 * up + 0.03 * rng.standard_normal((fine, fine))).astype(np.float32)


class SyntheticControl:
    """Seeded generator of synthetic detection, segmentation and change-pair samples.

    Args:
        size: image side in pixels.
        seed: base seed; the same seed always gives the same samples.
    """

    def __init__(self, size: int = 112, seed: int = 0) -> None:
        if size < 16:
            raise ValueError(f"size must be at least 16, got {size}")
        self.size = size
        self.seed = seed
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
        self._y, self._x = np.meshgrid(coords, coords, indexing="ij")
        self._edge = 1.5 * 2.0 / size  # soft-edge width: 1.5 pixels in normalised units

    # ---------------------------------------------------------------- public API

    def detection(self, n: int, *, abnormal_fraction: float = 0.5) -> list[Sample]:
        """``n`` images, ``round(n * abnormal_fraction)`` abnormal (interleaved), each with its mask."""
        return list(self.lazy("detection", n, abnormal_fraction=abnormal_fraction))

    def segmentation(self, n: int) -> list[Sample]:
        """``n`` abnormal images with lesion masks."""
        return list(self.lazy("segmentation", n))

    def pairs(self, n: int) -> list[Sample]:
        """``n`` (prior, current) pairs cycling worsened / improved / no change, masks for both."""
        return list(self.lazy("pairs", n))

    def lazy(self, kind: str, n: int, *, abnormal_fraction: float = 0.5) -> SyntheticSamples:
        """The same samples as ``detection``/``segmentation``/``pairs``, each rendered on access
        (training mixtures draw a few thousand of them without rendering them all up front)."""
        if kind not in ("detection", "segmentation", "pairs"):
            raise ValueError(f"kind must be detection, segmentation or pairs, got {kind!r}")
        return SyntheticSamples(self, kind, n, abnormal_fraction)

    # ---------------------------------------------------------------- sampling

    def _rng(self, task: str, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _TASK_CODE[task], i])

    def _subject(self, rng: np.random.Generator) -> _Subject:
        return _Subject(
            center=(float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.05, 0.05))),
            axes=(float(rng.uniform(0.62, 0.76)), float(rng.uniform(0.74, 0.88))),
            angle=float(rng.uniform(-0.2, 0.2)),
            rim=float(rng.uniform(0.06, 0.1)),
            tissue=float(rng.uniform(0.35, 0.5)),
            skull=float(rng.uniform(0.75, 0.95)),
            texture=_two_octaves(rng),
            ventricle=(
                float(rng.uniform(0.08, 0.14)),
                float(rng.uniform(0.05, 0.08)),
                float(rng.uniform(0.14, 0.22)),
            ),
        )

    def _lesion(self, rng: np.random.Generator, subject: _Subject, max_growth: float = 1.0) -> _Lesion:
        radius = float(rng.uniform(0.07, 0.2)) / max_growth
        # keep the grown lesion inside the tissue: centre within the inner ellipse shrunk by its radius
        reach = np.array(subject.axes) * (1.0 - subject.rim) - radius * max_growth * 1.4
        t, r = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 1)) * 0.9
        dx, dy = r * reach[0] * np.cos(t), r * reach[1] * np.sin(t)
        c, s = np.cos(subject.angle), np.sin(subject.angle)
        center = (subject.center[0] + c * dx - s * dy, subject.center[1] + s * dx + c * dy)
        harmonics = tuple(
            (float(rng.uniform(0, 0.25 / k)), float(rng.uniform(0, 2 * np.pi))) for k in (2, 3, 4)
        )
        sign = 1.0 if rng.uniform() < 0.6 else -1.0
        return _Lesion(
            center=(float(center[0]), float(center[1])),
            radius=radius,
            harmonics=harmonics,
            contrast=sign * float(rng.uniform(0.2, 0.4)),
            ring=bool(rng.uniform() < 0.3),
        )

    # ---------------------------------------------------------------- rendering

    def _coords(self, acq: Acquisition) -> tuple[np.ndarray, np.ndarray]:
        """Source coordinates seen by each output pixel under ``acq``'s rotation and shift."""
        c, s = float(np.cos(-acq.rotation)), float(np.sin(-acq.rotation))
        x, y = self._x - acq.shift[0], self._y - acq.shift[1]
        return c * x - s * y, s * x + c * y

    def _soft(self, signed_distance: np.ndarray) -> np.ndarray:
        return np.clip(signed_distance / self._edge + 0.5, 0.0, 1.0)

    @staticmethod
    def _bilinear(grid: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        k = grid.shape[0] - 1
        u = np.clip((x + 1.0) * (0.5 * k), 0, k - 1e-3)
        v = np.clip((y + 1.0) * (0.5 * k), 0, k - 1e-3)
        i0, j0 = v.astype(np.intp), u.astype(np.intp)
        fy, fx = v - i0, u - j0
        flat, idx = grid.ravel(), i0 * (k + 1) + j0
        top = flat[idx] + (flat[idx + 1] - flat[idx]) * fx
        bottom = flat[idx + k + 1] + (flat[idx + k + 2] - flat[idx + k + 1]) * fx
        return top + (bottom - top) * fy

    def _ellipse_distance(
        self,
        x: np.ndarray,
        y: np.ndarray,
        center: tuple[float, float],
        axes: tuple[float, float],
        angle: float,
    ) -> np.ndarray:
        """Approximate signed distance to an ellipse boundary (positive inside)."""
        c, s = float(np.cos(angle)), float(np.sin(angle))
        dx, dy = x - center[0], y - center[1]
        u, v = c * dx + s * dy, -s * dx + c * dy
        rho = np.sqrt((u / axes[0]) ** 2 + (v / axes[1]) ** 2)
        return (1.0 - rho) * min(axes)

    def _anatomy(self, subject: _Subject, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        outer = self._soft(self._ellipse_distance(x, y, subject.center, subject.axes, subject.angle))
        inner_axes = (subject.axes[0] * (1 - subject.rim), subject.axes[1] * (1 - subject.rim))
        inner = self._soft(self._ellipse_distance(x, y, subject.center, inner_axes, subject.angle))
        tissue = subject.tissue + self._bilinear(subject.texture, x, y)
        offset, ax, ay = subject.ventricle
        c, s = float(np.cos(subject.angle)), float(np.sin(subject.angle))
        for side in (-1.0, 1.0):
            vc = (subject.center[0] + side * offset * c, subject.center[1] + side * offset * s)
            tissue = tissue - 0.15 * self._soft(self._ellipse_distance(x, y, vc, (ax, ay), subject.angle))
        return 0.03 + (outer - inner) * (subject.skull - 0.03) + inner * (tissue - 0.03)

    def _lesion_field(self, lesion: _Lesion, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(intensity change, hard mask) of ``lesion``."""
        dx, dy = x - lesion.center[0], y - lesion.center[1]
        dist, theta = np.sqrt(dx * dx + dy * dy), np.arctan2(dy, dx)
        boundary = np.full_like(dist, lesion.radius)
        for k, (amp, phase) in zip((2, 3, 4), lesion.harmonics):
            boundary += lesion.radius * amp * np.cos(k * theta + phase)
        alpha = self._soft(boundary - dist)
        if lesion.ring:
            alpha = alpha - 0.6 * self._soft(0.55 * boundary - dist)
        return lesion.contrast * alpha, (dist < boundary).astype(np.uint8)

    def _render(
        self, subject: _Subject, lesions: list[_Lesion], acq: Acquisition, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        x, y = self._coords(acq)
        image = self._anatomy(subject, x, y)
        mask = np.zeros(image.shape, dtype=np.uint8)
        for lesion in lesions:
            if lesion.radius <= 0:
                continue
            delta, hard = self._lesion_field(lesion, x, y)
            image = image + delta
            mask |= hard
        image = np.clip(image, 0.0, 1.0) ** acq.gamma * acq.gain + acq.bias
        image = image + acq.noise * rng.standard_normal(image.shape).astype(np.float32)
        return np.clip(image, 0.0, 1.0).astype(np.float32), mask

    # ---------------------------------------------------------------- samples

    def _single(self, task: str, i: int, abnormal: bool) -> Sample:
        rng = self._rng(task, i)
        subject = self._subject(rng)
        n_lesions = (1 + int(rng.uniform() < 0.2)) if abnormal else 0
        lesions = [self._lesion(rng, subject) for _ in range(n_lesions)]
        acq = Acquisition.random(rng)
        image, mask = self._render(subject, lesions, acq, rng)
        return Sample(
            id=f"{DATASET}/{task}/{self.seed}/{i}",
            images=[image],
            masks=[mask],
            label="abnormal" if abnormal else "normal",
            dataset=DATASET,
            group=f"{DATASET}/{task}/{self.seed}/{i}",
            meta={
                "lesions": [{"contrast": les.contrast, "ring": les.ring} for les in lesions],
                "lesion_area": int(mask.sum()),
                "acquisition": asdict(acq),
            },
        )

    def _pair(self, i: int) -> Sample:
        rng = self._rng("pairs", i)
        change = CHANGES[i % 3]
        subject = self._subject(rng)
        growth = float(rng.uniform(1.35, 1.9))
        prior_lesion = self._lesion(rng, subject, max_growth=growth if change == "worsened" else 1.0)
        if change == "worsened":
            factor = growth
        elif change == "improved":
            factor = 0.0 if rng.uniform() < 0.2 else float(rng.uniform(0.3, 0.7))
        else:
            factor = 1.0
        current_lesion = prior_lesion.scaled(factor)
        acqs = (Acquisition.random(rng), Acquisition.random(rng))
        prior, prior_mask = self._render(subject, [prior_lesion], acqs[0], rng)
        current, current_mask = self._render(subject, [current_lesion], acqs[1], rng)
        return Sample(
            id=f"{DATASET}/pairs/{self.seed}/{i}",
            images=[prior, current],
            masks=[prior_mask, current_mask],
            label="abnormal" if current_mask.any() else "normal",
            change=change,
            dataset=DATASET,
            group=f"{DATASET}/pairs/{self.seed}/{i}",
            meta={
                "size_factor": factor,
                "lesion_area": [int(prior_mask.sum()), int(current_mask.sum())],
                "acquisition": [asdict(a) for a in acqs],
            },
        )


class SyntheticSamples(Sequence[Sample]):
    """A lazily rendered run of control samples; item ``i`` is always the same sample."""

    def __init__(self, control: SyntheticControl, kind: str, n: int, abnormal_fraction: float = 0.5) -> None:
        self.control, self.kind, self.n = control, kind, n
        n_abnormal = round(n * abnormal_fraction)
        spread = np.linspace(0, n - 1, n_abnormal).round().astype(int) if n_abnormal else []
        self._abnormal = {int(i) for i in spread}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(f"sample index {i} out of range ({self.n} samples)")
        i %= self.n
        if self.kind == "pairs":
            return self.control._pair(i)
        if self.kind == "segmentation":
            return self.control._single("segmentation", i, True)
        return self.control._single("detection", i, i in self._abnormal)
