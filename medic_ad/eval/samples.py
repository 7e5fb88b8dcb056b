"""The samples a task is scored on: a dataset folder through its adapter, filtered to what the task needs.

* detection: one image with a normal/abnormal label.
* change: pairs with a change label or answered options (MMXU); single images with lesion masks
  become worsened / improved / no-change pairs (:class:`medic_ad.data.pairs.ChangePairs`, seeded);
  with ``pairs: {kind: opacity}`` every distinct image (of pairs or single images) is a base image of
  synthetic-opacity pairs (:class:`medic_ad.data.cxr_opacity.OpacityPairs`, options ``seed``, ``n``, ``size``,
  ``max_sources``);
  a *pair file* (CSV with ``prior``, ``current``, ``change`` [, ``region``, ``id``]) is read here
  because no dataset adapter keeps a change column.
* grounding: one image with a mask file (masks may be empty: see the protocol in ``docs/eval.md``).
* vqa: a question with an answer.

A ``format: synthetic`` task reads no folder: it renders the held-out synthetic control
(:class:`medic_ad.data.synthetic.SyntheticControl` with the task's ``size`` and ``seed``) as
detection images, change pairs or lesion images with masks, ``limit`` or ``subset`` or ``n`` of
them. They are rendered, not subsampled: sample ``i`` depends on (seed, kind, i) only, and a
detection set of any size keeps its normals and abnormals interleaved half and half.

``limit`` (and the task's ``subset``) keep an evenly spaced subsample in dataset order, so both
classes stay represented and the same ``limit`` always picks the same samples (resume relies on it).
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medic_ad.eval.tasks import SYNTHETIC, TaskSpec, resolve_data_dir

__all__ = ["PAIR_FILE_COLUMNS", "SampleList", "TaskData", "evenly_spaced", "load_pair_file", "load_task_samples",
           "sample_ids"]

PAIR_FILE_COLUMNS = ("prior", "current", "change")


@dataclass
class TaskData:
    """The samples of one task and where they came from."""

    task: TaskSpec
    samples: Any  # list[Sample] or SampleList
    root: Path
    format: str
    n_loaded: int
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"root": str(self.root), "format": self.format, "split": self.task.split,
                "n_loaded": self.n_loaded, "n_used": len(self.samples), "notes": list(self.notes)}


def evenly_spaced(items: list, n: int | None) -> list:
    """About ``n`` items evenly spaced over ``items`` (all when ``n`` is 0/None or ≥ len)."""
    if not n or len(items) <= n:
        return list(items)
    idx = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in idx]


def load_pair_file(path: str | Path) -> list:
    """Pairs with change labels from a CSV: ``prior``, ``current``, ``change`` (worsened / improved /
    no change) and optional ``id``, ``region``, ``split``; image paths relative to the file's folder."""
    from medic_ad.data.schema import CHANGES, Sample
    from medic_ad.eval.parsing import change_from_text

    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = {c.strip().lower(): c for c in reader.fieldnames or []}
        if not set(PAIR_FILE_COLUMNS) <= set(cols):
            raise ValueError(f"{path}: a pair file needs the columns {', '.join(PAIR_FILE_COLUMNS)}")
        rows = list(reader)
    samples, bad = [], 0
    for i, row in enumerate(rows):
        get = lambda k: (row.get(cols[k]) or "").strip() if k in cols else ""  # noqa: E731
        raw = get("change").lower()
        change = raw if raw in CHANGES else change_from_text(raw)
        prior, current = (path.parent / get("prior")), (path.parent / get("current"))
        if change is None or not prior.is_file() or not current.is_file():
            bad += 1
            continue
        samples.append(Sample(id=get("id") or f"{path.parent.name}/{i}", images=[prior, current], change=change,
                              region=get("region") or None, split=get("split") or None, dataset=path.parent.name))
    if bad:
        warnings.warn(f"{path}: skipped {bad} row(s) with a missing image or an unknown change label", stacklevel=2)
    if not samples:
        raise ValueError(f"{path}: no usable pairs (every row lacks an image or a change label)")
    return samples


def _pair_file_in(root: Path) -> Path | None:
    if root.is_file() and root.suffix.lower() == ".csv":
        return root
    for name in ("pairs.csv", "change_pairs.csv"):
        f = root / name
        if f.is_file():
            with open(f, newline="", encoding="utf-8-sig") as fh:
                header = {c.strip().lower() for c in next(csv.reader(fh), [])}
            if set(PAIR_FILE_COLUMNS) <= header:
                return f
    return None


def load_task_samples(task: TaskSpec, *, data_root: str | Path | None = None, limit: int | None = None,
                      progress: bool = False) -> TaskData:
    """The samples ``task`` is scored on (see the module docstring). Raises one clear error when
    the folder is missing, unreadable, or holds nothing this task can score."""
    from medic_ad.data.registry import detect_format, get_dataset

    if task.format == SYNTHETIC:
        return _synthetic_samples(task, limit)
    root = resolve_data_dir(task, data_root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: data folder for task {task.name!r} does not exist")
    notes: list[str] = []
    pair_file = _pair_file_in(root) if task.kind == "change" and task.format in (None, "pairs_file") else None
    if pair_file is not None:
        samples = load_pair_file(pair_file)
        if task.split:
            samples = [s for s in samples if s.split == task.split]
        fmt = "pairs_file"
    else:
        if not root.is_dir():
            raise NotADirectoryError(f"{root}: not a folder")
        try:
            fmt = task.format or detect_format(root)
            adapter = get_dataset(fmt)
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            samples = list(adapter.load(root, split=task.split, progress=progress, **task.options))
        notes += [str(w.message) for w in caught if "skipped" in str(w.message)]
    n_loaded = len(samples)
    samples = _fit_to_kind(task, samples, root, fmt, notes)
    n = limit or task.subset or None
    samples = samples.subset(n) if isinstance(samples, SampleList) else evenly_spaced(samples, n)
    return TaskData(task=task, samples=samples, root=root, format=fmt, n_loaded=n_loaded, notes=notes)


# the control's sample kind for each task kind
_SYNTHETIC_KIND = {"detection": "detection", "change": "pairs", "grounding": "segmentation"}


def _synthetic_samples(task: TaskSpec, limit: int | None) -> TaskData:
    """The synthetic control rendered for ``task`` (see the module docstring)."""
    from medic_ad.data.synthetic import SyntheticControl

    opts = dict(task.synthetic or {})
    n = int(limit or task.subset or opts["n"])
    control = SyntheticControl(size=int(opts.get("size", 112)), seed=int(opts.get("seed", 0)))
    kind = _SYNTHETIC_KIND[task.kind]
    extra = {"abnormal_fraction": float(opts["abnormal_fraction"])} if "abnormal_fraction" in opts else {}
    samples = list(control.lazy(kind, n, **extra))
    note = f"{n} synthetic {kind} sample(s) rendered (size {control.size}, seed {control.seed})"
    return TaskData(task=task, samples=samples, root=Path(SYNTHETIC), format=SYNTHETIC, n_loaded=n, notes=[note])


def _fit_to_kind(task: TaskSpec, samples: list, root: Path, fmt: str, notes: list[str]) -> list:
    where = f"{root} (format {fmt}{', split ' + task.split if task.split else ''})"
    kind = task.kind
    if kind == "detection":
        kept = [s for s in samples if not s.is_pair and s.label is not None]
        if not kept:
            raise ValueError(f"{where}: no single images with a normal/abnormal label to score detection on")
    elif kind == "grounding":
        kept = [s for s in samples if not s.is_pair and s.masks and s.masks[0] is not None]
        if not kept:
            raise ValueError(f"{where}: no images with a mask file to score grounding on")
    elif kind == "vqa":
        kept = [s for s in samples if s.question and s.answer is not None]
        if not kept:
            raise ValueError(f"{where}: no questions with answers to score VQA on")
    elif (task.pairs or {}).get("kind") == "opacity":  # change pairs built on the images, whatever they hold
        kept = _opacity_pairs(task, samples, where, notes)
    else:  # change
        kept = [s for s in samples if s.is_pair and (s.change is not None or (s.options and s.answer))]
        if not kept:
            sources = [s for s in samples if not s.is_pair and s.masks and s.masks[0] is not None
                       and s.label != "normal"]
            if sources and task.pairs is not None:
                kept = _pairs_from_masks(task, sources, notes)
            elif sources:
                raise ValueError(f"{where}: single images with masks; this task builds no pairs (set 'pairs')")
            elif any(s.is_pair for s in samples):
                raise ValueError(f"{where}: image pairs without change labels (nothing to score change against)")
            else:
                raise ValueError(f"{where}: no image pairs with a change label or answered options")
    dropped = len(samples) - len(kept)
    if dropped > 0 and kind != "change":
        notes.append(f"{dropped} sample(s) without what {kind} needs were left out")
    return kept


def _pairs_from_masks(task: TaskSpec, sources: list, notes: list[str]) -> "SampleList":
    from medic_ad.data.pairs import ChangePairs
    from medic_ad.data.io import load_mask

    opts = dict(task.pairs or {})
    opts.pop("kind", None)
    seed = int(opts.pop("seed", 0))
    if isinstance(opts.get("strength"), list):  # YAML has no tuples; a (low, high) range per pair
        opts["strength"] = tuple(opts["strength"])
    max_sources = opts.pop("max_sources", None)
    if max_sources:
        sources = evenly_spaced(sources, int(max_sources))
    with_lesion = [s for s in sources if load_mask(s.masks[0]).any()]
    if len(with_lesion) < len(sources):
        notes.append(f"{len(sources) - len(with_lesion)} source image(s) with an empty mask cannot make pairs")
    if not with_lesion:
        raise ValueError("no source image has a lesion in its mask; no change pairs can be built")
    pairs = ChangePairs(with_lesion, seed=seed, validate=False, **opts)
    notes.append(f"{len(pairs)} change pairs built from {len(with_lesion)} image(s) + masks (seed {seed})")
    return SampleList(pairs)


def _opacity_pairs(task: TaskSpec, samples: list, where: str, notes: list[str]) -> "SampleList":
    from medic_ad.data.cxr_opacity import OpacityPairs, base_images

    opts = dict(task.pairs or {})
    opts.pop("kind")
    seed, n, size = int(opts.pop("seed", 0)), opts.pop("n", None), opts.pop("size", 256)
    max_sources = opts.pop("max_sources", None)
    if opts:
        raise ValueError(f"task {task.name!r}: unknown opacity pairs option(s) {', '.join(sorted(opts))}")
    bases = base_images(samples)
    if max_sources:
        bases = evenly_spaced(bases, int(max_sources))
    if not bases:
        raise ValueError(f"{where}: no image to build opacity change pairs on")
    pairs = OpacityPairs(bases, seed=seed, n=None if n is None else int(n), size=None if size is None else int(size))
    notes.append(f"{len(pairs)} opacity change pairs built on {len(bases)} image(s) (seed {seed})")
    return SampleList(pairs)


class SampleList(Sequence):
    """Samples by index, built on access (a change pair is inpainted and re-acquired when built, see
    ``docs/eval.md``), with their ids known up front so that a resumed run skips finished samples
    without building them."""

    def __init__(self, seq, indices: list[int] | None = None) -> None:
        self._seq = seq
        self._idx = list(range(len(seq))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self._idx)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return SampleList(self._seq, self._idx[i])
        sample = self._seq[self._idx[i]]
        expected = self.id_of(i)
        if sample.id != expected:
            raise RuntimeError(f"sample id {sample.id!r} differs from the expected {expected!r}")
        return sample

    def id_of(self, i: int) -> str:
        from medic_ad.data.cxr_opacity import OpacityPairs
        from medic_ad.data.pairs import ChangePairs

        j = self._idx[i]
        if isinstance(self._seq, OpacityPairs):
            return self._seq.pair_id(j)
        if isinstance(self._seq, ChangePairs):
            kinds = self._seq.kinds
            source = self._seq.sources[j // len(kinds)]
            return f"pairs/{source.id}/{kinds[j % len(kinds)].replace(' ', '_')}"
        return self._seq[j].id

    def sources(self) -> list:
        """The one-image samples these pairs are built from (the samples themselves when not built pairs)."""
        from medic_ad.data.cxr_opacity import OpacityPairs
        from medic_ad.data.pairs import ChangePairs

        if isinstance(self._seq, OpacityPairs):
            return list({id(s): s for s in (self._seq.source_of(j) for j in self._idx)}.values())
        if isinstance(self._seq, ChangePairs):
            kinds = len(self._seq.kinds)
            return [self._seq.sources[j] for j in sorted({i // kinds for i in self._idx})]
        return [self._seq[j] for j in self._idx]

    def subset(self, n: int | None) -> "SampleList":
        if not n or len(self) <= n:
            return self
        keep = np.unique(np.linspace(0, len(self) - 1, n).round().astype(int))
        return SampleList(self._seq, [self._idx[k] for k in keep])


def sample_ids(samples) -> list[str]:
    """Ids of ``samples`` (a list of Sample or a :class:`SampleList`) without building lazy ones."""
    if isinstance(samples, SampleList):
        return [samples.id_of(i) for i in range(len(samples))]
    return [s.id for s in samples]
