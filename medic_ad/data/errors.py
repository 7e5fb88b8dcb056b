"""Errors and warnings of the data layer.

Every message is one line that names the file or folder and says what is wrong. None of them
ever carries a DICOM patient field: messages are built from fixed text, never from header values.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["DatasetFormatError", "EmptyDatasetError", "ImageReadError", "LoadWarning"]


class ImageReadError(ValueError):
    """An image file that exists but cannot be read: ``"scan.dcm: truncated DICOM (...)"``."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class DatasetFormatError(ValueError):
    """A dataset folder whose layout matches no registered format, or more than one."""

    def __init__(self, root: str | Path, problem: str, candidates: Sequence[str] = ()) -> None:
        self.root = Path(root)
        self.candidates = tuple(candidates)
        super().__init__(f"{root}: {problem}")


class EmptyDatasetError(ValueError):
    """A dataset folder that yields no samples (after skipping bad rows and filtering the split)."""

    def __init__(self, root: str | Path, problem: str) -> None:
        self.root = Path(root)
        super().__init__(f"{root}: {problem}")


class LoadWarning(UserWarning):
    """Rows skipped while loading a dataset (missing files, malformed lines, mask size mismatches)."""
