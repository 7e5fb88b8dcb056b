"""Heatmap decoder (MEDIC-AD §2, Stage 3): M = f_h([f_p(V*); <Ano>]) at input resolution (Eq. 4).

A fusion block combines the encoder's intermediate patch features, f_p(V*) (upsampled from the
merged grid) and the anomaly map, then lets every position cross-attend to the image's ``<Ano>``
tokens; a compact ConvNeXt-V2 head refines and upsamples it; at the input size a small convolutional
stem over the processed image itself joins it (patch features are 14 px coarse, lesion edges are not)
before a 3 × 3 convolution and the one-channel map. At input resolution the stem and the head's last
layers are ``dim // 4`` wide and the join ``dim // 2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GlobalResponseNorm(nn.Module):
    """GRN of ConvNeXt-V2 (channels-last)."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """Depthwise 7×7 conv → LayerNorm → MLP with GRN, residual. Input/output (B, C, H, W)."""

    def __init__(self, *, dim: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.grn = GlobalResponseNorm(dim=mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.fc2(self.grn(self.act(self.fc1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class HeatmapDecoder(nn.Module):
    """Explain module of MEDIC-AD.

    Args:
        vision_dim: width of the tapped vision features.
        llm_dim: width of f_p(V*) and ``<Ano>`` tokens.
        num_layers: tapped vision layers fused.
        dim: decoder width.
        num_heads: heads of the fusion cross-attention to ``<Ano>``.
        depth: ConvNeXt blocks at patch resolution.
        merge_size: side of a merge unit (f_p grid = patch grid / merge_size).
        image_channels: channels of the processed image fed to the pixel stem.
    """

    def __init__(
        self,
        *,
        vision_dim: int,
        llm_dim: int,
        num_layers: int = 4,
        dim: int = 64,
        num_heads: int = 4,
        depth: int = 2,
        merge_size: int = 2,
        image_channels: int = 3,
    ) -> None:
        super().__init__()
        self.merge_size = merge_size
        self.layer_proj = nn.ModuleList(
            [nn.Sequential(nn.LayerNorm(vision_dim), nn.Linear(vision_dim, dim)) for _ in range(num_layers)]
        )
        self.projected_proj = nn.Sequential(nn.LayerNorm(llm_dim), nn.Linear(llm_dim, dim))
        self.map_proj = nn.Linear(1, dim)
        self.ano_proj = nn.Sequential(nn.LayerNorm(llm_dim), nn.Linear(llm_dim, dim))
        self.fusion_norm = nn.LayerNorm(dim)
        self.fusion_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.blocks = nn.Sequential(*[ConvNeXtV2Block(dim=dim) for _ in range(depth)])
        self.up1 = nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1), nn.GELU(), ConvNeXtV2Block(dim=dim // 2))
        self.up2 = nn.Sequential(nn.Conv2d(dim // 2, dim // 4, 3, padding=1), nn.GELU())
        width = dim // 4
        self.pixel_stem = nn.Sequential(nn.Conv2d(image_channels, width, 3, padding=1), nn.GELU(),
                                        nn.Conv2d(width, width, 3, padding=1))
        # the join of features and pixels is one 3 × 3 convolution over both, split by input: its feature
        # half runs at the features' own resolution before the upsampling, its pixel half at input
        # resolution; a second 3 × 3 convolution at input resolution follows, so a lesion's edge is still
        # decided against the tissue around it (docs/model.md, "Heatmap decoder cost")
        self.feature_join = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.pixel_join = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.head = nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), nn.GELU(), nn.Conv2d(width, 1, 1))

    def forward(
        self,
        *,
        layers: list[torch.Tensor],
        projected: torch.Tensor,
        ano_tokens: torch.Tensor,
        anomaly_map: torch.Tensor,
        out_size: tuple[int, int],
        image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Heatmap logits (B, H, W) of a batch of images that share one patch grid.

        Args:
            layers: tapped features, each (B, h, w, vision_dim).
            projected: f_p(V*) tokens (B, h/m · w/m, llm_dim) in raster order.
            ano_tokens: the images' ``<Ano>`` tokens (B, k, llm_dim).
            anomaly_map: (B, h, w) fused anomaly maps.
            out_size: (H, W) of the processed input images.
            image: the processed (normalised) images (B, C, H, W); zeros when not given.
        """
        b, h, w, _ = layers[0].shape
        dtype = self.pixel_stem[0].weight.dtype
        x = sum(proj(f.to(dtype)) for proj, f in zip(self.layer_proj, layers))
        fp = self.projected_proj(projected.to(dtype)).view(b, h // self.merge_size, w // self.merge_size, -1)
        fp = fp.repeat_interleave(self.merge_size, 1).repeat_interleave(self.merge_size, 2)
        x = x + fp + self.map_proj(anomaly_map.to(dtype).unsqueeze(-1))
        seq = x.view(b, h * w, -1)
        ano = self.ano_proj(ano_tokens.to(dtype))
        seq = seq + self.fusion_attn(self.fusion_norm(seq), ano, ano, need_weights=False)[0]
        x = self.blocks(seq.view(b, h, w, -1).permute(0, 3, 1, 2))
        x = self.up1(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        x = self.up2(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        # channels-last from here: oneDNN (CPU) and cuDNN run the input-resolution convolutions faster in it
        x = self.feature_join(x).contiguous(memory_format=torch.channels_last)
        x = F.interpolate(x, size=out_size, mode="bilinear", align_corners=False)
        if image is None:
            image = x.new_zeros(b, self.pixel_stem[0].in_channels, *out_size)
        pixels = image.to(dtype).contiguous(memory_format=torch.channels_last)
        x = x + self.pixel_join(self.pixel_stem(pixels))
        return self.head(F.gelu(x))[:, 0]
