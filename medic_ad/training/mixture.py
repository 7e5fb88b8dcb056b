"""Data mixtures: config sources → sample lists, and a step-indexed batch sampler.

The global batch of optimizer step ``k`` is a pure function of (seed, k), and each process takes its
own disjoint slice of it (:meth:`MixtureSampler.share`): resuming at step ``k`` needs no saved data
position or sampler RNG, and one process with batch 2b sees what two processes with b each see.

Before anything is sampled, the patients of the config's ``holdout`` sets (the evaluation sets)
are dropped from every training source (:mod:`medic_ad.data.holdout`), and ``data_summary.json``
in the output folder records what each source holds and what the run draws from it.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medic_ad.data.holdout import Holdout, key_digest, patient_keys
from medic_ad.data.cxr_opacity import OpacityImages, OpacityPairs, base_images
from medic_ad.data.pairs import ChangePairs
from medic_ad.data.registry import detect_format, get_dataset
from medic_ad.data.schema import LABELS, Sample
from medic_ad.data.templates import choice_answer, format_options
from medic_ad.data.synthetic import SyntheticControl
from medic_ad.training.config import DataSource

logger = logging.getLogger("medic_ad.training")


def load_source(source: DataSource, holdout: Holdout | None = None) -> Sequence[Sample]:
    """Samples of one mixture entry (lazy where the source is: paths, built-on-access pairs), without
    the patients ``holdout`` holds."""
    return _load_source(source, holdout)[0]


def _load_source(source: DataSource, holdout: Holdout | None) -> tuple[Sequence[Sample], int]:
    """(samples, how many samples of evaluation patients were dropped)."""
    if source.label is not None:  # checked before anything is loaded
        if source.label not in LABELS:
            raise ValueError(f"data source {source.name}: label must be one of {', '.join(LABELS)}, got {source.label!r}")
        if source.name == "synthetic":
            raise ValueError("synthetic source: choose its normals with options.abnormal_fraction, not label")
        if source.name in ("change_pairs", "cxr_opacity_pairs"):
            raise ValueError(f"{source.name} source: label filters single images; "
                             "pairs are balanced by change")
        if source.name == "cxr_opacity_images":
            raise ValueError(f"{source.name} source: label has nothing to filter; every one of these films "
                             "has an opacity (abnormal)")
    opts = dict(source.options)
    dropped = 0
    if source.name == "synthetic":  # generated subjects: no patient to hold out
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
        seed, validate = int(opts.pop("seed", 0)), bool(opts.pop("validate", False))
        strength = tuple(opts.pop("strength", (0.8, 1.0)))
        if opts:
            raise ValueError(f"change_pairs source: unknown option(s) {', '.join(sorted(opts))}")
        base = get_dataset(fmt).load(source.root, split=source.split)
        # a normal image's (empty) mask has no lesion to attenuate: its "worsened" pair would be two normals
        with_masks = [s for s in base if s.masks and s.masks[0] is not None and s.label != "normal"]
        with_masks, dropped = _pair_bases(source, with_masks, holdout, "abnormal image with a lesion mask",
                                          f"{fmt} loaded {len(base)} sample(s)")
        return ChangePairs(with_masks, seed=seed, validate=validate, strength=strength), dropped
    elif source.name == "cxr_opacity_pairs":
        return _opacity_pairs(source, opts, holdout)
    elif source.name == "cxr_opacity_images":
        if "n" in opts:  # n films: the current films of the worsened third of 3·n pairs
            opts["n"] = 3 * int(opts["n"])
        pairs, dropped = _opacity_pairs(source, opts, holdout)
        return OpacityImages(pairs), dropped
    else:
        if source.root is None:
            raise ValueError(f"data source {source.name!r} needs a root folder")
        samples = get_dataset(source.name).load(source.root, split=source.split, **opts)
        if holdout is not None:
            samples, dropped = holdout.drop(samples)
    if source.label is not None:
        samples = [s for s in samples if s.label == source.label]
    if source.caption is not None:
        if source.task not in (None, "vqa"):
            raise ValueError(f"data source {source.name}: caption questions cannot be task {source.task!r}")
        samples = [modality_question(s, source.caption) for s in samples]
    if source.limit:
        samples = samples[: source.limit]
    if len(samples) == 0:
        why = f" ({dropped} dropped as evaluation patients)" if dropped else ""
        raise ValueError(f"data source {source.name} ({source.root}) has no samples{why}")
    return samples, dropped


def _opacity_pairs(source: DataSource, opts: dict[str, Any], holdout: Holdout | None) -> tuple[OpacityPairs, int]:
    """Opacity change pairs on the images of ``source.split`` of a chest X-ray folder (``cxr_pairs``)."""
    if source.root is None:
        raise ValueError(f"{source.name} source needs a root (a cxr_pairs folder of chest X-rays)")
    fmt = opts.pop("source", None) or detect_format(source.root)
    seed, n = int(opts.pop("seed", 0)), opts.pop("n", None)
    size = opts.pop("size", 256)
    if opts:
        raise ValueError(f"{source.name} source: unknown option(s) {', '.join(sorted(opts))}")
    loaded = get_dataset(fmt).load(source.root, split=source.split)
    # no image of another split may become a base image (a val patient's film in training)
    bases = base_images([s for s in loaded if source.split is None or s.split == source.split])
    bases, dropped = _pair_bases(source, bases, holdout, "image", f"{fmt} loaded {len(loaded)} sample(s)")
    return OpacityPairs(bases, seed=seed, n=None if n is None else int(n),
                        size=None if size is None else int(size)), dropped


def _pair_bases(source: DataSource, bases: list[Sample], holdout: Holdout | None, what: str,
                loaded: str) -> tuple[list[Sample], int]:
    """The images a pair source builds on, less evaluation patients and past ``limit``; (bases, dropped)."""
    dropped = 0
    if holdout is not None:
        bases, dropped = holdout.drop(bases)
    if source.limit:
        bases = bases[: source.limit]
    if not bases:
        split = f" split {source.split!r}" if source.split else ""
        why = f" ({dropped} dropped as evaluation patients)" if dropped else ""
        raise ValueError(f"{source.name} source {source.root}{split}: no {what} to build pairs on{why} ({loaded})")
    return bases, dropped


def load_holdout(entries: Sequence[DataSource]) -> Holdout:
    """The patients of the evaluation sets a config names in ``holdout``.

    An entry is a dataset folder (``name`` an adapter, ``root``, ``split``, ``options``) or a
    registered evaluation task (``name: eval_task``, ``options.task``, ``root`` its data folder):
    exactly the samples that task scores, so a subset it takes holds out only that subset.
    """
    holdout = Holdout()
    for entry in entries:
        opts = dict(entry.options)
        if entry.name == "eval_task":
            from medic_ad.eval.samples import SampleList, load_task_samples
            from medic_ad.eval.tasks import get_task

            task_name = opts.pop("task", None)
            if not task_name or opts:
                raise ValueError("holdout entry eval_task needs options.task (the eval task's name) and nothing else")
            data = load_task_samples(get_task(task_name), data_root=entry.root)
            samples = data.samples
            if isinstance(samples, SampleList):  # pairs built on access: their source images are the patients
                samples = samples.sources()
            holdout.add(samples, name=f"eval_task {task_name}", root=str(data.root), split=data.task.split)
        else:
            if entry.root is None:
                raise ValueError(f"holdout entry {entry.name!r} needs a root folder")
            samples = get_dataset(entry.name).load(entry.root, split=entry.split, **opts)
            holdout.add(samples, name=entry.name, root=entry.root, split=entry.split)
        logger.info("holdout %s: %d evaluation sample(s), %d patient(s)", holdout.sets[-1]["name"],
                    holdout.sets[-1]["samples"], holdout.sets[-1]["patients"])
    return holdout


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
        return [(self.sources[src][i], self.tasks[src]) for src, i in self.picks_at(step)]

    def share(self, step: int, *, rank: int = 0, world_size: int = 1, micro: int = 0,
              grad_accum: int = 1) -> list[tuple[Sample, str | None]]:
        """Micro-batch ``micro`` of process ``rank``: its disjoint slice of step ``step``'s global batch.
        Only the slice is materialised (lazy sources render a sample on access)."""
        size, _ = batch_split(self.batch_size, world_size, grad_accum=grad_accum)
        start = (rank * grad_accum + micro) * size
        return [(self.sources[src][i], self.tasks[src]) for src, i in self.picks_at(step)[start:start + size]]

    def picks_at(self, step: int) -> list[tuple[int, int]]:
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
    """The mixture of a :class:`~medic_ad.training.config.TrainConfig`, every source loaded once, the
    evaluation patients of ``cfg.holdout`` dropped; writes ``data_summary.json`` into the output folder."""
    holdout = load_holdout(cfg.holdout) if cfg.holdout else None
    loaded = [_load_source(s, holdout) for s in cfg.data]
    sources = [samples for samples, _ in loaded]
    for s, (samples, dropped) in zip(cfg.data, loaded):
        logger.info("data source %s (%s, split %s): %d samples, weight %s%s", s.name, s.root, s.split, len(samples),
                    s.weight, f", {dropped} dropped as evaluation patients" if holdout is not None else "")
    sampler = MixtureSampler(sources, [s.weight for s in cfg.data], [s.task for s in cfg.data],
                             batch_size=cfg.optim.batch_size, seed=cfg.seed)
    if os.environ.get("RANK", "0") == "0":
        write_data_summary(Path(cfg.output_dir) / DATA_SUMMARY, cfg, loaded, holdout, sampler)
    return sampler


DATA_SUMMARY = "data_summary.json"
MAX_IDS = 1000


def data_summary(cfg, loaded: list[tuple[Sequence[Sample], int]], holdout: Holdout | None,
                 sampler: MixtureSampler) -> dict[str, Any]:
    """What each source holds (counts, ids, patient digests) and what the run's global batches draw from it."""
    steps = cfg.optim.max_steps
    drawn: list[Counter[int]] = [Counter() for _ in loaded]
    for step in range(steps):
        for src, i in sampler.picks_at(step):
            drawn[src][i] += 1
    out_sources = []
    for source, (samples, dropped), hits in zip(cfg.data, loaded, drawn):
        entry: dict[str, Any] = {"name": source.name, "root": source.root, "split": source.split,
                                 "task": source.task, "weight": source.weight, "samples": len(samples),
                                 "dropped_eval_patients": dropped if holdout is not None else None,
                                 "drawn": sum(hits.values()), "drawn_distinct": len(hits)}
        entry.update(_describe(samples))
        out_sources.append(entry)
    return {
        "stage": cfg.stage,
        "steps": steps,
        "global_batch": cfg.optim.batch_size,
        "holdout": None if holdout is None else {"sets": holdout.sets, "patients": len(holdout.keys),
                                                 "patients_sha1": holdout.digests()},
        "sources": out_sources,
    }


def _describe(samples: Sequence[Sample]) -> dict[str, Any]:
    if isinstance(samples, ChangePairs):
        kinds = samples.kinds
        return {"pairs": len(samples), "by_change": {k: len(samples.sources) for k in kinds},
                "abnormal_with_mask": len(samples.sources),
                **_ids([f"pairs/{s.id}/{k.replace(' ', '_')}" for s in samples.sources for k in kinds]),
                "patients_sha1": _patients_sha1(samples.sources)}
    if isinstance(samples, OpacityImages):
        return {"images": len(samples), "by_label": {"abnormal": len(samples)}, "base_images": len(samples.sources),
                **_ids([samples.image_id(i) for i in range(len(samples))]),
                "patients_sha1": _patients_sha1(samples.sources)}
    if isinstance(samples, OpacityPairs):
        return {"pairs": len(samples), "by_change": dict(Counter(samples.change_of(i) for i in range(len(samples)))),
                "base_images": len(samples.sources), **_ids([samples.pair_id(i) for i in range(len(samples))]),
                "patients_sha1": _patients_sha1(samples.sources)}
    if not isinstance(samples, list):  # generated on access (synthetic): nothing to read up front
        return {"generated": True}
    return {
        "pairs": sum(s.is_pair for s in samples),
        "by_change": dict(Counter(s.change for s in samples if s.change is not None)),
        "by_label": dict(Counter(s.label for s in samples if s.label is not None)),
        "abnormal_with_mask": sum(s.label == "abnormal" and s.has_mask for s in samples),
        **_ids([s.id for s in samples[:MAX_IDS + 1]]),
        "patients_sha1": _patients_sha1(samples),
    }


def _ids(ids: list[str]) -> dict[str, Any]:
    """The first ``MAX_IDS`` of a source's sample ids, and whether there are more."""
    return {"ids": ids[:MAX_IDS], "ids_truncated": len(ids) > MAX_IDS}


def _patients_sha1(samples: Sequence[Sample]) -> list[str]:
    """The digests of the patients behind ``samples`` (never the ids themselves), sorted."""
    return sorted({key_digest(k) for s in samples for k in patient_keys(s)})


def write_data_summary(path: Path, cfg, loaded, holdout: Holdout | None, sampler: MixtureSampler) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data_summary(cfg, loaded, holdout, sampler), indent=1) + "\n")
    tmp.replace(path)
