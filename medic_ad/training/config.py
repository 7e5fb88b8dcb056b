"""Training configs: YAML files → typed dataclasses, with ``key=value`` overrides (litgpt style).

A config names its stage, its input checkpoint and its output folder. ``${data}`` in any string is
the shared data folder (``$MEDIC_AD_DATA`` or ``../shared/data``); ``${repo}`` the repository root;
``${tiny_backbone}`` the pretrained tiny backbone shipped in the package (``medic_ad/assets/tiny_backbone``);
``${datasets}`` the config's ``datasets`` key (default ``/datasets``), the folder under which the
published datasets live by their usual names, so ``datasets=/data/medical`` moves them all.
Unknown keys are errors that name the key and the keys that exist.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medic_ad.paths import repo_root, shared_data_dir, tiny_backbone_dir
from medic_ad.yaml_files import read_yaml


DEFAULT_DATASETS = "/datasets"


@dataclass
class DataSource:
    """One entry of a data mixture.

    ``name``: a registered dataset adapter (``image_folder``, ``image_mask``, …), ``synthetic``
    (the seeded control set; ``options.kind`` detection/segmentation/pairs, ``options.n``,
    ``options.size``, ``options.seed``, ``options.abnormal_fraction``), ``change_pairs`` (pairs
    built from real masks; ``options.source`` names the adapter of ``root``) or ``cxr_opacity_pairs``
    (pairs with a synthetic opacity on the chest X-rays of ``root``'s ``split``, e.g. ``cxr_pairs``;
    ``options.seed``, ``options.n`` pairs, ``options.size`` longest side, ``options.source`` the
    adapter) or ``cxr_opacity_images`` (the current films of those pairs' worsened cases, each with its
    opacity mask, ``options.n`` of them; the tiny stage 1 asks them as grounding questions).
    ``task`` forces a template (detection/change/vqa/grounding/caption).
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
    # image-size cap of this source's images (None: the run's image_min_pixels / image_max_pixels)
    min_pixels: int | None = None
    max_pixels: int | None = None


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
    datasets: str = DEFAULT_DATASETS
    # evaluation sets: their patients (images, where a set has no patient ids) are dropped from every
    # training source at load; ``name: eval_task`` with ``options.task`` names a registered eval task
    holdout: list[DataSource] = field(default_factory=list)
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
    # --- memory and precision (docs/training.md, "Memory and dry run")
    # Default image-size cap of every image (None: the backbone processor's own); written into the
    # stage's checkpoint, so inference resizes as training did. Sources may set their own.
    image_min_pixels: int | None = None
    image_max_pixels: int | None = None
    # fp32 | bf16-frozen (frozen backbone weights bf16, trained weights and optimizer state fp32; it
    # implies mixed_precision bf16, the autocast its matmuls run under)
    precision: str = "fp32"
    attn_implementation: str = "sdpa"  # sdpa | flash_attention_2 | eager
    num_workers: int = 0  # DataLoader processes that collate the next steps while the model trains; 0: in the loop
    prefetch_factor: int = 2  # batches each worker keeps ready
    # stage 2: fresh training cases per task (detection, change) on which the options' offsets are fitted
    # before the final save (medic_ad/training/calibration.py); 0: no calibration
    calibration: int = 0

    def __post_init__(self) -> None:
        if self.calibration < 0 or (self.calibration and self.stage != 2):
            raise ValueError("calibration (cases per task) is ≥ 0 and only for stage 2, which trains the "
                             "language model last")
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
        self._check_memory_keys()

    def _check_memory_keys(self) -> None:
        from medic_ad.models.precision import check_precision
        from medic_ad.models.qwen2_5_vl.backbone import ATTN_IMPLEMENTATIONS

        check_precision(self.precision)
        if self.precision == "bf16-frozen":
            if self.mixed_precision == "fp16":
                raise ValueError("precision bf16-frozen runs its matmuls under bf16 autocast; mixed_precision fp16 "
                                 "does not go with it (use bf16 or no)")
            self.mixed_precision = "bf16"
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)}, "
                             f"got {self.attn_implementation!r}")
        for where, low, high in [("", self.image_min_pixels, self.image_max_pixels)] + [
                (f"data.{i}.", s.min_pixels, s.max_pixels) for i, s in enumerate(self.data)]:
            for key, value in (("min_pixels", low), ("max_pixels", high)):
                if value is not None and (not isinstance(value, int) or value < 28 * 28):
                    prefix = where or "image_"
                    raise ValueError(f"config key {prefix}{key} must be an integer ≥ 784 (one 28×28 image token), "
                                     f"got {value!r}")
            if low is not None and high is not None and low > high:
                raise ValueError(f"config: {where or 'image_'}min_pixels {low} is above max_pixels {high}")

    def pixel_cap(self, source: DataSource | None = None) -> tuple[int | None, int | None]:
        """(min_pixels, max_pixels) for ``source``'s images: its own, else the run's (None: the backbone's)."""
        low, high = self.image_min_pixels, self.image_max_pixels
        if source is not None:
            low = source.min_pixels if source.min_pixels is not None else low
            high = source.max_pixels if source.max_pixels is not None else high
        return low, high


def _expand(value: Any, datasets: str = DEFAULT_DATASETS) -> Any:
    if isinstance(value, str):
        value = value.replace("${datasets}", datasets)
        value = value.replace("${tiny_backbone}", str(tiny_backbone_dir()))
        return value.replace("${data}", str(shared_data_dir())).replace("${repo}", str(repo_root()))
    if isinstance(value, list):
        return [_expand(v, datasets) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, datasets) for k, v in value.items()}
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
        if cls is TrainConfig and name in ("data", "holdout"):
            if not isinstance(value, list):
                raise ValueError(f"config key {name} must be a list of sources")
            kwargs[name] = [_build(DataSource, v, f"{name}.{i}") for i, v in enumerate(value)]
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
    """Read a YAML config (or ``base``), apply overrides, expand ``${datasets}``, ``${data}``, ``${repo}``, validate."""
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
    datasets = data.get("datasets", DEFAULT_DATASETS)
    if not isinstance(datasets, str) or not datasets or "${datasets}" in datasets:
        raise ValueError(f"config key datasets must be a folder path, got {datasets!r}")
    return _build(TrainConfig, _expand(data, _expand(datasets)), "")


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
