"""Reading the repository's YAML files (recipe configs, evaluation tasks) with one readable error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_yaml(path: str | Path, *, what: str) -> Any:
    """The parsed contents of ``path``; a missing file or malformed YAML raises one error naming the
    file (``what`` says what it should have been, e.g. "config file")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: malformed YAML ({str(exc).splitlines()[0]})") from None
