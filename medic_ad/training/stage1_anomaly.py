"""Stage 1 recipe (anomaly): soft prompts, system tokens, Anomaly Q-Former + MLP, LoRA on the LLM.

Input: a Qwen2.5-VL-architecture folder (Lingshu-7B, or stage 0's tiny backbone). Loss: the language
loss on answer tokens + anomaly-map supervision from masks (focal/BCE) or image labels (top-k).
"""

from __future__ import annotations

from pathlib import Path

import torch

from medic_ad.data.collator import Collator
from medic_ad.models.config import MedicADConfig
from medic_ad.models.checkpoint import CONFIG_FILE
from medic_ad.models.medic_ad import MedicAD
from medic_ad.models.precision import frozen_dtype
from medic_ad.training.config import TrainConfig
from medic_ad.training.loop import TrainResult, run_training
from medic_ad.training.losses import anomaly_map_loss
from medic_ad.training.memory import apply_memory_policy, apply_pixel_caps
from medic_ad.training.mixture import build_sampler
from medic_ad.training.stages import lm_loss, model_inputs


def build(cfg: TrainConfig) -> MedicAD:
    src = cfg.input_checkpoint
    if src == "tiny":
        return MedicAD.tiny(seed=cfg.seed, attn_implementation=cfg.attn_implementation, **cfg.model)
    if (Path(src) / CONFIG_FILE).is_file():
        raise ValueError(f"stage 1 starts from a Qwen2.5-VL backbone folder; {src} is already a MEDIC-AD checkpoint")
    # read in the policy's frozen dtype: bf16-frozen never holds the backbone in float32, in host RAM or after
    return MedicAD.from_backbone(src, config=MedicADConfig(**cfg.model), dtype=frozen_dtype(cfg.precision),
                                 seed=cfg.seed, attn_implementation=cfg.attn_implementation)


def main(cfg: TrainConfig, *, resume: bool = False) -> TrainResult:
    if cfg.stage != 1:
        raise ValueError(f"stage1_anomaly runs stage 1, the config says stage {cfg.stage}")
    torch.manual_seed(cfg.seed)
    model = build(cfg)
    model.set_stage(1)
    apply_memory_policy(cfg, model, backbone=model.backbone)
    if cfg.gradient_checkpointing:
        model.backbone.gradient_checkpointing_enable()
    collate = Collator(model.processor, use_diff=model.config.use_diff)
    sampler = build_sampler(cfg)
    apply_pixel_caps(sampler, cfg, model.processor)

    def loss_fn(m, batch):
        out = m(**model_inputs(batch))
        lm = lm_loss(out)
        maps = anomaly_map_loss(out.anomaly_maps, batch["masks"], batch["image_labels"],
                                gamma=cfg.loss.focal_gamma, top_k=cfg.loss.top_k,
                                share_weight=cfg.loss.share_weight)
        total = cfg.loss.lm_weight * lm
        parts = {"lm": lm.item()}
        if maps is not None:
            total = total + cfg.loss.map_weight * maps
            parts["map"] = maps.item()
        return total, parts

    return run_training(cfg, model=model, loss_fn=loss_fn, collate=collate, sampler=sampler,
                        save_final=lambda m, d: m.save_pretrained(d), resume=resume)
