"""Dataset adapters registered by name, layout detection, and the load report.

An adapter is a function ``load(root, *, split, report, **opts) -> list[Sample]`` registered with
``@register_dataset(name, detect=...)``. ``detect(root) -> float`` scores how well a folder's
layout fits (1.0 certain, >= 0.5 a match, between 0 and 0.5 a partial hint used in error
messages). :func:`get_dataset` returns a :class:`DatasetAdapter` whose ``load`` adds what every
adapter shares: path checks, split filtering, duplicate-id skipping, a :class:`LoadReport` with a
counted warning for every skipped row, and a clear error when nothing is left.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from medic_ad.data.errors import DatasetFormatError, EmptyDatasetError, LoadWarning
from medic_ad.data.schema import Sample
from medic_ad.data.splits import canonical_split

__all__ = [
    "DatasetAdapter",
    "LoadReport",
    "LoadedDataset",
    "detect_format",
    "get_dataset",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]

logger = logging.getLogger("medic_ad.data")

T = TypeVar("T")
LoadFn = Callable[..., list[Sample]]
DetectFn = Callable[[Path], float]

MATCH = 0.5
PROGRESS_MIN_ITEMS = 500
_EXAMPLES_PER_REASON = 5


@dataclass
class LoadReport:
    """What an adapter read, what it skipped and why.

    ``skipped`` counts skipped rows per reason (with a few example locations in ``examples``);
    ``notes`` counts facts that did not cost a row (e.g. "no mask for image").
    """

    dataset: str
    root: Path
    rows: int = 0
    loaded: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: Counter[str] = field(default_factory=Counter)
    progress: bool = False

    @property
    def n_skipped(self) -> int:
        """Total number of skipped rows."""
        return sum(self.skipped.values())

    def skip(self, reason: str, where: str | Path) -> None:
        """Count one skipped row; log the first few of each reason."""
        self.skipped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < _EXAMPLES_PER_REASON:
            shown.append(str(where))
            logger.warning("%s: skipped %s (%s)", self.dataset, where, reason)

    def note(self, what: str, n: int = 1) -> None:
        """Count a non-fatal observation."""
        self.notes[what] += n

    def track(self, items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
        """Iterate ``items``, with a rich progress bar when enabled and the folder is large."""
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        if not self.progress or total is None or total < PROGRESS_MIN_ITEMS:
            yield from items
            return
        from rich.console import Console
        from rich.progress import track

        yield from track(
            items,
            description=f"{self.dataset}: {description}",
            total=total,
            transient=True,
            console=Console(stderr=True),
        )

    def summary(self) -> str:
        """One line: loaded, skipped and why."""
        line = f"{self.dataset} at {self.root}: loaded {self.loaded} sample(s)"
        if self.skipped:
            reasons = ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
            line += f"; skipped {self.n_skipped} of {self.rows} row(s): {reasons}"
        return line

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view."""
        return {
            "dataset": self.dataset,
            "root": str(self.root),
            "rows": self.rows,
            "loaded": self.loaded,
            "skipped": dict(self.skipped),
            "skipped_examples": {k: list(v) for k, v in self.examples.items()},
            "notes": dict(self.notes),
        }


class LoadedDataset(list[Sample]):
    """The samples an adapter loaded (a plain list) plus its :class:`LoadReport` as ``.report``."""

    def __init__(self, samples: Iterable[Sample], report: LoadReport) -> None:
        super().__init__(samples)
        self.report = report


@dataclass(frozen=True)
class DatasetAdapter:
    """A registered dataset format: its loader, its layout detector and a one-line description."""

    name: str
    fn: LoadFn
    detect: DetectFn
    description: str

    def load(
        self,
        root: str | Path,
        *,
        split: str | None = None,
        name: str | None = None,
        progress: bool = False,
        **opts: Any,
    ) -> LoadedDataset:
        """Load every sample under ``root`` (only ``split`` when given).

        Args:
            root: the dataset folder.
            split: keep only this split (aliases like "valid" or "validation" accepted).
            name: overrides ``Sample.dataset`` (default: the adapter's choice).
            progress: show a progress bar on large folders.
            **opts: adapter-specific options (see ``docs/data.md``).

        Raises:
            FileNotFoundError: ``root`` does not exist.
            EmptyDatasetError: nothing was loaded (the message says why).
            ValueError: ``split`` was asked of a dataset that defines no splits.
        """
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"{root}: dataset folder does not exist")
        if not root.is_dir():
            raise NotADirectoryError(f"{root}: not a folder")
        want = canonical_split(split) if split is not None else None
        report = LoadReport(dataset=self.name, root=root, progress=progress)
        samples = self.fn(root, split=want, report=report, **opts)
        if want is not None:
            samples = [s for s in samples if s.split == want]
            if not samples and not report.skipped:
                self._explain_missing_split(root, want, opts)
        kept: list[Sample] = []
        seen: set[str] = set()
        for sample in samples:
            if sample.id in seen:
                report.skip("duplicate sample id", sample.id)
                continue
            seen.add(sample.id)
            kept.append(dataclasses.replace(sample, dataset=name) if name else sample)
        report.loaded = len(kept)
        if report.skipped:
            warnings.warn(LoadWarning(report.summary()), stacklevel=2)
        if not kept:
            why = f" for split {want!r}" if want else ""
            if report.skipped:
                why += f" (all usable rows skipped: {dict(report.skipped)})"
            raise EmptyDatasetError(root, f"no {self.name} samples found{why}")
        return LoadedDataset(kept, report)

    def _explain_missing_split(self, root: Path, want: str, opts: dict[str, Any]) -> None:
        """Raise the clearest error for a split that yielded nothing (loads the folder once more)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LoadWarning)
            everything = self.fn(root, split=None, report=LoadReport(dataset=self.name, root=root), **opts)
        present = sorted({s.split for s in everything if s.split is not None})
        if everything and not present:
            raise ValueError(
                f"{root}: the {self.name} data there defines no splits; "
                "load it whole and split it with medic_ad.data.splits.group_split"
            )
        if present:
            splits = ", ".join(present)
            raise EmptyDatasetError(root, f"no {self.name} samples in split {want!r} (splits: {splits})")


_REGISTRY: dict[str, DatasetAdapter] = {}


def register_dataset(name: str, *, detect: DetectFn, description: str) -> Callable[[LoadFn], LoadFn]:
    """Decorator registering an adapter's ``load`` function under ``name``."""

    def wrap(fn: LoadFn) -> LoadFn:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"dataset format {name!r} is already registered")
        _REGISTRY[name] = DatasetAdapter(name=name, fn=fn, detect=detect, description=description)
        return fn

    return wrap


def _ensure_adapters() -> None:
    import medic_ad.data.adapters  # noqa: F401  (registers every adapter on import)


def list_datasets() -> list[str]:
    """Names of all registered dataset formats."""
    _ensure_adapters()
    return sorted(_REGISTRY)


def get_dataset(name: str) -> DatasetAdapter:
    """The adapter registered under ``name``."""
    _ensure_adapters()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown dataset format {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def detect_format(root: str | Path) -> str:
    """The one registered format whose layout ``root`` matches.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        DatasetFormatError: no format matches, or several do equally well; the message and
            ``.candidates`` name the formats it could be.
    """
    _ensure_adapters()
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder does not exist")
    scores = {name: float(adapter.detect(root)) for name, adapter in _REGISTRY.items()}
    matches = sorted((n for n, s in scores.items() if s >= MATCH), key=lambda n: -scores[n])
    if matches and (len(matches) == 1 or scores[matches[0]] > scores[matches[1]]):
        return matches[0]
    if matches:
        tied = [n for n in matches if scores[n] == scores[matches[0]]]
        raise DatasetFormatError(
            root,
            f"ambiguous layout: it could be {', '.join(tied)}; pass --format / format= to choose",
            candidates=tied,
        )
    partial = sorted((n for n, s in scores.items() if s > 0), key=lambda n: -scores[n])
    if partial:
        hints = "; ".join(f"{n}: {_REGISTRY[n].description}" for n in partial)
        raise DatasetFormatError(
            root, f"unknown layout; it partly looks like {hints}", candidates=partial
        )
    inner = _datasets_inside(root)
    if inner:
        found = ", ".join(f"{d} ({n})" for d, n in inner)
        raise DatasetFormatError(
            root, f"not a dataset folder, but it holds dataset folders: {found}", candidates=()
        )
    known = "; ".join(f"{n}: {a.description}" for n, a in sorted(_REGISTRY.items()))
    raise DatasetFormatError(root, f"unknown layout; known formats are {known}", candidates=())


def _datasets_inside(root: Path, limit: int = 50) -> list[tuple[str, str]]:
    """(subfolder, format) for the first ``limit`` subfolders whose layout one format matches."""
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir())[:limit]:
        scores = {n: a.detect(child) for n, a in _REGISTRY.items()}
        best = max(scores, key=lambda n: scores[n])
        if scores[best] >= MATCH:
            found.append((child.name, best))
    return found


def load_dataset(
    root: str | Path,
    format: str | None = None,
    *,
    split: str | None = None,
    **opts: Any,
) -> LoadedDataset:
    """Load ``root`` with the named adapter, or the one :func:`detect_format` finds."""
    return get_dataset(format or detect_format(root)).load(root, split=split, **opts)
