"""Data mixtures: config sources → sample lists, and a step-indexed batch sampler.

The batch of step ``k`` on rank ``r`` is a pure function of (seed, k, r): resuming at step ``k``
needs no saved data position or sampler RNG and gives exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import logging
import zlib
from typing import Sequence

import numpy as np

from medic_ad.data.pairs import ChangePairs
from medic_ad.data.registry import detect_format, get_dataset
from medic_ad.data.schema import LABELS, Sample
from medic_ad.data.templates import choice_answer, format_options
from medic_ad.data.synthetic import SyntheticControl
from medic_ad.training.config import DataSource

logger = logging.getLogger("medic_ad.training")


def load_source(source: DataSource) -> Sequence[Sample]:
    """Samples of one mixture entry (lazy where the source is: paths, built-on-access pairs)."""
    if source.label is not None:  # checked before anything is loaded
        if source.label not in LABELS:
            raise ValueError(f"data source {source.name}: label must be one of {', '.join(LABELS)}, got {source.label!r}")
        if source.name == "synthetic":
            raise ValueError("synthetic source: choose its normals with options.abnormal_fraction, not label")
        if source.name == "change_pairs":
            raise ValueError("change_pairs source: label filters single images; pairs are balanced by change")
    opts = dict(source.options)
    if source.name == "synthetic":
        control = SyntheticControl(size=int(opts.pop("size", 112)), seed=int(opts.pop("seed", 0)))
        kind = opts.pop("kind", "detection")
        n = int(opts.pop("n", 512))
        fraction = float(opts.pop("abnormal_fraction", 0.5))
        if opts:
            raise ValueError(f"synthetic source: unknown option(s) {', '.join(sorted(opts))}")
        samples: Sequence[Sample] = control.lazy(kind, n, abnormal_fraction=fraction)
    elif source.name == "change_pairs":
        if source.root is None:
            raise ValueError("change_pairs source needs a root (a folder of images with lesion masks)")
        fmt = opts.pop("source", None) or detect_format(source.root)
        base = get_dataset(fmt).load(source.root, split=source.split)
        with_masks = [s for s in base if s.masks and s.masks[0] is not None]
        if source.limit:
            with_masks = with_masks[: source.limit]
        samples = ChangePairs(with_masks, seed=int(opts.pop("seed", 0)), validate=bool(opts.pop("validate", False)),
                              strength=tuple(opts.pop("strength", (0.8, 1.0))))
        if opts:
            raise ValueError(f"change_pairs source: unknown option(s) {', '.join(sorted(opts))}")
        return samples
    else:
        if source.root is None:
            raise ValueError(f"data source {source.name!r} needs a root folder")
        samples = get_dataset(source.name).load(source.root, split=source.split, **opts)
    if source.label is not None:
        samples = [s for s in samples if s.label == source.label]
    if source.caption is not None:
        if source.task not in (None, "vqa"):
            raise ValueError(f"data source {source.name}: caption questions cannot be task {source.task!r}")
        samples = [modality_question(s, source.caption) for s in samples]
    if source.limit:
        samples = samples[: source.limit]
    if len(samples) == 0:
        raise ValueError(f"data source {source.name} ({source.root}) has no samples")
    return samples


MODALITIES = ("brain MRI", "head CT", "chest X-ray", "abdomen CT", "pathology slide", "synthetic phantom")


def modality_question(sample: Sample, modality: str) -> Sample:
    """A label-free question about the first image's modality (stage 0), chosen by the sample id:
    open ("What modality is this image?" → "This is a brain MRI."), yes/no ("Is this a chest X-ray?"
    → "No.") or multiple choice ("… A: head CT, B: brain MRI, C: chest X-ray." → "B: brain MRI").
    It teaches the tiny LLM the answer forms the paper's tasks use without any abnormality label."""
    rng = np.random.default_rng(zlib.crc32(sample.id.encode()))
    others = [m for m in MODALITIES if m != modality]
    kind = int(rng.integers(3))
    if kind == 0:
        question, answer = "What modality is this image?", f"This is a {modality}."
    elif kind == 1:
        truth = bool(rng.integers(2))
        asked = modality if truth else str(rng.choice(others))
        question, answer = f"Is this a {asked}?", "Yes." if truth else "No."
    else:
        choices = [modality, *rng.choice(others, size=2, replace=False).tolist()]
        order = rng.permutation(3)
        letters = "ABC"
        options = {letters[i]: choices[j] for i, j in enumerate(order)}
        right = next(k for k, v in options.items() if v == modality)
        question, answer = f"Which modality is this image? {format_options(options)}", choice_answer(right, options)
    return Sample(id=sample.id, images=sample.images[:1], question=question, answer=answer,
                  dataset=sample.dataset, split=sample.split, group=sample.group)


class MixtureSampler:
    """Weighted sampling with replacement over several sources, indexed by step.

    Args:
        sources: one sample sequence per mixture entry.
        weights: relative probability of each entry.
        tasks: the template forced for each entry (None: the sample's own).
        batch_size: samples per step and rank.
        seed, rank, world_size: the batch of step k depends on (seed, k, rank) only.
    """

    def __init__(self, sources: list[Sequence[Sample]], weights: list[float], tasks: list[str | None], *,
                 batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if len(sources) != len(weights) or not sources:
            raise ValueError("one weight per data source is needed")
        w = np.asarray(weights, dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"mixture weights must be ≥ 0 with a positive sum, got {weights}")
        self.sources, self.tasks = sources, tasks
        self.probs = w / w.sum()
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size

    def batch_at(self, step: int) -> list[tuple[Sample, str | None]]:
        rng = np.random.default_rng([self.seed, step, self.rank])
        picks = rng.choice(len(self.sources), size=self.batch_size, p=self.probs)
        out = []
        for src in picks.tolist():
            samples = self.sources[src]
            out.append((samples[int(rng.integers(len(samples)))], self.tasks[src]))
        return out


def build_sampler(cfg) -> MixtureSampler:
    """The mixture of a :class:`~medic_ad.training.config.TrainConfig`, every source loaded once."""
    sources = [load_source(s) for s in cfg.data]
    for s, samples in zip(cfg.data, sources):
        logger.info("data source %s (%s, split %s): %d samples, weight %s", s.name, s.root, s.split, len(samples),
                    s.weight)
    return MixtureSampler(sources, [s.weight for s in cfg.data], [s.task for s in cfg.data],
                          batch_size=cfg.optim.batch_size, seed=cfg.seed)
