"""Training configs: YAML files → typed dataclasses, with ``key=value`` overrides (litgpt style).

A config names its stage, its input checkpoint and its output folder. ``${data}`` in any string is
the shared data folder (``$MEDIC_AD_DATA`` or ``../shared/data``); ``${repo}`` the repository root.
Unknown keys are errors that name the key and the keys that exist.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medic_ad.paths import repo_root, shared_data_dir
from medic_ad.yaml_files import read_yaml


@dataclass
class DataSource:
    """One entry of a data mixture.

    ``name``: a registered dataset adapter (``image_folder``, ``image_mask``, …), ``synthetic``
    (the seeded control set; ``options.kind`` detection/segmentation/pairs, ``options.n``,
    ``options.size``, ``options.seed``, ``options.abnormal_fraction``) or ``change_pairs`` (pairs
    built from real masks; ``options.source`` names the adapter of ``root``). ``task`` forces a
    template (detection/change/vqa/grounding/caption).
    ``label`` keeps only the samples with that image label (``normal``/``abnormal``): how a mixture
    balances an all-abnormal mask set with the normals of its source dataset.
    """

    name: str
    root: str | None = None
    split: str | None = None
    task: str | None = None
    weight: float = 1.0
    limit: int | None = None
    label: str | None = None
    caption: str | None = None  # stage 0: the modality asked about (e.g. "brain MRI")
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """``batch_size`` is the global batch of one optimizer step, whatever the number of processes: each
    of the N processes runs ``batch_size / (N × grad_accum)`` samples per forward pass. With
    ``micro_batch_size`` set, ``grad_accum`` follows from it instead (``batch_size / (N × micro)``), so
    one config keeps its batch from 1 GPU to 8. ``max_steps`` and ``warmup_steps`` count optimizer steps."""

    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_steps: int = 100
    batch_size: int = 4
    grad_accum: int = 1
    micro_batch_size: int | None = None
    max_grad_norm: float = 1.0
    min_lr_ratio: float = 0.1


@dataclass
class LossConfig:
    lm_weight: float = 1.0
    map_weight: float = 1.0
    recon_weight: float = 1.0
    focal_gamma: float = 2.0
    top_k: float = 0.1
    share_weight: float = 0.0  # stage 1: lesion_share_loss (lesion-weighted share BCE + log-area term); 0 = off
    dice_weight: float = 2.0
    bce_weight: float = 1.0
    pos_weight_power: float = 0.5  # stage 3: lesion pixels weighted by (background / lesion) ** this


@dataclass
class TrainConfig:
    """One stage's run. ``input_checkpoint``: stage 0/1 a Qwen2.5-VL folder (or ``tiny``), stage 2/3
    the previous stage's MEDIC-AD folder. ``model``: MEDIC-AD module options (stage 1) or tiny
    backbone sizes (stage 0 from ``tiny``)."""

    stage: int
    input_checkpoint: str
    output_dir: str
    data: list[DataSource]
    model: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    seed: int = 0
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 10
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    tensorboard: bool = True
    progress: bool = True
    num_threads: int | None = None
    num_workers: int = 0  # DataLoader processes that collate the next steps while the model trains; 0: in the loop
    prefetch_factor: int = 2  # batches each worker keeps ready

    def __post_init__(self) -> None:
        if self.stage not in (0, 1, 2, 3):
            raise ValueError(f"stage must be 0, 1, 2 or 3, got {self.stage}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if not self.data:
            raise ValueError("the config's data mixture is empty")
        if self.optim.max_steps < 1 or self.optim.batch_size < 1:
            raise ValueError("optim.max_steps and optim.batch_size must be ≥ 1")
        if self.optim.grad_accum < 1 or (self.optim.micro_batch_size is not None and self.optim.micro_batch_size < 1):
            raise ValueError("optim.grad_accum and optim.micro_batch_size must be ≥ 1")
        if self.optim.micro_batch_size is not None and self.optim.grad_accum != 1:
            raise ValueError("set optim.micro_batch_size or optim.grad_accum, not both: "
                             "with a micro batch, accumulation follows from the global batch")
        if self.num_workers < 0 or self.prefetch_factor < 1:
            raise ValueError("num_workers must be ≥ 0 and prefetch_factor ≥ 1")


def _expand(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("${data}", str(shared_data_dir())).replace("${repo}", str(repo_root()))
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    return value


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"config section {where or '(top)'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"known keys{' in ' + where if where else ''}: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        if cls is TrainConfig and name == "data":
            if not isinstance(value, list):
                raise ValueError("config key data must be a list of sources")
            kwargs[name] = [_build(DataSource, v, f"data.{i}") for i, v in enumerate(value)]
        elif cls is TrainConfig and name == "optim":
            kwargs[name] = _build(OptimConfig, value, "optim")
        elif cls is TrainConfig and name == "loss":
            kwargs[name] = _build(LossConfig, value, "loss")
        else:
            kwargs[name] = _coerce(value, fields[name].type, f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"config section {where or '(top)'}: {exc}") from None


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Numbers written the YAML-1.1 way ("1e-3" is a string there) become the field's type."""
    text = str(annotation)
    if isinstance(value, str) and text in ("float", "int", "float | None", "int | None"):
        try:
            return float(value) if text.startswith("float") else int(value)
        except ValueError:
            raise ValueError(f"config key {key}: {value!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return float(value) if text.startswith("float") else value


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one ``dotted.key=value`` (value parsed as YAML; list items by index)."""
    if "=" not in override:
        raise ValueError(f"override {override!r} is not key=value")
    key, raw = override.split("=", 1)
    value = yaml.safe_load(raw) if raw else ""
    parts = key.strip().split(".")
    node: Any = data
    for part in parts[:-1]:
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ValueError(f"override {key}: no list item {part!r}")
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})  # an unknown section is reported by validation
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ValueError(f"override {key}: no list item {last!r}")
        node[int(last)] = value
    else:
        node[last] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (or ``base``), apply overrides, expand ``${data}``, validate."""
    if path is not None:
        data = read_yaml(path, what="config file")
    else:
        data = dict(base or {})
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a mapping")
    for override in overrides or []:
        apply_override(data, override)
    missing = [k for k in ("stage", "input_checkpoint", "output_dir", "data") if k not in data]
    if missing:
        raise ValueError(f"{path or 'config'}: missing required key(s) {', '.join(missing)}")
    return _build(TrainConfig, _expand(data), "")


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
