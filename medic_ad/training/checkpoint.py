"""Resumable training state, written atomically and without pickle.

``step-N/`` holds ``trainable.safetensors`` (the stage's trainable weights), ``optimizer.safetensors``
(every optimizer state tensor) and ``state.json`` (step, the rest of the optimizer state, scheduler
state, the config). Under DeepSpeed ZeRO each rank holds only its share of the optimizer state, so each
writes ``optimizer-rank{r}.safetensors`` and ``.json`` instead, and a resume needs the same number of ranks. A checkpoint is written into a temporary folder and renamed into
place, and ``latest`` is replaced atomically afterwards: a kill or a full disk at any moment leaves the
previous checkpoint complete and ``latest`` pointing at it.
"""

from __future__ import annotations

import enum
import errno
import importlib
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
    optimizer_shards: int = 0  # ranks that each wrote their share of the optimizer state (0: one full state)


# Classes an optimizer state may hold besides tensors and plain values (DeepSpeed's loss scaler, its
# fragment addresses, its stage enum). Only these are rebuilt on load: a checkpoint cannot name code to run.
_TRUSTED_MODULES = ("deepspeed.", "torch.")


def flatten_state(state: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Any nesting of dicts, lists, tuples, tensors and plain values → (tensors by path, a JSON skeleton).

    Handles ``torch.optim`` state dicts (integer parameter keys) and DeepSpeed ZeRO's (no ``"state"`` key;
    a loss-scaler object, enums and dataclasses beside the tensors) alike.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if torch.is_tensor(value):
            if hasattr(value, "to_local"):  # a DTensor's local shard
                value = value.to_local()
            tensors[path] = value.detach().cpu().clone()  # a copy: views of one buffer cannot share a file
            return {"__tensor__": path}
        if isinstance(value, enum.Enum):
            return {"__enum__": _qualname(value), "value": value.value}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in value):
                return {k: walk(v, f"{path}/{k}") for k, v in value.items()}
            return {"__items__": [[walk(k, f"{path}/key{i}"), walk(v, f"{path}/{i}")]
                                  for i, (k, v) in enumerate(value.items())]}
        if isinstance(value, (list, tuple)):
            items = [walk(v, f"{path}/{i}") for i, v in enumerate(value)]
            return items if isinstance(value, list) else {"__tuple__": items}
        if type(value).__module__.startswith(_TRUSTED_MODULES) and hasattr(value, "__dict__"):
            return {"__object__": _qualname(value), "attrs": walk(vars(value), f"{path}/attrs")}
        raise TypeError(f"optimizer state at {path or '/'}: cannot store a {type(value).__name__}")

    return tensors, walk(state, "")


def unflatten_state(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    def build(node: Any) -> Any:
        if isinstance(node, list):
            return [build(v) for v in node]
        if not isinstance(node, dict):
            return node
        if "__tensor__" in node:
            return tensors[node["__tensor__"]]
        if "__tuple__" in node:
            return tuple(build(v) for v in node["__tuple__"])
        if "__items__" in node:
            return {_hashable(build(k)): build(v) for k, v in node["__items__"]}
        if "__enum__" in node:
            return _trusted_class(node["__enum__"])(node["value"])
        if "__object__" in node:
            cls = _trusted_class(node["__object__"])
            obj = cls.__new__(cls)
            obj.__dict__.update(build(node["attrs"]))
            return obj
        return {k: build(v) for k, v in node.items()}

    return build(skeleton)


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key


def _qualname(value: Any) -> str:
    return f"{type(value).__module__}:{type(value).__qualname__}"


def _trusted_class(name: str) -> type:
    module, _, qualname = name.partition(":")
    if not module.startswith(_TRUSTED_MODULES):
        raise CheckpointError(f"optimizer state names class {name}, outside {', '.join(_TRUSTED_MODULES)}")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, skeleton = flatten_state(state)
    return tensors, {"skeleton": skeleton}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    if "skeleton" in meta:
        return unflatten_state(tensors, meta["skeleton"])
    # the earlier layout: per-parameter tensors and scalars keyed "index.name"
    state: dict[int, dict[str, Any]] = {}
    for flat, value in list(tensors.items()) + list(meta.get("scalars", {}).items()):
        idx, key = flat.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _shard_dir(root: Path, step: int) -> Path:
    return root / f".shards-{step:08d}"


def write_optimizer_shard(root: str | Path, step: int, rank: int, optimizer: dict[str, Any]) -> None:
    """One rank's share of a sharded optimizer state, staged for :func:`save_train_state` (``shards=N``)."""
    folder = _shard_dir(Path(root), step)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, meta = _flatten_optimizer(optimizer)
    save_file(tensors, str(folder / f"optimizer-rank{rank}.safetensors"))
    (folder / f"optimizer-rank{rank}.json").write_text(json.dumps(meta, default=_json_default))


def save_train_state(root: str | Path, state: TrainState, *, keep: int = 2, shards: int = 0) -> Path:
    """Write ``root/step-N`` atomically, point ``root/latest`` at it, prune to the newest ``keep``.

    ``shards``: the number of ranks whose optimizer shares :func:`write_optimizer_shard` staged (every rank
    has written before this is called); 0: ``state.optimizer`` is the full state.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".writing-", dir=root))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.trainable.items()},
                  str(tmp / "trainable.safetensors"))
        if shards:
            staged = _shard_dir(root, state.step)
            for rank in range(shards):
                for suffix in (".safetensors", ".json"):
                    os.replace(staged / f"optimizer-rank{rank}{suffix}", tmp / f"optimizer-rank{rank}{suffix}")
            shutil.rmtree(staged, ignore_errors=True)
            opt_meta: dict[str, Any] = {"shards": shards}
        else:
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


def load_train_state(path: str | Path, *, rank: int = 0) -> TrainState:
    """The checkpoint at ``path``; of a sharded optimizer state, rank ``rank``'s share."""
    path = Path(path)
    try:
        meta = json.loads((path / "state.json").read_text())
        trainable = load_file(str(path / "trainable.safetensors"))
        shards = int(meta["optimizer"].get("shards", 0))
        if shards:
            if rank >= shards:
                raise CheckpointError(f"{path}: optimizer state of {shards} ranks has no share for rank {rank}")
            opt_meta = json.loads((path / f"optimizer-rank{rank}.json").read_text())
            optimizer = _unflatten_optimizer(load_file(str(path / f"optimizer-rank{rank}.safetensors")), opt_meta)
        else:
            optimizer = _unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), meta["optimizer"])
    except (OSError, json.JSONDecodeError, KeyError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: unreadable training checkpoint ({exc.__class__.__name__}: {exc})") from None
    return TrainState(step=int(meta["step"]), trainable=trainable, optimizer=optimizer,
                      scheduler=meta["scheduler"], extra=meta.get("extra", {}), optimizer_shards=shards)


def _json_default(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
