"""Counts of a loaded dataset: per label, split, split x label, change label, plus pairs and groups."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from medic_ad.data.registry import LoadReport
from medic_ad.data.schema import Sample

__all__ = ["DatasetSummary", "render_summary", "summarize"]

NONE = "-"


@dataclass
class DatasetSummary:
    """Counts over a list of samples (``"-"`` stands for no label / no split)."""

    format: str
    root: str
    total: int
    pairs: int
    groups: int
    with_masks: int
    datasets: dict[str, int] = field(default_factory=dict)
    by_label: dict[str, int] = field(default_factory=dict)
    by_split: dict[str, int] = field(default_factory=dict)
    by_split_label: dict[str, dict[str, int]] = field(default_factory=dict)
    by_change: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view."""
        return asdict(self)


def _sorted(counter: Counter[str]) -> dict[str, int]:
    return {k: counter[k] for k in sorted(counter, key=lambda k: (k == NONE, k))}


def summarize(samples: Sequence[Sample], *, format: str = "", root: str = "") -> DatasetSummary:
    """Count ``samples`` by label, split, split x label and (for pairs) change label."""
    by_split_label: dict[str, Counter[str]] = {}
    for s in samples:
        by_split_label.setdefault(s.split or NONE, Counter())[s.label or NONE] += 1
    pairs = [s for s in samples if s.is_pair]
    return DatasetSummary(
        format=format,
        root=root,
        total=len(samples),
        pairs=len(pairs),
        groups=len({s.group for s in samples if s.group is not None}),
        with_masks=sum(s.has_mask for s in samples),
        datasets=_sorted(Counter(s.dataset for s in samples)),
        by_label=_sorted(Counter(s.label or NONE for s in samples)),
        by_split=_sorted(Counter(s.split or NONE for s in samples)),
        by_split_label={k: _sorted(by_split_label[k]) for k in _sorted(Counter(by_split_label))},
        by_change=_sorted(Counter(s.change or NONE for s in pairs)) if pairs else {},
    )


def render_summary(summary: DatasetSummary, report: LoadReport | None = None, console: Any = None) -> None:
    """Print ``summary`` (and what the report skipped) as rich tables."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    fmt = f"  [dim]format:[/dim] {escape(summary.format)}" if summary.format else ""
    console.print(f"[bold]{escape(summary.root)}[/bold]{fmt}")
    head = Table(show_header=False)
    head.add_column("what")
    head.add_column("count", justify="right")
    head.add_row("samples", str(summary.total))
    if summary.pairs:
        head.add_row("image pairs", str(summary.pairs))
    head.add_row("groups", str(summary.groups))
    head.add_row("with masks", str(summary.with_masks))
    if len(summary.datasets) > 1:
        for name, n in summary.datasets.items():
            head.add_row(f"dataset {name}", str(n))
    console.print(head)

    labels = list(summary.by_label)
    table = Table(title="split x label")
    table.add_column("split")
    for label in labels:
        table.add_column(label, justify="right")
    table.add_column("total", justify="right")
    for split, counts in summary.by_split_label.items():
        table.add_row(split, *(str(counts.get(label, 0)) for label in labels), str(sum(counts.values())))
    if len(summary.by_split_label) > 1:
        totals = (str(summary.by_label[label]) for label in labels)
        table.add_row("all", *totals, str(summary.total), style="bold")
    console.print(table)

    if summary.by_change:
        change = Table(title="change label (pairs)")
        change.add_column("change")
        change.add_column("pairs", justify="right")
        for name, n in summary.by_change.items():
            change.add_row("unlabelled" if name == NONE else name, str(n))
        console.print(change)

    if report is not None and (report.skipped or report.notes):
        skipped = Table(title=f"skipped {report.n_skipped} of {report.rows} row(s)")
        skipped.add_column("reason")
        skipped.add_column("count", justify="right")
        skipped.add_column("e.g.")
        for reason, n in report.skipped.most_common():
            skipped.add_row(escape(reason), str(n), escape(report.examples.get(reason, [""])[0]))
        for note, n in report.notes.most_common():
            skipped.add_row(escape(f"note: {note}"), str(n), "")
        console.print(skipped)
