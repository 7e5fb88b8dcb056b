"""Diff Processor (MEDIC-AD §2, Stage 2): two studies' modulated features → ``<Diff>`` tokens.

Queries are the pooled (current − prior) modulated features, together with each study's pooled
features, plus an embedding of the lesion burden the Anomaly Processor's maps estimate (for each burden
map — the lesion share and the abnormal map — per cell the prior's and the current's mean and their
difference, and the log-ratio of the two sums), plus learned query embeddings; the Diff Q-Former's
keys/values are both studies' f_p tokens with a learned study-index embedding; a 2-layer MLP maps the result into the LLM space. The tokens
are appended after the question (Eq. 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medic_ad.models.components.qformer import QFormer, pad_sequences, two_layer_mlp


class DiffProcessor(nn.Module):
    """Compare module of MEDIC-AD.

    Args:
        anomaly_dim: width of the Anomaly Processor's modulated features.
        llm_dim: width of f_p tokens and LLM embeddings.
        pool_size: side of the difference grid; ``pool_size ** 2`` ``<Diff>`` tokens per pair.
        qformer_dim, qformer_layers, qformer_heads: Diff Q-Former size.
        burden_channels: burden maps per image (:attr:`AnomalyMaps.burden_maps` gives 2).
    """

    def __init__(
        self,
        *,
        anomaly_dim: int,
        llm_dim: int,
        pool_size: int = 4,
        qformer_dim: int = 256,
        qformer_layers: int = 2,
        qformer_heads: int = 4,
        burden_channels: int = 2,
    ) -> None:
        super().__init__()
        self.pool_size = pool_size
        self.query_in = nn.Linear(3 * anomaly_dim, qformer_dim)
        self.burden_in = nn.Linear(4 * burden_channels, qformer_dim)
        self.query_embed = nn.Parameter(torch.randn(pool_size * pool_size, qformer_dim) * 0.02)
        self.study_embed = nn.Parameter(torch.randn(2, llm_dim) * 0.02)
        self.qformer = QFormer(dim=qformer_dim, memory_dim=llm_dim, num_layers=qformer_layers, num_heads=qformer_heads)
        self.out_mlp = two_layer_mlp(qformer_dim, llm_dim)

    @property
    def num_tokens(self) -> int:
        return self.pool_size * self.pool_size

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        grid = F.adaptive_avg_pool2d(x.permute(2, 0, 1).unsqueeze(0), self.pool_size)
        return grid[0].flatten(1).transpose(0, 1)

    def burden(self, prior_burden: torch.Tensor, current_burden: torch.Tensor) -> torch.Tensor:
        """(pool², 4 · S) from two studies' burden maps, each (S, h, w) or one (h, w) map: for each map, per
        cell the prior's and the current's mean and their difference, and (same in every cell) the
        log-ratio of the two maps' sums in patches (half a patch added to both, so two clean images give 0)."""
        prior, current = (a if a.dim() == 3 else a[None] for a in (prior_burden, current_burden))
        p, c = (F.adaptive_avg_pool2d(a[None], self.pool_size)[0].flatten(1) for a in (prior, current))  # (S, pool²)
        ratio = torch.log((current.flatten(1).sum(1) + 0.5) / (prior.flatten(1).sum(1) + 0.5))[:, None].expand_as(p)
        return torch.stack([c - p, p, c, ratio], dim=-1).permute(1, 0, 2).flatten(1)

    def forward(
        self,
        prior_modulated: list[torch.Tensor],
        current_modulated: list[torch.Tensor],
        prior_projected: list[torch.Tensor],
        current_projected: list[torch.Tensor],
        prior_burden: list[torch.Tensor] | None = None,
        current_burden: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``<Diff>`` tokens (n_pairs, pool², llm_dim) from per-pair (h, w, d) features, (S, h, w) burden
        maps (:attr:`AnomalyMaps.burden_maps`) and f_p tokens."""
        queries = []
        for prior, current in zip(prior_modulated, current_modulated):
            p, c = self._pool(prior), self._pool(current)
            queries.append(torch.cat([c - p, p, c], dim=-1))
        q = self.query_in(torch.stack(queries)) + self.query_embed
        if prior_burden is not None and current_burden is not None:
            q = q + self.burden_in(torch.stack([self.burden(p, c).to(q.dtype)
                                                for p, c in zip(prior_burden, current_burden)]))
        memory, padding = pad_sequences(
            [
                torch.cat([fp.to(q.dtype) + self.study_embed[0], fc.to(q.dtype) + self.study_embed[1]])
                for fp, fc in zip(prior_projected, current_projected)
            ]
        )
        return self.out_mlp(self.qformer(q, memory, padding))
