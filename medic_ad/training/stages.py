"""What the stage recipes share: input-checkpoint checks and the model's own loss terms."""

from __future__ import annotations

from pathlib import Path

import torch

from medic_ad.models.checkpoint import read_checkpoint_meta
from medic_ad.models.medic_ad import MedicAD
from medic_ad.models.precision import frozen_dtype
from medic_ad.training.config import TrainConfig


def load_stage_input(cfg: TrainConfig, expected_stage: int) -> MedicAD:
    """The MEDIC-AD checkpoint a stage starts from; a clear error if it is missing or of another stage."""
    src = Path(cfg.input_checkpoint)
    try:
        meta = read_checkpoint_meta(src)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"stage {cfg.stage} input checkpoint {src} does not exist (run stage {expected_stage} first)"
        ) from None
    except ValueError as exc:
        raise ValueError(f"stage {cfg.stage} needs a stage-{expected_stage} MEDIC-AD checkpoint: {exc}") from None
    if meta.get("stage") != expected_stage:
        raise ValueError(
            f"stage {cfg.stage} needs a stage-{expected_stage} checkpoint, but {src} is from stage {meta.get('stage')}"
        )
    saved = meta.get("config", {})
    differ = sorted(k for k, v in cfg.model.items() if saved.get(k, v) != v or k not in saved)
    if differ:
        raise ValueError(f"stage {cfg.stage}: the config's model options {', '.join(differ)} differ from those of "
                         f"{src} (they are only checked here: the checkpoint's modules are what trains)")
    return MedicAD.from_pretrained(src, dtype=frozen_dtype(cfg.precision), attn_implementation=cfg.attn_implementation)


def model_inputs(batch: dict) -> dict:
    """The batch without the loss-only entries."""
    return {k: v for k, v in batch.items() if k not in ("masks", "image_labels")}


def lm_loss(out) -> torch.Tensor:
    if out.loss is None:
        raise ValueError("the batch has no answer labels")
    return out.loss
