"""Stage 2 recipe (difference): Diff Q-Former + MLP and LoRA, on prior/current pairs (configs may
replay detection questions so the shared LoRA keeps stage 1's answers).

Input: a stage-1 MEDIC-AD checkpoint. Loss: the language loss on the change answer
("A: No significant change" / "B: Improved" / "C: Worsened"). With ``calibration: N`` the options'
offsets are fitted on N fresh training cases per task before the final save
(:mod:`medic_ad.training.calibration`; what was fitted, and how it scored, goes into the checkpoint's
config file under ``calibration``).
"""

from __future__ import annotations

import torch

from medic_ad.data.collator import Collator
from medic_ad.training.calibration import calibrate_choices
from medic_ad.training.config import TrainConfig
from medic_ad.training.loop import TrainResult, run_training
from medic_ad.training.memory import apply_memory_policy, apply_pixel_caps
from medic_ad.training.mixture import build_sampler
from medic_ad.training.stages import lm_loss, load_stage_input, model_inputs


def main(cfg: TrainConfig, *, resume: bool = False) -> TrainResult:
    if cfg.stage != 2:
        raise ValueError(f"stage2_difference runs stage 2, the config says stage {cfg.stage}")
    torch.manual_seed(cfg.seed)
    model = load_stage_input(cfg, expected_stage=1)
    if not model.config.use_diff:
        raise ValueError(f"{cfg.input_checkpoint}: built with use_diff=False, it has no Diff Processor to train")
    model.set_stage(2)
    apply_memory_policy(cfg, model, backbone=model.backbone)
    if cfg.gradient_checkpointing:
        model.backbone.gradient_checkpointing_enable()
    collate = Collator(model.processor, use_diff=True, with_masks=False)
    sampler = build_sampler(cfg)
    apply_pixel_caps(sampler, cfg, model.processor)

    def loss_fn(m, batch):
        lm = lm_loss(m(**model_inputs(batch)))
        return cfg.loss.lm_weight * lm, {"lm": lm.item()}

    def save_final(m, folder):
        report = calibrate_choices(m, cfg, n=cfg.calibration) if cfg.calibration else None
        m.save_pretrained(folder, extra=None if report is None else {"calibration": report})

    return run_training(cfg, model=model, loss_fn=loss_fn, collate=collate, sampler=sampler,
                        save_final=save_final, resume=resume)
