"""Q-Former blocks shared by the Anomaly and Diff processors (BLIP-2 style, pre-norm), and the small
batching helpers the modules share."""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import torch
from torch import nn


class QFormerLayer(nn.Module):
    """Self-attention over the queries, cross-attention to the keys/values, then an MLP.

    Args:
        dim: query width.
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLP over ``dim``.
    """

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_cross = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(
        self, queries: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor | None = None
    ) -> torch.Tensor:
        q = self.norm_self(queries)
        queries = queries + self.self_attn(q, q, q, need_weights=False)[0]
        kv = self.norm_kv(memory)
        queries = queries + self.cross_attn(
            self.norm_cross(queries), kv, kv, key_padding_mask=memory_padding, need_weights=False
        )[0]
        return queries + self.mlp(self.norm_mlp(queries))


class QFormer(nn.Module):
    """A stack of :class:`QFormerLayer` whose memory comes from a wider space (the LLM's)."""

    def __init__(self, *, dim: int, memory_dim: int, num_layers: int, num_heads: int) -> None:
        super().__init__()
        self.memory_proj = nn.Linear(memory_dim, dim)
        self.layers = nn.ModuleList([QFormerLayer(dim=dim, num_heads=num_heads) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, queries: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor | None = None
    ) -> torch.Tensor:
        """queries (B, Q, dim), memory (B, M, memory_dim), memory_padding (B, M) True where padded."""
        memory = self.memory_proj(memory)
        for layer in self.layers:
            queries = layer(queries, memory, memory_padding)
        return self.norm(queries)


def two_layer_mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """The 2-layer MLP that maps Q-Former outputs into the LLM's embedding space."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


def pad_sequences(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (n_i, d) tensors to (B, max n, d) with a True-where-padded mask."""
    length = max(s.shape[0] for s in seqs)
    out = seqs[0].new_zeros(len(seqs), length, seqs[0].shape[-1])
    pad = torch.ones(len(seqs), length, dtype=torch.bool, device=seqs[0].device)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
        pad[i, : s.shape[0]] = False
    return out, pad


def group_indices(keys: Iterable[Hashable]) -> dict[Hashable, list[int]]:
    """Positions of equal keys, in first-seen order (e.g. the images that share a patch grid)."""
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups
