"""The job's JSONL records: append-only part files per rank, what is already done, and the sorted merge.

Each rank appends one complete line per finished study to its own part file (one ``write`` of the
whole line, flushed), so a killed process loses at most the study in flight; a line torn by a kill
is ignored and cut off when the part is next opened. The file is fsync'd at most once a second and
on close, not per line: per-line syncs are a visible share of a small model's time per study
(``docs/studies.md``, "Resume"), and what a crash of the whole machine can lose is the last second's
rows, which a rerun redoes (their DICOM objects have stable UIDs, so they are replaced, not
duplicated). The merge reads the previous merged file and
every part, keeps one row per key, sorts by key and replaces the merged file atomically; the parts
are removed only after that. What counts as done is the union of all of them, so a rerun with a
different number of processes skips the same studies.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = ["PartWriter", "done_keys", "merge_parts", "part_path", "read_rows"]

PARTS_DIR = "parts"
Key = Callable[[dict[str, Any]], tuple]


def part_path(out: Path, name: str, rank: int, world: int) -> Path:
    """``out/parts/<name>.rank<r>-of-<n>.jsonl``."""
    return out / PARTS_DIR / f"{name}.rank{rank}-of-{world}.jsonl"


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The complete rows of a JSONL file (a torn last line and undecodable lines are skipped)."""
    if not path.is_file():
        return []
    rows = []
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _all_rows(out: Path, name: str) -> list[dict[str, Any]]:
    rows = read_rows(out / f"{name}.jsonl")
    for part in sorted((out / PARTS_DIR).glob(f"{name}.rank*.jsonl")):
        rows += read_rows(part)
    return rows


def done_keys(out: Path, name: str, key: Key) -> set[tuple]:
    """Keys of every row already written, merged or still in a part."""
    return {key(r) for r in _all_rows(out, name)}


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line without its newline (a write cut short by a kill)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        fh.truncate(data.rfind(b"\n") + 1)


class PartWriter:
    """Appends rows to one rank's part file: each line is with the OS (whole) before :meth:`append`
    returns, and on disk within ``sync_every_s`` seconds and after :meth:`close`."""

    def __init__(self, path: Path, *, sync_every_s: float = 1.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_tail(path)
        self.path = path
        self.sync_every_s = sync_every_s
        self._fh = open(path, "ab")
        self._synced = time.monotonic()

    def append(self, row: dict[str, Any]) -> None:
        self._fh.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        self._fh.flush()
        if time.monotonic() - self._synced >= self.sync_every_s:
            self._sync()

    def _sync(self) -> None:
        os.fsync(self._fh.fileno())
        self._synced = time.monotonic()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            self._sync()
            self._fh.close()

    def __enter__(self) -> "PartWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_parts(out: Path, name: str, key: Key, *, extra: Iterable[dict[str, Any]] = ()) -> Path:
    """Merge ``out/<name>.jsonl``, the parts and ``extra`` rows into ``out/<name>.jsonl``, one row per key,
    sorted by key; then remove the merged parts."""
    from medic_ad.serve.files import atomic_write_text

    parts = sorted((out / PARTS_DIR).glob(f"{name}.rank*.jsonl"))
    by_key: dict[tuple, dict[str, Any]] = {}
    for row in [*_all_rows(out, name), *extra]:
        by_key.setdefault(key(row), row)
    target = out / f"{name}.jsonl"
    text = "".join(json.dumps(by_key[k], ensure_ascii=False) + "\n" for k in sorted(by_key))
    atomic_write_text(target, text)
    for part in parts:
        part.unlink(missing_ok=True)
    try:
        (out / PARTS_DIR).rmdir()
    except OSError:  # other names' parts are still there
        pass
    return target
