"""Decoding and windowing of (series, slice) items, for DataLoader workers.

The model's process batches and runs the model (and decodes the first batch while the workers
start, :func:`decoded_batches`); the workers read each slice through
:func:`medic_ad.data.io.read_image` with the series' window, so decoding overlaps the forward passes.
A slice that cannot be read comes back as an item carrying the reason instead of pixels.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from medic_ad.data.io import MedicalImage, read_image
from medic_ad.processes import die_with_parent
from medic_ad.studies.series import Series, SliceRef

__all__ = ["SliceDataset", "SliceItem", "decode_slice", "decoded_batches", "series_window", "slice_loader"]

log = logging.getLogger("medic_ad.studies")

#: modalities a Hounsfield window applies to; None: a NIfTI volume or a raster, whose values the header does not name
WINDOWED_MODALITIES = {"CT", None}


@dataclass
class SliceItem:
    """One decoded slice: ``series``: index into the dataset's series; ``position``: in the ordered series."""

    series: int
    position: int
    image: MedicalImage | None = None
    error: str | None = None


def series_window(series: Series, window: tuple[float, float] | None) -> tuple[float, float] | None:
    """The window a series is read with: the configured HU window for CT (and for NIfTI volumes), else
    None (the file's own VOI window or the reader's default scaling)."""
    return window if window is not None and series.modality in WINDOWED_MODALITIES else None


def decode_slice(series: Series, ref: SliceRef, window: tuple[float, float] | None) -> MedicalImage:
    """One slice of ``series`` as the reader decodes it (raises ``ImageReadError`` / ``OSError``)."""
    w = series_window(series, window)
    if series.kind == "nifti":
        return read_image(ref.path, axis=2, slice_index=ref.index, window=w)
    return read_image(ref.path, frame=ref.index, window=w)


class SliceDataset(torch.utils.data.Dataset):
    """Items ``(series i, position p)`` for each ``p`` in ``picks[i]``, in series order."""

    def __init__(self, series: Sequence[Series], picks: Sequence[Sequence[int]],
                 window: tuple[float, float] | None = None) -> None:
        if len(series) != len(picks):
            raise ValueError(f"{len(series)} series but {len(picks)} slice choices")
        self.series = list(series)
        self.window = window
        self.items = [(i, p) for i, ps in enumerate(picks) for p in ps]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> SliceItem:
        i, p = self.items[index]
        series = self.series[i]
        try:
            return SliceItem(i, p, decode_slice(series, series.slices[p], self.window))
        except OSError as exc:
            return SliceItem(i, p, error=f"slice {p}: cannot read the file ({type(exc).__name__})")
        except ValueError as exc:  # ImageReadError: its message names the file and the problem only
            return SliceItem(i, p, error=f"slice {p}: {exc}")


def _as_list(items: list[SliceItem]) -> list[SliceItem]:
    return items


def slice_loader(dataset: SliceDataset, *, batch_size: int, num_workers: int) -> torch.utils.data.DataLoader:
    """Batches of :class:`SliceItem` in dataset order, decoded by ``num_workers`` processes (0: in this one)."""
    kwargs = ({"prefetch_factor": 4, "persistent_workers": False, "worker_init_fn": die_with_parent}
              if num_workers > 0 else {})
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                       collate_fn=_as_list, **kwargs)


def _finish_loader(batches: Iterator[list[SliceItem]]) -> None:
    """Ask an exhausted loader for one more batch, which makes it join its workers."""
    try:
        next(batches, None)
    except Exception as exc:  # every batch is already out: a failed shutdown is one line, not a traceback
        log.warning("decoding workers did not shut down cleanly (%s)", type(exc).__name__)


def decoded_batches(dataset: SliceDataset, *, batch_size: int, num_workers: int) -> Iterator[list[SliceItem]]:
    """The batches of :func:`slice_loader`, in the same order, without its start and end bubbles.

    With workers, a loader's first batch waits for the worker processes to start (a fork of this
    process) and decode it, and its end waits for them to exit; the model would idle through both.
    So the workers start on the batches after the first while this process decodes the first one
    itself, and they are shut down in a helper thread while the caller scores the last batch.
    """
    n = len(dataset)
    if num_workers == 0 or n <= batch_size:  # one batch: decoding it here is sooner than starting a worker
        yield from slice_loader(dataset, batch_size=batch_size, num_workers=0)
        return
    rest = slice_loader(torch.utils.data.Subset(dataset, range(batch_size, n)), batch_size=batch_size,
                        num_workers=num_workers)
    batches = iter(rest)  # the workers start here, before the first batch is decoded below
    closer: threading.Thread | None = None
    try:
        yield [dataset[i] for i in range(batch_size)]
        for k in range(len(rest)):
            batch = next(batches)
            if k == len(rest) - 1:
                # the loader is exhausted: asking it once more joins the workers, off the caller's path
                closer = threading.Thread(target=_finish_loader, args=(batches,), daemon=True)
                closer.start()
            yield batch
    finally:
        if closer is not None:
            closer.join()
        del batches  # an early stop (a job stopped after N studies) shuts the workers down here
