"""Stage 3 recipe (explainability): the heatmap decoder alone, everything else frozen.

Input: a stage-2 MEDIC-AD checkpoint. Loss: Dice + BCE between the heatmap and the lesion mask (a
normal image's target is empty). The LLM is not run: the decoder reads the vision features, f_p(V*)
and the ``<Ano>`` tokens only.
"""

from __future__ import annotations

import torch

from medic_ad.data.collator import Collator
from medic_ad.training.config import TrainConfig
from medic_ad.training.loop import TrainResult, run_training
from medic_ad.training.losses import heatmap_loss
from medic_ad.training.memory import apply_memory_policy, apply_pixel_caps
from medic_ad.training.mixture import build_sampler
from medic_ad.training.stages import load_stage_input, model_inputs


def main(cfg: TrainConfig, *, resume: bool = False) -> TrainResult:
    if cfg.stage != 3:
        raise ValueError(f"stage3_heatmap runs stage 3, the config says stage {cfg.stage}")
    torch.manual_seed(cfg.seed)
    model = load_stage_input(cfg, expected_stage=2)
    model.set_stage(3)
    apply_memory_policy(cfg, model, backbone=model.backbone)
    collate = Collator(model.processor, use_diff=model.config.use_diff)
    sampler = build_sampler(cfg)
    apply_pixel_caps(sampler, cfg, model.processor)

    def loss_fn(m, batch):
        out = m(**model_inputs(batch), compute_lm=False, compute_heatmap=True)
        loss = heatmap_loss(out.heatmap_logits, batch["masks"], batch["image_labels"],
                            dice_weight=cfg.loss.dice_weight, bce_weight=cfg.loss.bce_weight,
                            pos_weight_power=cfg.loss.pos_weight_power)
        if loss is None:
            loss = sum(h.sum() for h in out.heatmap_logits) * 0.0  # no mask in this batch: a zero step
        return loss, {"heatmap": loss.item()}

    return run_training(cfg, model=model, loss_fn=loss_fn, collate=collate, sampler=sampler,
                        save_final=lambda m, d: m.save_pretrained(d), resume=resume)
