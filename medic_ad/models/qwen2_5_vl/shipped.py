"""The pretrained tiny Qwen2.5-VL shipped in the package (``medic_ad/assets/tiny_backbone``).

It is an ordinary Qwen2.5-VL folder, read by the same :func:`load_backbone` a Lingshu-7B folder
takes. ``MANIFEST.json`` beside it records how it was made (the command that rebuilds it, the
commit, the data, the steps, the wall time) and the SHA-256 of every file, so a damaged copy (a
Git LFS pointer, a truncated download) is refused by name before anything trains on it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from medic_ad.paths import tiny_backbone_dir

__all__ = ["MANIFEST_FILE", "ShippedBackboneError", "file_sha256", "read_manifest", "verify_tiny_backbone"]

MANIFEST_FILE = "MANIFEST.json"


class ShippedBackboneError(ValueError):
    """The shipped backbone folder is missing, damaged or does not match its manifest."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(folder: str | Path | None = None) -> dict[str, Any]:
    """The manifest of ``folder`` (default: the shipped tiny backbone)."""
    folder = Path(folder) if folder is not None else tiny_backbone_dir()
    path = folder / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ShippedBackboneError(f"{path}: no manifest; the backbone folder is missing or incomplete") from None
    except (OSError, ValueError) as exc:
        raise ShippedBackboneError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        raise ShippedBackboneError(f"{path}: the manifest lists no files")
    return manifest


def verify_tiny_backbone(folder: str | Path | None = None) -> Path:
    """``folder`` (default: the shipped tiny backbone) after checking every file against its manifest."""
    folder = Path(folder) if folder is not None else tiny_backbone_dir()
    manifest = read_manifest(folder)
    for name, expected in sorted(manifest["files"].items()):
        path = folder / name
        if not path.is_file():
            raise ShippedBackboneError(f"{path}: listed in {MANIFEST_FILE} but missing")
        if file_sha256(path) != expected:
            raise ShippedBackboneError(f"{path}: SHA-256 differs from {MANIFEST_FILE} (a damaged or replaced "
                                       "file; a Git LFS pointer reads like this too)")
    return folder
