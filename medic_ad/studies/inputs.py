"""What ``medic-ad predict`` reads: files, folders (walked recursively) and manifest CSVs (a ``path`` column)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable

__all__ = ["SIDECAR_SUFFIXES", "expand_inputs", "read_manifest", "walk_folder"]

#: files skipped when walking a folder: the metadata that sits beside images in archive folders
SIDECAR_SUFFIXES = {".csv", ".tsv", ".json", ".jsonl", ".md", ".txt", ".yaml", ".yml", ".xml", ".html"}


def read_manifest(path: Path) -> list[Path]:
    """The ``path`` column of a CSV (other columns ignored); relative paths are relative to the CSV."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise ValueError(f"{path}: a manifest needs a 'path' column")
            rows = [(row.get("path") or "").strip() for row in reader]
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 CSV manifest") from None
    out = []
    for text in rows:
        if text:
            p = Path(text)
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def walk_folder(folder: Path, *, skip: frozenset[str] | set[str] = SIDECAR_SUFFIXES) -> list[Path]:
    """The files under ``folder`` (recursively, sorted), hidden entries and files ending in ``skip`` left out."""
    files = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or p.is_dir():
            continue
        if p.suffix.lower() in skip:
            continue
        files.append(p)
    return files


def expand_inputs(inputs: Iterable[str | Path], manifests: Iterable[str | Path] = ()) -> tuple[list[Path], list[Path]]:
    """``(named, found)``: the files named on the command line, and those found in folders and manifests.

    A named file or folder that does not exist is an error (raised here, before any work); a file
    listed in a manifest that does not exist is left for the scan to report as a failed row. Each
    file appears once, in the order first seen.
    """
    named: list[Path] = []
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = walk_folder(item)
            if not files:
                raise ValueError(f"{item}: no files in this folder")
            found += files
        elif not item.exists():
            raise FileNotFoundError(f"{item}: no such file or folder")
        elif item.suffix.lower() == ".csv":
            found += read_manifest(item)
        else:
            named.append(item)
    for manifest in map(Path, manifests):
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest}: no such manifest file")
        found += read_manifest(manifest)
    seen: set[Path] = set()
    out_named, out_found = [], []
    for group, out in ((named, out_named), (found, out_found)):
        for p in group:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out_named, out_found
