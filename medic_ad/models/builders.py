"""Builders: the only place a :class:`MedicADConfig` turns into modules (torchtune style)."""

from __future__ import annotations

from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from medic_ad.models.components.anomaly_processor import AnomalyProcessor
from medic_ad.models.components.diff_processor import DiffProcessor
from medic_ad.models.components.heatmap_decoder import HeatmapDecoder
from medic_ad.models.config import MedicADConfig


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
    """LoRA (peft) on the LLM's attention and MLP projections only, in place (HF keys stay put)."""
    if config.llm_adaptation != "lora":
        return
    pattern = r".*language_model\.layers\.\d+\.(self_attn|mlp)\.(" + "|".join(config.lora_targets) + ")"
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=pattern, bias="none")
    inject_adapter_in_model(lora, model)
