"""MEDIC-AD configuration: every decision of design doc §5 is a field here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class MedicADConfig:
    """Hyper-parameters of the three modules and of the LLM adaptation.

    ``feature_layers``/``prompt_layers`` default to the vision tower's full-attention blocks
    ([7, 15, 23, 31] on the 7B tower). ``multi_scale=False`` taps the last vision block only and
    ``modulate=False`` drops the anomaly-map modulation (the paper's two ablations).
    """

    feature_layers: list[int] | None = None
    prompt_layers: list[int] | None = None
    num_soft_prompts: int = 10
    multi_scale: bool = True
    modulate: bool = True
    anomaly_dim: int = 256
    pool_size: int = 4
    qformer_dim: int = 256
    qformer_layers: int = 2
    qformer_heads: int = 4
    use_diff: bool = True
    diff_pool_size: int = 4
    heatmap_dim: int = 64
    heatmap_depth: int = 2
    heatmap_heads: int = 4
    llm_adaptation: str = "lora"  # "lora" | "full" | "none"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    # fitted, not chosen: offsets added to the options' first-token logits, keyed by the options
    # (medic_ad.models.medic_ad.choice_key); written by stage 2's calibration
    choice_bias: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.llm_adaptation not in ("lora", "full", "none"):
            raise ValueError(f"llm_adaptation must be 'lora', 'full' or 'none', not {self.llm_adaptation!r}")
        for name in ("num_soft_prompts", "pool_size", "diff_pool_size", "anomaly_dim", "qformer_dim", "heatmap_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")

    @classmethod
    def tiny(cls, **overrides: Any) -> "MedicADConfig":
        """Module sizes matched to the tiny offline backbone."""
        base = dict(anomaly_dim=64, qformer_dim=64, qformer_layers=1, heatmap_dim=32, lora_r=8, lora_alpha=16)
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MedicADConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown MEDIC-AD config key(s): {', '.join(unknown)}")
        return cls(**data)
