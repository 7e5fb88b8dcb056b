"""MEDIC-AD checkpoints on disk: the one definition of their files, saving (atomic) and loading.

A checkpoint folder holds::

    medic_ad_config.json   format version, backbone reference + fingerprint, stage, MedicADConfig, extras
    medic_ad.safetensors   the three modules and the LoRA rows (HF keys under ``backbone.``)
    backbone/              an ordinary Qwen2.5-VL folder, when the checkpoint carries its backbone

Weights are read with safetensors only (never pickle). Every failure names the file it is about.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from medic_ad.models.config import MedicADConfig
from medic_ad.models.qwen2_5_vl.backbone import backbone_fingerprint, load_backbone

if TYPE_CHECKING:
    from medic_ad.models.medic_ad import MedicAD

__all__ = ["BACKBONE_DIR", "CONFIG_FILE", "FORMAT_VERSION", "WEIGHTS_FILE", "load_checkpoint",
           "read_checkpoint_meta", "replace_dir", "save_checkpoint"]

CONFIG_FILE = "medic_ad_config.json"
WEIGHTS_FILE = "medic_ad.safetensors"
BACKBONE_DIR = "backbone"
FORMAT_VERSION = 1


def save_checkpoint(model: "MedicAD", directory: str | Path, *, save_backbone: bool | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint atomically: a temp folder beside ``directory``, then a rename.

    The backbone is referenced by path; a backbone with no folder on disk (the tiny one) or
    ``save_backbone=True`` is written to ``backbone/`` inside the checkpoint.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        if save_backbone is None:
            save_backbone = not Path(model.backbone_source).is_dir()
        if save_backbone:
            model.save_backbone(tmp / BACKBONE_DIR)
            backbone_ref = BACKBONE_DIR
        else:
            backbone_ref = str(Path(model.backbone_source).resolve())
        save_file(model.module_state_dict(), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        meta = {"format_version": FORMAT_VERSION, "backbone": backbone_ref,
                "backbone_fingerprint": backbone_fingerprint(model.backbone), "stage": model.stage,
                "config": model.config.to_dict(), "pixel_cap": list(model.processor.pixel_cap), **(extra or {})}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_checkpoint(directory: str | Path, *, device: str = "cpu", dtype: str | torch.dtype | None = "auto",
                    merge_lora: bool = False, attn_implementation: str = "sdpa") -> "MedicAD":
    """The model saved by :func:`save_checkpoint` (exact round trip), in eval mode at its saved stage,
    with the image-size cap it was trained with (``pixel_cap``; older checkpoints keep the backbone's).

    ``merge_lora=True`` folds LoRA into the weights (inference only).
    """
    from medic_ad.models.builders import build_medic_ad

    directory = Path(directory)
    meta = read_checkpoint_meta(directory)
    backbone_path = Path(meta["backbone"])
    if not backbone_path.is_absolute():
        backbone_path = directory / backbone_path
    try:
        config = MedicADConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{directory / CONFIG_FILE}: invalid config ({exc})") from None
    backbone = load_backbone(backbone_path, dtype=dtype, device=device, attn_implementation=attn_implementation)
    if meta.get("pixel_cap") is not None:
        backbone.processor.set_pixel_cap(*meta["pixel_cap"])
    expected = meta.get("backbone_fingerprint")  # checkpoints without one cannot be checked
    if expected is not None and backbone_fingerprint(backbone.model) != expected:
        raise ValueError(
            f"{directory}: the backbone at {backbone_path} is not the one this checkpoint was trained on "
            "(its weights differ: the folder was replaced or retrained after the checkpoint was saved). "
            "Restore that backbone, or keep checkpoints self-contained with save_pretrained(..., save_backbone=True)"
        )
    model = build_medic_ad(backbone, config)
    weights = directory / WEIGHTS_FILE
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{weights}: unreadable or truncated weights ({exc})") from None
    if meta.get("stage", 1) < 3:
        state = untrained_decoder_as_built(state, model)
    model.load_module_state_dict(state, source=weights)
    model.backbone_source = str(backbone_path)
    model.to(device)
    stage = meta.get("stage", 1)
    model.set_stage(stage if stage in (1, 2, 3) else 1)
    model.eval()
    if merge_lora:
        model.merge_lora()
    return model


def untrained_decoder_as_built(state: dict[str, torch.Tensor], model: "MedicAD") -> dict[str, torch.Tensor]:
    """``state`` with this build's heatmap decoder when the saved one has another layout.

    Before stage 3 the decoder is as initialised, never trained, so a stage-1 or stage-2 checkpoint saved
    with an earlier decoder layout keeps its trained modules and takes the decoder ``model`` was built
    with; stage 3 trains it from there. A stage-3 checkpoint's decoder is trained and is never replaced.
    """
    built = {f"heatmap.{k}": v for k, v in model.heatmap.state_dict().items()}
    saved = {k: v for k, v in state.items() if k.startswith("heatmap.")}
    if saved.keys() == built.keys() and all(saved[k].shape == v.shape for k, v in built.items()):
        return state
    return {**{k: v for k, v in state.items() if not k.startswith("heatmap.")}, **built}


def read_checkpoint_meta(directory: str | Path) -> dict[str, Any]:
    """The checkpoint's JSON, or one readable error naming what is wrong with the folder."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: MEDIC-AD checkpoint folder does not exist")
    cfg = directory / CONFIG_FILE
    if not cfg.is_file():
        raise ValueError(f"{directory}: not a MEDIC-AD checkpoint (no {CONFIG_FILE})")
    try:
        meta = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{cfg}: unreadable JSON (truncated or corrupt)") from None
    if not isinstance(meta, dict) or "backbone" not in meta or "config" not in meta:
        raise ValueError(f"{cfg}: missing 'backbone' or 'config'")
    if not (directory / WEIGHTS_FILE).is_file():
        raise ValueError(f"{directory}: no {WEIGHTS_FILE}")
    return meta


def replace_dir(src: Path, dst: Path) -> None:
    """Put ``src`` at ``dst``; an existing ``dst`` survives until the new one is in place."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
