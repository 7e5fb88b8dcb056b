"""``medic-ad train --dry-run``: the stage's model on the meta device and what it will need per GPU.

Nothing is read but the backbone folder's ``config.json`` (and its tokenizer when it has one): the
Qwen2.5-VL and the MEDIC-AD modules are built under ``torch.device("meta")``, so every parameter has a
shape and a dtype and no storage. From them and the config the dry run reports parameters, trainable
parameters, tokens per sample and an estimate of per-GPU memory for an engine.

The memory model (bytes per GPU; F frozen and P trainable parameters after the precision policy,
N GPUs, b samples per GPU, T tokens per sample):

* weights: every parameter at its dtype (ZeRO-3 / FSDP: divided by N, plus the two largest wrap
  units gathered in bf16 — the one computing and the one prefetched);
* gradients: 4·P (ZeRO-2/3, FSDP: divided by N; DDP: twice, its gradient buckets are a copy);
* optimizer: AdamW's two moments, 8·P (ZeRO-2/3, FSDP: divided by N);
* activations: what autograd keeps for the backward, per sample × b. LLM decoder layer: the layer
  input only with gradient checkpointing (plus one layer's full set while it is recomputed), else
  (12h + 2·kv + 5I) elements per token (norms, q/k/v, attention output, MLP gate/up/act/product and
  LoRA's dropped-out inputs) + the dropout masks; the LM head's logits at the supervised positions
  only; the vision blocks that lead to a trained parameter (stage 1: from the first prompted block)
  the same way at their width; the heatmap decoder (stage 3) measured by running it on meta tensors
  and adding up what autograd saves. Activations are bf16 under ``precision: bf16-frozen``, else fp32.

CUDA context, allocator fragmentation and communication buffers are not counted: read the result
as a lower bound on what ``nvidia-smi`` will show.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from medic_ad.data.templates import DETECTION_PROMPT, ChatExample, change_prompt
from medic_ad.models.checkpoint import CONFIG_FILE
from medic_ad.models.config import MedicADConfig
from medic_ad.models.precision import apply_precision, frozen_dtype
from medic_ad.training.config import DataSource, TrainConfig

ENGINES = ("single", "ddp", "zero2", "zero3", "fsdp")
PAIR_SOURCES = ("mimic_diff_vqa", "mmxu", "cxr_pairs", "change_pairs", "cxr_opacity_pairs")
FREE_TEXT_ANSWER_TOKENS = 64  # a free-text answer (VQA, MIMIC-Diff-VQA difference) is counted this long
GIB = 2**30


@dataclass
class SourceTokens:
    name: str
    images: int
    max_pixels: int
    tokens: int


@dataclass
class DryRunReport:
    stage: int
    backbone: str
    engine: str
    num_gpus: int
    batch_size: int
    precision: str
    gradient_checkpointing: bool
    parameters: int
    backbone_parameters: int  # the Qwen2.5-VL without LoRA
    trainable: int
    params_by_dtype: dict[str, int]
    sources: list[SourceTokens]
    tokens_per_sample: int
    memory: dict[str, float]  # bytes per GPU, by part, and "total"
    notes: list[str] = field(default_factory=list)

    @property
    def gib_per_gpu(self) -> float:
        return self.memory["total"] / GIB

    def table(self) -> str:
        rows = [
            ("stage", str(self.stage)),
            ("backbone config", self.backbone),
            ("engine", f"{self.engine} × {self.num_gpus} GPU{'s' if self.num_gpus > 1 else ''}"),
            ("batch per GPU", str(self.batch_size)),
            ("precision", self.precision + (", gradient checkpointing" if self.gradient_checkpointing else "")),
            ("parameters", f"{self.parameters:,} ({self.parameters / 1e9:.2f} B)"),
            ("  of which the backbone", f"{self.backbone_parameters:,}"),
            ("trainable parameters", f"{self.trainable:,} ({self.trainable / 1e6:.1f} M)"),
            ("parameters by dtype", ", ".join(f"{k} {v / 1e9:.3f} B" for k, v in self.params_by_dtype.items())),
        ]
        for s in self.sources:
            rows.append((f"  tokens/sample {s.name}", f"{s.tokens:,} ({s.images} image{'s' * (s.images > 1)} "
                                                         f"≤ {s.max_pixels:,} px)"))
        rows.append(("tokens per sample (max)", f"{self.tokens_per_sample:,}"))
        for part in ("weights", "gradients", "optimizer", "activations"):
            rows.append((f"  {part}", f"{self.memory[part] / GIB:.2f} GiB"))
        rows.append(("estimated memory per GPU", f"{self.gib_per_gpu:.2f} GiB"))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "engine": self.engine, "num_gpus": self.num_gpus, "batch_size": self.batch_size,
                "parameters": self.parameters, "backbone_parameters": self.backbone_parameters,
                "trainable": self.trainable, "precision": self.precision,
                "params_by_dtype": self.params_by_dtype,
                "sources": [vars(s) for s in self.sources],
                "tokens_per_sample": self.tokens_per_sample, "gib_per_gpu": round(self.gib_per_gpu, 3),
                "memory_bytes": self.memory}


# ------------------------------------------------------------------------------------------------ building
def backbone_folder_and_modules(cfg: TrainConfig) -> tuple[Path, MedicADConfig]:
    """The Qwen2.5-VL folder the stage runs on and the MEDIC-AD module options, from the config alone.

    Stage 1 (or a stage 2/3 config pointed at a backbone folder): ``input_checkpoint`` and ``model``.
    Stage 2/3 on a MEDIC-AD checkpoint: the checkpoint's JSON (its weights are not read).
    """
    src = Path(cfg.input_checkpoint)
    if (src / CONFIG_FILE).is_file():
        meta = json.loads((src / CONFIG_FILE).read_text())
        folder = Path(meta["backbone"])
        return (folder if folder.is_absolute() else src / folder), MedicADConfig.from_dict(meta["config"])
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src}: neither a MEDIC-AD checkpoint nor a folder with a config.json "
                                "(the dry run needs the backbone's config.json only)")
    return src, MedicADConfig(**cfg.model)


def _processor(folder: Path, vision_config):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from medic_ad.models.qwen2_5_vl.processing import MedicADProcessor
    from medic_ad.models.qwen2_5_vl.tiny import build_tiny_tokenizer

    if any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        return MedicADProcessor.from_pretrained(folder), "the backbone's tokenizer"
    image = Qwen2VLImageProcessorPil(patch_size=vision_config.patch_size,
                                     temporal_patch_size=vision_config.temporal_patch_size,
                                     merge_size=vision_config.spatial_merge_size)
    if (folder / "preprocessor_config.json").is_file():
        image = Qwen2VLImageProcessorPil.from_pretrained(folder, local_files_only=True)
    return MedicADProcessor(tokenizer=build_tiny_tokenizer(), image_processor=image), \
        "the project's tiny tokenizer (the folder has none)"


def build_meta_model(cfg: TrainConfig):
    """(MEDIC-AD on the meta device at the stage's trainable set and precision, notes)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from medic_ad.models.builders import build_medic_ad
    from medic_ad.models.qwen2_5_vl.backbone import Backbone

    folder, modules = backbone_folder_and_modules(cfg)
    config = Qwen2_5_VLConfig.from_pretrained(folder, local_files_only=True)
    processor, tokenizer_note = _processor(folder, config.vision_config)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            config, dtype=frozen_dtype(cfg.precision), attn_implementation="sdpa")
        medic = build_medic_ad(Backbone(model=model, processor=processor, source=str(folder)), modules)
    medic.set_stage(cfg.stage if cfg.stage in (1, 2, 3) else 1)
    apply_precision(medic, cfg.precision, backbone=medic.backbone)
    return medic, [f"text tokens counted with {tokenizer_note}"]


# ------------------------------------------------------------------------------------------------ tokens
def _images_per_sample(source: DataSource, stage: int) -> int:
    return 2 if source.task == "change" or (source.task is None and source.name in PAIR_SOURCES) else 1


def source_tokens(cfg: TrainConfig, processor, *, use_diff: bool) -> list[SourceTokens]:
    """Tokens of the longest sample each source can give: its images at the cap's largest size, the
    template's question and answer (free-text answers: ``FREE_TEXT_ANSWER_TOKENS``)."""
    from medic_ad.training.memory import set_default_pixel_cap, source_pixel_caps

    default = set_default_pixel_cap(cfg, processor)
    out = []
    for source, cap in zip(cfg.data, source_pixel_caps(cfg, default)):
        n = _images_per_sample(source, cfg.stage)
        question, answer = (change_prompt(), "C: Worsened") if n == 2 else (DETECTION_PROMPT, "Yes.")
        unit = processor.patch_size * processor.merge_size
        image = Image.new("RGB", (unit, unit))  # one merged token: the text is what this call counts
        batch = processor([ChatExample([image] * n, question, answer)], use_diff=use_diff, with_answers=True,
                          pixel_caps=[(unit * unit, unit * unit)])
        text = int(batch["attention_mask"].sum()) - n
        if source.task not in ("detection", "change"):
            text += FREE_TEXT_ANSWER_TOKENS
        out.append(SourceTokens(name=source.name + (f" ({Path(source.root).name})" if source.root else ""),
                                images=n, max_pixels=cap[1], tokens=text + n * processor.max_image_tokens(cap)))
    return out


# ------------------------------------------------------------------------------------------------ memory
def _param_bytes(params) -> float:
    return float(sum(p.numel() * p.element_size() for p in params))


def _largest_unit_params(medic) -> int:
    """Parameters of the largest unit a sharding engine gathers at once (a decoder layer, a vision block,
    the embedding or the LM head)."""
    backbone = medic.backbone.model
    units = [*backbone.language_model.layers, *backbone.visual.blocks, backbone.language_model.embed_tokens,
             medic.backbone.lm_head]
    return max(sum(p.numel() for p in u.parameters()) for u in units)


def _saved_bytes_of(fn) -> float:
    """Bytes autograd saves for the backward while ``fn()`` runs (meta tensors work: only sizes count)."""
    total = [0.0]

    def pack(t: torch.Tensor):
        if not (isinstance(t, torch.nn.Parameter) or (t.is_leaf and t.requires_grad)):
            total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]


def heatmap_activation_bytes(medic, grid: tuple[int, int], dtype: torch.dtype) -> float:
    """What the heatmap decoder saves for one image of ``grid`` patches, run on meta tensors."""
    h, w = grid
    cfg = medic.backbone.config
    vdim, ldim, m = cfg.vision_config.hidden_size, cfg.text_config.hidden_size, cfg.vision_config.spatial_merge_size
    p = cfg.vision_config.patch_size
    dev = dict(device="meta", dtype=dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        return _saved_bytes_of(lambda: medic.heatmap(
            layers=[torch.empty(1, h, w, vdim, **dev) for _ in medic.feature_layers],
            projected=torch.empty(1, h * w // (m * m), ldim, **dev),
            ano_tokens=torch.empty(1, medic.anomaly.num_tokens, ldim, **dev),
            anomaly_map=torch.empty(1, h, w, **dev), out_size=(h * p, w * p),
            image=torch.empty(1, 3, h * p, w * p, **dev)))


def activation_bytes(medic, cfg: TrainConfig, sources: list[SourceTokens], processor) -> float:
    """Activations kept for the backward of one sample (the longest), by the memory model above."""
    act = 2 if cfg.precision == "bf16-frozen" else 4
    t_cfg, v_cfg = medic.backbone.config.text_config, medic.backbone.config.vision_config
    h, inter, layers = t_cfg.hidden_size, t_cfg.intermediate_size, t_cfg.num_hidden_layers
    kv = t_cfg.num_key_value_heads * (h // t_cfg.num_attention_heads)
    lora = medic.config.llm_adaptation == "lora" and medic.config.lora_dropout > 0
    longest = max(sources, key=lambda s: s.tokens)
    tokens = longest.tokens
    merge = v_cfg.spatial_merge_size
    patches = longest.images * processor.max_image_tokens((0, longest.max_pixels)) * merge * merge

    def layer_full(width: int, kv_width: int, mlp: int, rows: int, lora_inputs: bool) -> float:
        elems = 6 * width + 2 * kv_width + 4 * mlp
        masks = 0
        if lora_inputs:
            elems += 6 * width + mlp
            masks = 6 * width + mlp
        return rows * (elems * act + masks)

    total = 0.0
    if cfg.stage in (1, 2):  # the LLM runs with a backward (LoRA)
        full = layer_full(h, kv, inter, tokens, lora)
        if cfg.gradient_checkpointing:
            total += layers * tokens * h * act + full
        else:
            total += layers * full
        answer = FREE_TEXT_ANSWER_TOKENS
        total += tokens * h * act + answer * t_cfg.vocab_size * (act + 4 + 4)  # final norm, head rows
    if cfg.stage == 1 and medic.prompt_layers:  # soft prompts: vision blocks from the first prompted one
        blocks = v_cfg.depth - min(medic.prompt_layers)
        vw, vi = v_cfg.hidden_size, v_cfg.intermediate_size
        full = layer_full(vw, vw, vi, patches, False)
        total += (blocks * patches * vw * act + full) if cfg.gradient_checkpointing else blocks * full
    if cfg.stage == 3:
        side = int(math.isqrt(patches // longest.images))
        side -= side % merge
        total += longest.images * heatmap_activation_bytes(
            medic, (side, side), torch.bfloat16 if cfg.precision == "bf16-frozen" else torch.float32)
    return total


def estimate_memory(medic, cfg: TrainConfig, *, engine: str, num_gpus: int, sources, processor) -> dict[str, float]:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "single" and num_gpus != 1:
        raise ValueError("engine single runs on one GPU; use ddp, zero2, zero3 or fsdp for several")
    n = num_gpus
    trainable = [p for p in medic.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in trainable)
    weights = _param_bytes(medic.parameters())
    grads, adam = 4.0 * n_train, 8.0 * n_train
    if engine == "ddp":
        grads *= 2
    if engine == "zero2":
        grads, adam = grads / n, adam / n
    if engine in ("zero3", "fsdp"):
        weights = weights / n + 2 * 2.0 * _largest_unit_params(medic)
        grads, adam = grads / n, adam / n
    acts = per_gpu_batch(cfg, n) * activation_bytes(medic, cfg, sources, processor)
    return {"weights": weights, "gradients": grads, "optimizer": adam, "activations": acts,
            "total": weights + grads + adam + acts}


def per_gpu_batch(cfg: TrainConfig, num_gpus: int) -> int:
    """Samples one GPU holds activations for in a forward pass: the global batch split over the GPUs and
    the accumulation micro-steps, as the training loop splits it."""
    from medic_ad.training.mixture import batch_split

    size, _ = batch_split(cfg.optim.batch_size, num_gpus, grad_accum=cfg.optim.grad_accum,
                          micro_batch_size=cfg.optim.micro_batch_size)
    return size


def engine_from_accelerate_config(path: str | Path) -> tuple[str, int]:
    """(engine, number of GPUs) of an accelerate config file (``recipes/accelerate/*.yaml``)."""
    from medic_ad.yaml_files import read_yaml

    data = read_yaml(path, what="accelerate config")
    kind = data.get("distributed_type", "NO")
    n = int(data.get("num_processes", 1))
    if kind == "NO":
        return "single", 1
    if kind == "MULTI_GPU":
        return "ddp", n
    if kind == "FSDP":
        return "fsdp", n
    if kind == "DEEPSPEED":
        ds = data.get("deepspeed_config", {})
        stage = ds.get("zero_stage")
        if stage is None and ds.get("deepspeed_config_file"):
            file = Path(ds["deepspeed_config_file"])
            if not file.is_file():  # the recipes name it relative to the repository root
                from medic_ad.paths import repo_root

                file = repo_root() / file
            stage = json.loads(file.read_text())["zero_optimization"]["stage"]
        if int(stage) not in (2, 3):
            raise ValueError(f"{path}: ZeRO stage {stage}; the dry run estimates ZeRO-2 and ZeRO-3")
        return f"zero{int(stage)}", n
    raise ValueError(f"{path}: distributed_type {kind!r} is not one the dry run knows")


def dry_run(cfg: TrainConfig, *, engine: str = "single", num_gpus: int = 1) -> tuple[DryRunReport, Any]:
    """The report, and the meta-device model it was computed from."""
    if cfg.stage == 0:
        raise ValueError("--dry-run covers the MEDIC-AD stages 1-3 (stage 0 trains the whole backbone)")
    medic, notes = build_meta_model(cfg)
    processor = medic.processor
    sources = source_tokens(cfg, processor, use_diff=medic.config.use_diff)
    memory = estimate_memory(medic, cfg, engine=engine, num_gpus=num_gpus, sources=sources, processor=processor)
    by_dtype: dict[str, int] = {}
    for p in medic.parameters():
        key = str(p.dtype).replace("torch.", "")
        by_dtype[key] = by_dtype.get(key, 0) + p.numel()
    if cfg.stage == 3:
        notes.append("stage 3 runs the vision tower and the heatmap decoder only: tokens per sample is the length "
                     "its inputs would have in the LLM")
    notes.append("estimate: CUDA context, allocator fragmentation and communication buffers not counted")
    folder, _ = backbone_folder_and_modules(cfg)
    return DryRunReport(
        stage=cfg.stage, backbone=str(folder), engine=engine, num_gpus=num_gpus,
        batch_size=per_gpu_batch(cfg, num_gpus),
        precision=cfg.precision, gradient_checkpointing=cfg.gradient_checkpointing,
        parameters=sum(p.numel() for p in medic.parameters()),
        backbone_parameters=sum(p.numel() for n, p in medic.backbone.named_parameters() if "lora_" not in n),
        trainable=sum(p.numel() for p in medic.parameters() if p.requires_grad),
        params_by_dtype=by_dtype, sources=sources, tokens_per_sample=max(s.tokens for s in sources),
        memory=memory, notes=notes), medic
