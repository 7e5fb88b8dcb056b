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
    """Weighted sampling with replacement over several sources, indexed by optimizer step.

    ``batch_at(k)`` is the global batch of optimizer step ``k``, a pure function of (seed, k): resuming
    at step ``k`` needs no saved data position or sampler RNG. ``share(k, ...)`` cuts it into
    ``world_size × grad_accum`` equal micro-batches, so one process with batch 2b and two with b each
    train on the same samples at every step.

    Args:
        sources: one sample sequence per mixture entry.
        weights: relative probability of each entry.
        tasks: the template forced for each entry (None: the sample's own).
        batch_size: samples per optimizer step, over all processes and accumulation micro-steps.
        seed: the batch of step k depends on (seed, k) only.
    """

    def __init__(self, sources: list[Sequence[Sample]], weights: list[float], tasks: list[str | None], *,
                 batch_size: int, seed: int = 0) -> None:
        if len(sources) != len(weights) or not sources:
            raise ValueError("one weight per data source is needed")
        w = np.asarray(weights, dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"mixture weights must be ≥ 0 with a positive sum, got {weights}")
        self.sources, self.tasks = sources, tasks
        self.probs = w / w.sum()
        self.batch_size, self.seed = batch_size, seed

    def batch_at(self, step: int) -> list[tuple[Sample, str | None]]:
        return [(self.sources[src][i], self.tasks[src]) for src, i in self._picks(step)]

    def share(self, step: int, *, rank: int = 0, world_size: int = 1, micro: int = 0,
              grad_accum: int = 1) -> list[tuple[Sample, str | None]]:
        """Micro-batch ``micro`` of process ``rank``: its disjoint slice of step ``step``'s global batch.
        Only the slice is materialised (lazy sources render a sample on access)."""
        size, _ = batch_split(self.batch_size, world_size, grad_accum=grad_accum)
        start = (rank * grad_accum + micro) * size
        return [(self.sources[src][i], self.tasks[src]) for src, i in self._picks(step)[start:start + size]]

    def _picks(self, step: int) -> list[tuple[int, int]]:
        """(source, index) of every sample of the global batch of ``step``."""
        rng = np.random.default_rng([self.seed, step])
        sources = rng.choice(len(self.sources), size=self.batch_size, p=self.probs).tolist()
        return [(src, int(rng.integers(len(self.sources[src])))) for src in sources]


def batch_split(batch_size: int, world_size: int, *, grad_accum: int = 1,
                micro_batch_size: int | None = None) -> tuple[int, int]:
    """(samples per forward pass on one process, accumulation micro-steps) for a global ``batch_size``."""
    if micro_batch_size is not None:
        per_micro = world_size * micro_batch_size
        if batch_size % per_micro:
            raise ValueError(
                f"optim.batch_size {batch_size} (the global batch of an optimizer step) is not a multiple of "
                f"{world_size} process(es) × optim.micro_batch_size {micro_batch_size}"
            )
        return micro_batch_size, batch_size // per_micro
    parts = world_size * grad_accum
    if batch_size % parts:
        raise ValueError(
            f"optim.batch_size {batch_size} (the global batch of an optimizer step) must split evenly over "
            f"{world_size} process(es) × {grad_accum} accumulation micro-step(s); choose a multiple of {parts}"
        )
    return batch_size // parts, grad_accum


def build_sampler(cfg) -> MixtureSampler:
    """The mixture of a :class:`~medic_ad.training.config.TrainConfig`, every source loaded once."""
    sources = [load_source(s) for s in cfg.data]
    for s, samples in zip(cfg.data, sources):
        logger.info("data source %s (%s, split %s): %d samples, weight %s", s.name, s.root, s.split, len(samples),
                    s.weight)
    return MixtureSampler(sources, [s.weight for s in cfg.data], [s.task for s in cfg.data],
                          batch_size=cfg.optim.batch_size, seed=cfg.seed)
