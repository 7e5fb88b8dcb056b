"""Resumable training state, written atomically and without pickle.

``step-N/`` holds ``trainable.safetensors`` (the stage's trainable weights), ``optimizer.safetensors``
(every optimizer state tensor) and ``state.json`` (step, optimizer param-group settings, scheduler
state, RNG seeds, the config). A checkpoint is written into a temporary folder and renamed into
place, and ``latest`` is replaced atomically afterwards: a kill or a full disk at any moment leaves the
previous checkpoint complete and ``latest`` pointing at it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

LATEST = "latest"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the folder."""


@dataclass
class TrainState:
    step: int
    trainable: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    extra: dict[str, Any]


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for flat, value in list(tensors.items()) + list(meta.get("scalars", {}).items()):
        idx, key = flat.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_train_state(root: str | Path, state: TrainState, *, keep: int = 2) -> Path:
    """Write ``root/step-N`` atomically, point ``root/latest`` at it, prune to the newest ``keep``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".writing-", dir=root))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.trainable.items()},
                  str(tmp / "trainable.safetensors"))
        opt_tensors, opt_meta = _flatten_optimizer(state.optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        meta = {"step": state.step, "optimizer": opt_meta, "scheduler": state.scheduler, "extra": state.extra}
        (tmp / "state.json").write_text(json.dumps(meta, indent=1, default=_json_default))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer = root / f".{LATEST}.tmp"
        pointer.write_text(final.name)
        os.replace(pointer, root / LATEST)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        why = "disk full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
        previous = latest_checkpoint(root)
        kept = f"; the previous checkpoint {previous} is intact" if previous else ""
        raise CheckpointError(f"{final}: checkpoint write failed ({why}){kept}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: str | Path) -> Path | None:
    root = Path(root)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    return path if path.is_dir() else None


def load_train_state(path: str | Path) -> TrainState:
    path = Path(path)
    try:
        meta = json.loads((path / "state.json").read_text())
        trainable = load_file(str(path / "trainable.safetensors"))
        optimizer = _unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), meta["optimizer"])
    except (OSError, json.JSONDecodeError, KeyError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: unreadable training checkpoint ({exc.__class__.__name__}: {exc})") from None
    return TrainState(step=int(meta["step"]), trainable=trainable, optimizer=optimizer,
                      scheduler=meta["scheduler"], extra=meta.get("extra", {}))


def _json_default(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
