"""Builders: the only place a :class:`MedicADConfig` turns into modules (torchtune style)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from medic_ad.models.components.anomaly_processor import AnomalyProcessor
from medic_ad.models.components.diff_processor import DiffProcessor
from medic_ad.models.components.heatmap_decoder import HeatmapDecoder
from medic_ad.models.config import MedicADConfig
from medic_ad.models.qwen2_5_vl.backbone import Backbone

if TYPE_CHECKING:
    from medic_ad.models.medic_ad import MedicAD


def resolve_layers(config: MedicADConfig, vision_config) -> tuple[list[int], list[int]]:
    """(tapped feature blocks, prompted blocks) for a vision tower."""
    full = list(vision_config.fullatt_block_indexes)
    prompt_layers = list(config.prompt_layers or full)
    if config.multi_scale:
        feature_layers = list(config.feature_layers or full)
    else:
        feature_layers = [int(vision_config.depth) - 1]
    for idx in feature_layers:
        if not 0 <= idx < vision_config.depth:
            raise ValueError(f"feature layer {idx} outside the vision tower's {vision_config.depth} blocks")
    return feature_layers, prompt_layers


def build_anomaly_processor(config: MedicADConfig, *, vision_dim: int, llm_dim: int, num_layers: int,
                            prompt_layers: int) -> AnomalyProcessor:
    return AnomalyProcessor(
        vision_dim=vision_dim,
        llm_dim=llm_dim,
        num_layers=num_layers,
        prompt_layers=prompt_layers,
        num_soft_prompts=config.num_soft_prompts,
        anomaly_dim=config.anomaly_dim,
        pool_size=config.pool_size,
        qformer_dim=config.qformer_dim,
        qformer_layers=config.qformer_layers,
        qformer_heads=config.qformer_heads,
        modulate=config.modulate,
    )


def build_diff_processor(config: MedicADConfig, *, llm_dim: int) -> DiffProcessor:
    return DiffProcessor(
        anomaly_dim=config.anomaly_dim,
        llm_dim=llm_dim,
        pool_size=config.diff_pool_size,
        qformer_dim=config.qformer_dim,
        qformer_layers=config.qformer_layers,
        qformer_heads=config.qformer_heads,
    )


def build_heatmap_decoder(config: MedicADConfig, *, vision_dim: int, llm_dim: int, num_layers: int,
                          merge_size: int) -> HeatmapDecoder:
    return HeatmapDecoder(
        vision_dim=vision_dim,
        llm_dim=llm_dim,
        num_layers=num_layers,
        dim=config.heatmap_dim,
        num_heads=config.heatmap_heads,
        depth=config.heatmap_depth,
        merge_size=merge_size,
    )


def inject_lora(config: MedicADConfig, model: nn.Module) -> None:
    """LoRA (peft) on the LLM's attention and MLP projections only, in place (HF keys stay put).

    The LoRA rows are float32 whatever the backbone's dtype (peft makes them in the base layer's): they
    are trained, and a bf16 weight loses AdamW updates smaller than one bf16 step. peft casts the
    input to the adapter's dtype and the result back, so a bf16 backbone runs with them as it is.
    """
    if config.llm_adaptation != "lora":
        return
    pattern = r".*language_model\.layers\.\d+\.(self_attn|mlp)\.(" + "|".join(config.lora_targets) + ")"
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=pattern, bias="none")
    inject_adapter_in_model(lora, model)
    for name, param in model.named_parameters():
        if "lora_" in name and param.dtype != torch.float32:
            param.data = param.data.float()


def build_medic_ad(backbone: Backbone, config: MedicADConfig) -> "MedicAD":
    """MEDIC-AD on ``backbone``: the three modules built from ``config`` for the backbone's sizes, LoRA
    injected into its LLM, its processor told how many ``<Ano>``/``<Diff>`` tokens to lay out; the
    finished parts are handed to :class:`MedicAD`, which only composes them."""
    from medic_ad.models.medic_ad import MedicAD

    vision_cfg = backbone.model.config.vision_config
    llm_dim = int(backbone.model.config.text_config.hidden_size)
    vision_dim = int(vision_cfg.hidden_size)
    feature_layers, prompt_layers = resolve_layers(config, vision_cfg)
    anomaly = build_anomaly_processor(config, vision_dim=vision_dim, llm_dim=llm_dim, num_layers=len(feature_layers),
                                      prompt_layers=len(prompt_layers))
    diff = build_diff_processor(config, llm_dim=llm_dim)
    heatmap = build_heatmap_decoder(config, vision_dim=vision_dim, llm_dim=llm_dim, num_layers=len(feature_layers),
                                    merge_size=int(vision_cfg.spatial_merge_size))
    inject_lora(config, backbone.model)
    backbone.processor.num_ano_tokens = anomaly.num_tokens
    backbone.processor.num_diff_tokens = diff.num_tokens if config.use_diff else 0
    return MedicAD(backbone=backbone, config=config, anomaly=anomaly, diff=diff, heatmap=heatmap,
                   feature_layers=feature_layers, prompt_layers=prompt_layers)
