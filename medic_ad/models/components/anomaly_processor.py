"""Anomaly Processor (MEDIC-AD §2, Stage 1): multi-scale anomaly maps → ``<Ano>`` tokens.

Learnable *abnormal* and *normal* system tokens cross-attend to the patch features of several
vision-encoder layers with **sigmoid** scores (each patch gets an independent abnormal and normal
probability); the anomaly map abnormal − normal scales the fused visual features (magnitude
modulation), 2-D pooling gives the anomaly queries, and an Anomaly Q-Former over the LLM-projected
tokens f_p(V*) followed by a 2-layer MLP gives the ``<Ano>`` tokens. Beyond the paper (``docs/model.md``):
the patch keys see a 3 × 3 neighbourhood and pass a 2-layer MLP, and each query carries its cell's peak
anomaly, so a lesion of one patch survives the pooling. The visual soft prompts that the
backbone adapter injects into the encoder are parameters of this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medic_ad.models.components.qformer import QFormer, group_indices, pad_sequences, two_layer_mlp


@dataclass
class AnomalyMaps:
    """Per-image maps at patch resolution (h, w).

    ``abnormal``/``normal``: (L, h, w) sigmoid scores per tapped layer, in [0, 1].
    ``anomaly``: (h, w) fused anomaly map, mean over layers of abnormal − normal, in [-1, 1].
    ``abnormal_logits``/``normal_logits``: the pre-sigmoid scores (for numerically safe losses).
    ``modulated``: (h, w, anomaly_dim) fused features scaled by the map (Diff Processor input).
    """

    abnormal: torch.Tensor
    normal: torch.Tensor
    anomaly: torch.Tensor
    abnormal_logits: torch.Tensor
    normal_logits: torch.Tensor
    modulated: torch.Tensor

    @property
    def lesion_share(self) -> torch.Tensor:
        """(h, w) estimated share of each patch covered by lesion: 1 − normal, mean over layers."""
        return 1.0 - self.normal.mean(0)

    @property
    def burden_maps(self) -> torch.Tensor:
        """(2, h, w) what the Diff Processor measures lesion burden on: the lesion share and the abnormal
        map (mean over layers), which marks every patch at least a quarter covered."""
        return torch.stack([self.lesion_share, self.abnormal.mean(0)])


class AnomalyProcessor(nn.Module):
    """Detect module of MEDIC-AD.

    Args:
        vision_dim: width of the vision blocks' outputs.
        llm_dim: width of f_p(V*) and of the LLM embeddings.
        num_layers: tapped vision layers (4 in the paper; 1 for the last-layer ablation).
        prompt_layers: blocks that receive soft prompts (their count sets the prompt tensors).
        num_soft_prompts: visual soft prompts per prompted block (10 in the paper).
        anomaly_dim: width of the projected patch features and system tokens.
        pool_size: side of the 2-D pooling grid; ``pool_size ** 2`` ``<Ano>`` tokens per image.
        qformer_dim, qformer_layers, qformer_heads: Anomaly Q-Former size.
        modulate: scale features by the anomaly map (False = the paper's "no modulation" ablation).
    """

    def __init__(
        self,
        *,
        vision_dim: int,
        llm_dim: int,
        num_layers: int = 4,
        prompt_layers: int = 4,
        num_soft_prompts: int = 10,
        anomaly_dim: int = 256,
        pool_size: int = 4,
        qformer_dim: int = 256,
        qformer_layers: int = 2,
        qformer_heads: int = 4,
        modulate: bool = True,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.pool_size = pool_size
        self.modulate = modulate
        self.soft_prompts = nn.Parameter(torch.randn(prompt_layers, num_soft_prompts, vision_dim) * 0.02)
        self.layer_norms = nn.ModuleList([nn.LayerNorm(vision_dim) for _ in range(num_layers)])
        self.layer_proj = nn.ModuleList([nn.Linear(vision_dim, anomaly_dim) for _ in range(num_layers)])
        # unit-scale system tokens: the score is bilinear in token and key, so a 0.02 init stalls it
        self.abnormal_token = nn.Parameter(torch.randn(anomaly_dim))
        self.normal_token = nn.Parameter(torch.randn(anomaly_dim))
        # patch keys see their 3×3 neighbourhood (depthwise) and pass a 2-layer MLP: a linear key on a
        # frozen tower's patch features cannot tell a small lesion from the anatomy around it
        self.patch_context = nn.Conv2d(anomaly_dim, anomaly_dim, 3, padding=1, groups=anomaly_dim)
        self.score_query = nn.Linear(anomaly_dim, anomaly_dim)
        self.score_key = two_layer_mlp(anomaly_dim, anomaly_dim)
        self.score_bias = nn.Parameter(torch.zeros(2))
        self.query_proj = nn.Linear(anomaly_dim, qformer_dim)
        self.query_pos = nn.Parameter(torch.randn(pool_size * pool_size, qformer_dim) * 0.02)
        # each query also carries its cell's peak anomaly, so a lesion of one patch is not averaged away
        self.peak_embed = nn.Parameter(torch.randn(qformer_dim))
        self.qformer = QFormer(dim=qformer_dim, memory_dim=llm_dim, num_layers=qformer_layers, num_heads=qformer_heads)
        self.out_mlp = two_layer_mlp(qformer_dim, llm_dim)

    @property
    def num_tokens(self) -> int:
        return self.pool_size * self.pool_size

    def prompts_for(self, blocks: list[int]) -> dict[int, torch.Tensor]:
        """Soft prompts keyed by vision block index, for the backbone adapter's hooks."""
        if len(blocks) != self.soft_prompts.shape[0]:
            raise ValueError(f"{self.soft_prompts.shape[0]} prompt sets for {len(blocks)} prompted blocks")
        return {b: self.soft_prompts[i] for i, b in enumerate(blocks)}

    def compute_maps(self, layers: list[torch.Tensor]) -> AnomalyMaps:
        """Anomaly maps of one image from its tapped layers, each (h, w, vision_dim)."""
        return self.compute_maps_batch(torch.stack(layers)[None])[0]

    def compute_maps_batch(self, layers: torch.Tensor) -> list[AnomalyMaps]:
        """Anomaly maps of images that share a patch grid, from their tapped layers (B, L, h, w, vision_dim)."""
        if layers.shape[1] != self.num_layers:
            raise ValueError(f"expected {self.num_layers} tapped layers, got {layers.shape[1]}")
        dtype = self.abnormal_token.dtype
        projected = torch.stack(
            [proj(norm(layers[:, i].to(dtype))) for i, (norm, proj) in enumerate(zip(self.layer_norms, self.layer_proj))],
            dim=1,
        )  # (B, L, h, w, d)
        flat = projected.flatten(0, 1).permute(0, 3, 1, 2)  # (B·L, d, h, w)
        context = self.patch_context(flat).permute(0, 2, 3, 1).view_as(projected)
        tokens = self.score_query(torch.stack([self.abnormal_token, self.normal_token]))  # (2, d)
        keys = self.score_key(projected + context)
        logits = torch.einsum("blhwd,sd->sblhw", keys, tokens) / math.sqrt(tokens.shape[-1])
        logits = logits + self.score_bias.view(2, 1, 1, 1, 1)
        abnormal, normal = torch.sigmoid(logits[0]), torch.sigmoid(logits[1])
        anomaly = (abnormal - normal).mean(1)  # (B, h, w)
        fused = projected.mean(1)
        modulated = fused * (1.0 + anomaly).unsqueeze(-1) if self.modulate else fused
        return [
            AnomalyMaps(abnormal=abnormal[i], normal=normal[i], anomaly=anomaly[i], abnormal_logits=logits[0, i],
                        normal_logits=logits[1, i], modulated=modulated[i])
            for i in range(layers.shape[0])
        ]

    def pool(self, modulated: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """2-D global pooling of (h, w, d) features to (size², d) queries."""
        size = size or self.pool_size
        grid = F.adaptive_avg_pool2d(modulated.permute(2, 0, 1).unsqueeze(0), size)
        return grid[0].flatten(1).transpose(0, 1)

    def peaks(self, anomaly: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Peak of the (h, w) anomaly map in each cell of the pooling grid, (size²,)."""
        size = size or self.pool_size
        return F.adaptive_max_pool2d(anomaly[None, None], size).flatten()

    def forward(
        self, layers: list[list[torch.Tensor]], projected: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[AnomalyMaps]]:
        """``<Ano>`` tokens (n_images, pool², llm_dim) and each image's maps.

        Args:
            layers: per image, the tapped layers' (h, w, vision_dim) features.
            projected: per image, f_p(V*) tokens (n_tokens, llm_dim): the Q-Former's keys/values.
        """
        maps: list[AnomalyMaps | None] = [None] * len(layers)
        # images that share a patch grid (and layer count) go through together
        for members in group_indices((len(x), *x[0].shape) for x in layers).values():
            batch = torch.stack([torch.stack(layers[i]) for i in members])
            for i, m in zip(members, self.compute_maps_batch(batch)):
                maps[i] = m
        queries = torch.stack([self.pool(m.modulated) for m in maps])
        peaks = torch.stack([self.peaks(m.anomaly) for m in maps])
        queries = self.query_proj(queries) + self.query_pos + peaks.unsqueeze(-1) * self.peak_embed
        memory, padding = pad_sequences([p.to(queries.dtype) for p in projected])
        tokens = self.out_mlp(self.qformer(queries, memory, padding))
        return tokens, maps
