"""Which model a folder holds, and the models to evaluate as named rows.

A folder is a MEDIC-AD checkpoint, a bare Qwen2.5-VL-architecture backbone (the baseline), or names a
registered model in ``model.json`` (``{"model": "dummy"}``); the class comes from the model registry
(:func:`medic_ad.models.interface.get_model`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medic_ad.models.interface import MedicalVLM
__all__ = ["EvalModel", "MODEL_FILE", "load_eval_model", "model_kind", "parse_model_arg", "unique_names"]

MEDIC_AD_CONFIG = "medic_ad_config.json"
#: a folder naming its registered model: ``{"model": NAME}``
MODEL_FILE = "model.json"


def model_kind(path: str | Path) -> str:
    """The registered model name for a folder, or one clear error naming what it is instead."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: model folder does not exist")
    if not folder.is_dir():
        raise ValueError(f"{folder}: --model takes a folder (a MEDIC-AD checkpoint or a Qwen2.5-VL model folder)")
    if (folder / MEDIC_AD_CONFIG).is_file():
        return "medic_ad"
    named = folder / MODEL_FILE
    if named.is_file():
        from medic_ad.models.interface import model_names

        try:
            name = json.loads(named.read_text()).get("model")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise ValueError(f"{named}: unreadable JSON (truncated or corrupt)") from None
        if name not in model_names():
            raise ValueError(f"{named}: model {name!r} is not registered ({', '.join(model_names())})")
        return name
    config = folder / "config.json"
    if config.is_file():
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise ValueError(f"{config}: unreadable JSON (truncated or corrupt)") from None
        if model_type == "qwen2_5_vl":
            return "baseline"
        raise ValueError(f"{folder}: neither a MEDIC-AD checkpoint nor a Qwen2.5-VL model "
                         f"(config.json says model_type {model_type!r}, expected 'qwen2_5_vl')")
    raise ValueError(f"{folder}: neither a MEDIC-AD checkpoint ({MEDIC_AD_CONFIG}) nor a Qwen2.5-VL model folder "
                     "(config.json with model_type 'qwen2_5_vl')")


def load_eval_model(path: str | Path, *, device: str = "cpu", dtype: str | None = "auto") -> "MedicalVLM":
    """The registered model class for the folder (:func:`model_kind`), loaded; anything else → one ``ValueError``."""
    from medic_ad.models.interface import get_model

    return get_model(model_kind(path)).load(path, device=device, dtype=dtype)


@dataclass
class EvalModel:
    """A model to evaluate: its row name in the tables, its folder, its registered model name (``kind``)
    and (once loaded, or handed in) the model."""

    name: str
    path: Path
    kind: str
    model: "MedicalVLM | None" = None

    @property
    def has_heatmaps(self) -> bool:
        from medic_ad.models.interface import get_model

        return get_model(self.kind).has_heatmaps

    def load(self, *, device: str = "cpu", dtype: str | None = "auto") -> "MedicalVLM":
        if self.model is None:
            self.model = load_eval_model(self.path, device=device, dtype=dtype)
        return self.model

    def release(self) -> None:
        self.model = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": str(self.path), "kind": self.kind}
        if self.kind == "medic_ad":
            try:
                meta = json.loads((self.path / MEDIC_AD_CONFIG).read_text())
                out["config"] = meta.get("config")
                out["stage"] = meta.get("stage")
            except (OSError, json.JSONDecodeError):
                pass
        return out


def parse_model_arg(arg: str) -> tuple[str | None, Path]:
    """``NAME=DIR`` or ``DIR`` → (name or None, path)."""
    if "=" in arg:
        name, _, path = arg.partition("=")
        if name and path and not Path(arg).exists():
            return name.strip(), Path(path).expanduser()
    return None, Path(arg).expanduser()


def unique_names(paths: list[Path], names: list[str | None]) -> list[str]:
    """Row names: given names, else folder names; clashes get their parent folder's name, then a number."""
    out: list[str] = []
    base = [n or p.resolve().name for n, p in zip(names, paths)]
    for i, (n, p) in enumerate(zip(base, paths)):
        name = n
        if names[i] is None and base.count(n) > 1:
            name = f"{p.resolve().parent.name}-{n}"
        k = 2
        candidate = name
        while candidate in out:
            candidate = f"{name}-{k}"
            k += 1
        out.append(candidate)
    return out


def resolve_models(args: list[str]) -> list[EvalModel]:
    """``--model`` arguments → :class:`EvalModel` list (kind checked now, weights loaded later)."""
    if not args:
        raise ValueError("no --model given")
    parsed = [parse_model_arg(a) for a in args]
    names = unique_names([p for _, p in parsed], [n for n, _ in parsed])
    models = []
    for name, (_, path) in zip(names, parsed):
        models.append(EvalModel(name=name, path=path.resolve(), kind=model_kind(path)))
    return models
