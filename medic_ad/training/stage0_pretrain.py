"""Stage 0 recipe: pretrain a random tiny backbone before the paper's stages (design doc §5).

The paper starts from Lingshu-7B, already trained on medical images. A random tiny backbone has
learned nothing, so this stage trains it (vision tower + LLM) on objectives that use **no
abnormal/normal label**:

- modality questions ("What modality is this image?" → "This is a brain MRI.", yes/no and multiple
  choice forms) — the language side;
- masked-patch reconstruction: a share of patches is blanked at the input and every tapped
  full-attention block's output predicts the blanked patches' pixels (linear head);
- CutPaste-style self-supervised localisation (Li et al., CVPR 2021): a soft-edged region of the
  image is copied from elsewhere in the same image with its intensity rescaled, and a per-patch
  linear head predicts where. The irregularity is synthesised, not a lesion label.

The heads are thrown away; the result is an ordinary Qwen2.5-VL folder, the tiny analogue of Lingshu.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from medic_ad.data.collator import Collator
from medic_ad.data.io import load_image_any
from medic_ad.data.schema import Sample
from medic_ad.training.losses import focal_bce_with_logits, mask_to_patches
from medic_ad.models.qwen2_5_vl.backbone import Backbone, VisionTap, load_backbone
from medic_ad.models.qwen2_5_vl.tiny import TinyBackboneConfig, build_tiny_qwen2_5_vl
from medic_ad.training.config import TrainConfig
from medic_ad.training.loop import TrainResult, run_training
from medic_ad.training.memory import apply_memory_policy, apply_pixel_caps
from medic_ad.training.mixture import build_sampler
from medic_ad.training.stages import model_inputs


class BackbonePretrainer(nn.Module):
    """A Qwen2.5-VL with a throw-away pixel head for masked-patch reconstruction."""

    def __init__(self, *, backbone: Backbone, mask_ratio: float = 0.3, recon_size: int = 7,
                 paste_prob: float = 0.5) -> None:
        super().__init__()
        self.model = backbone.model
        self.processor = backbone.processor
        self.source = backbone.source
        visual = self.model.model.visual
        self.tap = VisionTap(visual)
        self.layers = list(visual.config.fullatt_block_indexes)
        self.mask_ratio = mask_ratio
        self.recon_size = recon_size
        self.paste_prob = paste_prob
        self.recon_heads = nn.ModuleList(
            [nn.Linear(visual.config.hidden_size, recon_size * recon_size) for _ in self.layers]
        )
        self.paste_heads = nn.ModuleList([nn.Linear(visual.config.hidden_size, 1) for _ in self.layers])

    def patch_targets(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, C·T·P·P) patch rows → (N, r²) grey patch pixels downsampled to r × r."""
        p = self.tap.patch_size
        x = pixel_values.view(pixel_values.shape[0], 3, -1, p, p)[:, :, 0].mean(1, keepdim=True)
        return F.adaptive_avg_pool2d(x, self.recon_size).flatten(1)

    def forward(self, input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids, labels=None,
                masks=None, **_):
        device = next(self.parameters()).device
        pixel_values = pixel_values.to(device)
        targets = self.patch_targets(pixel_values)
        blank = torch.rand(pixel_values.shape[0], device=device) < self.mask_ratio
        corrupted = torch.where(blank[:, None], torch.zeros_like(pixel_values), pixel_values)
        feats = self.tap(corrupted, image_grid_thw.to(device), capture=self.layers)
        recon, paste = [], []
        for li, head in enumerate(self.recon_heads):
            rows = torch.cat([self._merge_order(img[li]) for img in feats.layers])
            recon.append(F.mse_loss(head(rows)[blank], targets[blank]) if blank.any() else rows.sum() * 0)
            for img, mask in zip(feats.layers, masks or []):
                if mask is not None:
                    grid = tuple(img[li].shape[:2])
                    target = (mask_to_patches(mask.to(device), grid) / 0.25).clamp(0, 1)
                    paste.append(focal_bce_with_logits(self.paste_heads[li](img[li])[..., 0], target, gamma=2.0))
        lm = self.model(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
            mm_token_type_ids=mm_token_type_ids.to(device), image_grid_thw=image_grid_thw.to(device),
            mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=tuple(feats.projected))},
            labels=None if labels is None else labels.to(device),
        )
        paste_loss = torch.stack(paste).mean() if paste else lm.loss * 0
        return lm.loss, torch.stack(recon).mean(), paste_loss

    def _merge_order(self, raster: torch.Tensor) -> torch.Tensor:
        """(h, w, d) raster → rows in the processor's patch order (h/2, w/2, 2, 2)."""
        h, w, d = raster.shape
        m = self.tap.merge
        return raster.view(h // m, m, w // m, m, d).permute(0, 2, 1, 3, 4).reshape(-1, d)

    def save_backbone(self, directory: Path) -> None:
        Backbone(model=self.model, processor=self.processor, source=self.source).save_pretrained(directory)


def cut_paste(sample: Sample, *, prob: float) -> Sample:
    """With probability ``prob``, copy a soft-edged ellipse of the image onto another place of it with
    its intensity rescaled; the pasted region becomes the sample's mask (else an empty mask)."""
    image = load_image_any(sample.images[0]).pixels
    grey = image.mean(-1) if image.ndim == 3 else image
    h, w = grey.shape
    mask = np.zeros((h, w), dtype=np.uint8)
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
    u = lambda lo, hi: lo + (hi - lo) * float(torch.rand(1, generator=gen))  # noqa: E731
    if u(0, 1) < prob:
        ry, rx = u(0.04, 0.12) * h, u(0.04, 0.12) * w
        cy, cx = u(0.25, 0.75) * h, u(0.25, 0.75) * w
        sy, sx = u(0.2, 0.8) * h, u(0.2, 0.8) * w
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        dist = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        alpha = np.clip(1.5 - dist, 0, 1)
        src_y = np.clip((yy - cy + sy).astype(int), 0, h - 1)
        src_x = np.clip((xx - cx + sx).astype(int), 0, w - 1)
        pasted = np.clip(grey[src_y, src_x] * u(0.5, 1.6) + u(-0.15, 0.15), 0, 1)
        grey = (1 - alpha) * grey + alpha * pasted
        mask = (dist <= 1.0).astype(np.uint8)
    return Sample(id=sample.id, images=[grey.astype(np.float32)], masks=[mask], question=sample.question,
                  answer=sample.answer, dataset=sample.dataset)


def build(cfg: TrainConfig) -> BackbonePretrainer:
    opts = dict(cfg.model)
    mask_ratio = float(opts.pop("mask_ratio", 0.3))
    paste_prob = float(opts.pop("paste_prob", 0.5))
    if cfg.input_checkpoint == "tiny":
        model, processor = build_tiny_qwen2_5_vl(TinyBackboneConfig(**opts), seed=cfg.seed)
        model.set_attn_implementation(cfg.attn_implementation)
        backbone = Backbone(model=model, processor=processor, source="tiny")
    else:
        if opts:
            raise ValueError(f"stage 0 from a backbone folder takes no model options, got {sorted(opts)}")
        backbone = load_backbone(cfg.input_checkpoint, dtype="float32", attn_implementation=cfg.attn_implementation)
    for p in backbone.model.parameters():
        p.requires_grad_(True)
    backbone.model.get_input_embeddings().weight.requires_grad_(True)
    return BackbonePretrainer(backbone=backbone, mask_ratio=mask_ratio, paste_prob=paste_prob)


def main(cfg: TrainConfig, *, resume: bool = False) -> TrainResult:
    if cfg.stage != 0:
        raise ValueError(f"stage0_pretrain runs stage 0, the config says stage {cfg.stage}")
    torch.manual_seed(cfg.seed)
    model = build(cfg)
    if cfg.gradient_checkpointing:
        model.model.gradient_checkpointing_enable()
    base_collate = Collator(model.processor, use_diff=False, with_masks=True)
    sampler = build_sampler(cfg)
    apply_pixel_caps(sampler, cfg, model.processor)
    apply_memory_policy(cfg, model, backbone=model.model)

    def collate(samples, tasks):
        return base_collate([cut_paste(s, prob=model.paste_prob) for s in samples], tasks)

    def loss_fn(m, batch):
        lm, recon, paste = m(**model_inputs(batch), masks=batch["masks"])
        total = cfg.loss.lm_weight * lm + cfg.loss.recon_weight * recon + cfg.loss.map_weight * paste
        return total, {"lm": lm.item(), "recon": recon.item(), "paste": paste.item()}

    return run_training(cfg, model=model, loss_fn=loss_fn, collate=collate, sampler=sampler,
                        save_final=lambda m, d: m.save_backbone(d), resume=resume)
