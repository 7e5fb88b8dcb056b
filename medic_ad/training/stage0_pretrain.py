"""Stage 0 recipe: pretrain a random tiny backbone before the paper's stages (design doc §5).

The paper starts from Lingshu-7B, already trained on medical images. A random tiny backbone has
learned nothing, so this stage trains it (vision tower + LLM) on objectives that use **no
abnormal/normal label**: modality captions ("What modality is this image?" → "This is a brain MRI.")
and masked-patch reconstruction (a share of patches is blanked at the input and every tapped full-
attention block's output must predict the blanked patches' pixels through a linear head that is
thrown away afterwards). The result is an ordinary Qwen2.5-VL folder — the tiny analogue of Lingshu.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from medic_ad.data.collator import Collator
from medic_ad.models.qwen2_5_vl.backbone import Backbone, VisionTap, load_backbone
from medic_ad.models.qwen2_5_vl.tiny import TinyBackboneConfig, build_tiny_qwen2_5_vl
from medic_ad.training.config import TrainConfig
from medic_ad.training.loop import TrainResult, run_training
from medic_ad.training.mixture import build_sampler
from medic_ad.training.stages import model_inputs


class BackbonePretrainer(nn.Module):
    """A Qwen2.5-VL with a throw-away pixel head for masked-patch reconstruction."""

    def __init__(self, *, backbone: Backbone, mask_ratio: float = 0.3, recon_size: int = 7) -> None:
        super().__init__()
        self.model = backbone.model
        self.processor = backbone.processor
        self.source = backbone.source
        visual = self.model.model.visual
        self.tap = VisionTap(visual)
        self.layers = list(visual.config.fullatt_block_indexes)
        self.mask_ratio = mask_ratio
        self.recon_size = recon_size
        self.recon_heads = nn.ModuleList(
            [nn.Linear(visual.config.hidden_size, recon_size * recon_size) for _ in self.layers]
        )

    def patch_targets(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, C·T·P·P) patch rows → (N, r²) grey patch pixels downsampled to r × r."""
        p = self.tap.patch_size
        x = pixel_values.view(pixel_values.shape[0], 3, -1, p, p)[:, :, 0].mean(1, keepdim=True)
        return F.adaptive_avg_pool2d(x, self.recon_size).flatten(1)

    def forward(self, input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids, labels=None, **_):
        device = next(self.parameters()).device
        pixel_values = pixel_values.to(device)
        targets = self.patch_targets(pixel_values)
        blank = torch.rand(pixel_values.shape[0], device=device) < self.mask_ratio
        corrupted = torch.where(blank[:, None], torch.zeros_like(pixel_values), pixel_values)
        feats = self.tap(corrupted, image_grid_thw.to(device), capture=self.layers)
        recon = []
        for li, head in enumerate(self.recon_heads):
            rows = torch.cat([self._merge_order(img[li]) for img in feats.layers])
            recon.append(F.mse_loss(head(rows)[blank], targets[blank]) if blank.any() else rows.sum() * 0)
        lm = self.model(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
            mm_token_type_ids=mm_token_type_ids.to(device), image_grid_thw=image_grid_thw.to(device),
            mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=tuple(feats.projected))},
            labels=None if labels is None else labels.to(device),
        )
        return lm.loss, torch.stack(recon).mean()

    def _merge_order(self, raster: torch.Tensor) -> torch.Tensor:
        """(h, w, d) raster → rows in the processor's patch order (h/2, w/2, 2, 2)."""
        h, w, d = raster.shape
        m = self.tap.merge
        return raster.view(h // m, m, w // m, m, d).permute(0, 2, 1, 3, 4).reshape(-1, d)

    def save_backbone(self, directory: Path) -> None:
        Backbone(model=self.model, processor=self.processor, source=self.source).save_pretrained(directory)


def build(cfg: TrainConfig) -> BackbonePretrainer:
    opts = dict(cfg.model)
    mask_ratio = float(opts.pop("mask_ratio", 0.3))
    if cfg.input_checkpoint == "tiny":
        model, processor = build_tiny_qwen2_5_vl(TinyBackboneConfig(**opts), seed=cfg.seed)
        backbone = Backbone(model=model, processor=processor, source="tiny")
    else:
        if opts:
            raise ValueError(f"stage 0 from a backbone folder takes no model options, got {sorted(opts)}")
        backbone = load_backbone(cfg.input_checkpoint, dtype="float32")
    for p in backbone.model.parameters():
        p.requires_grad_(True)
    backbone.model.get_input_embeddings().weight.requires_grad_(True)
    return BackbonePretrainer(backbone=backbone, mask_ratio=mask_ratio)


def main(cfg: TrainConfig, *, resume: bool = False) -> TrainResult:
    if cfg.stage != 0:
        raise ValueError(f"stage0_pretrain runs stage 0, the config says stage {cfg.stage}")
    torch.manual_seed(cfg.seed)
    model = build(cfg)
    if cfg.gradient_checkpointing:
        model.model.gradient_checkpointing_enable()
    collate = Collator(model.processor, use_diff=False, with_masks=False)
    sampler = build_sampler(cfg)

    def loss_fn(m, batch):
        lm, recon = m(**model_inputs(batch))
        return cfg.loss.lm_weight * lm + cfg.loss.recon_weight * recon, {"lm": lm.item(), "recon": recon.item()}

    return run_training(cfg, model=model, loss_fn=loss_fn, collate=collate, sampler=sampler,
                        save_final=lambda m, d: m.save_backbone(d), resume=resume)
