"""Stage-wise training: one flat recipe per stage on a shared Accelerate loop."""

from __future__ import annotations

import importlib

from medic_ad.training.config import TrainConfig, load_config

RECIPES = {
    0: "medic_ad.training.stage0_pretrain",
    1: "medic_ad.training.stage1_anomaly",
    2: "medic_ad.training.stage2_difference",
    3: "medic_ad.training.stage3_heatmap",
}


def train(cfg: TrainConfig, *, resume: bool = False):
    """Run the recipe of ``cfg.stage``."""
    return importlib.import_module(RECIPES[cfg.stage]).main(cfg, resume=resume)


__all__ = ["RECIPES", "TrainConfig", "load_config", "train"]
