"""Where things live by default: the shared data folder and the demo's output."""

from __future__ import annotations

import os
from pathlib import Path

DEMO_DIR = Path("runs/demo")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def tiny_backbone_dir() -> Path:
    """The pretrained tiny Qwen2.5-VL shipped with the package (``MANIFEST.json`` there says how it was made)."""
    return Path(__file__).resolve().parent / "assets" / "tiny_backbone"


def shared_data_dir() -> Path:
    """``$MEDIC_AD_DATA`` or ``../shared/data`` beside the repository."""
    env = os.environ.get("MEDIC_AD_DATA")
    return Path(env) if env else repo_root().parent / "shared" / "data"


def default_checkpoint() -> Path | None:
    """``$MEDIC_AD_MODEL``, else the demo's final checkpoint if ``medic-ad demo`` has written one."""
    env = os.environ.get("MEDIC_AD_MODEL")
    if env:
        return Path(env)
    for base in (Path.cwd() / DEMO_DIR, repo_root() / DEMO_DIR):
        if (base / "checkpoint" / "medic_ad_config.json").is_file():
            return base / "checkpoint"
    return None
