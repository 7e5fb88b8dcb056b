"""MEDIC-AD at the full Lingshu-7B / Qwen2.5-VL-7B shape on one CUDA GPU (issue 7 §5). Never part of CI.

    python benchmarks/gpu_7b.py                 # needs one CUDA GPU (skips with exit 0 without one)
    python benchmarks/gpu_7b.py --dry-run       # scaled-down shape on CPU: constructs and runs every step

Random weights in bf16, built directly on the GPU under ``torch.device("cuda")`` (nothing is
downloaded; the tokenizer is the project's tiny offline one — only token *counts* matter here),
``MedicADConfig()`` defaults (16 ``<Ano>``, 16 ``<Diff>``, LoRA r 16 unmerged; the MEDIC-AD modules and
LoRA in fp32, as peft and the recipes keep trainable weights).

Measures
* **detection throughput**: ``next_token_logits`` (one prefill, the decision ``detect`` scores with) on
  batches of one-image prompts at 448×448 (256 image tokens), images/s per batch size, and its share of
  the **prefill limit** = FLOPs per image ÷ seconds per image ÷ the card's dense bf16 peak
  (H100 SXM 989 TFLOP/s). FLOPs are analytic (``benchmarks/flops.py``: 2·weights·tokens for every
  linear of the vision tower and LLM incl. unmerged LoRA, causal ``2·T²·H·d`` LLM attention, ``4·n²·D``
  vision attention per window / full image, one LM-head row). Target ≥ 50 %.
* **stage-1 training step** with gradient checkpointing (non-reentrant), AdamW over the stage's
  trainable parameters, LM loss: MFU = model FLOPs per step (forward + the backward that reaches a
  trainable parameter, recompute excluded; see flops.py) ÷ step time ÷ peak. Target ≥ 40 %.
* **prefill vs generation** at batch 1: one scoring prefill against a 16-token greedy answer
  (target ≥ 5×; on the CPU small config the vision tower dominates the prefill, so it is measured here).
* peak memory: ``torch.cuda.max_memory_allocated`` per phase.

Known limit: with ``--attn sdpa`` the vision tower of transformers 5.x runs attention window by window
in a Python loop (16 windows per 448² image × 28 windowed blocks); ``--attn flash_attention_2`` (if
flash-attn is installed) uses one varlen kernel per block. Run both when possible.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from benchmarks import common, flops  # noqa: E402

DRY_TEXT = flops.TextShape(hidden=256, layers=2, heads=4, kv_heads=2, intermediate=512, vocab=4096)
# window 56 at 112² input: 4 windows per image, so the windowed path is exercised
DRY_VISION = flops.VisionShape(depth=4, hidden=128, heads=2, intermediate=256, out_hidden=256, window=56,
                               fullatt=(1, 3))
PREFILL_TARGET = 0.50
MFU_TARGET = 0.40


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/gpu_7b.py", description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true",
                   help="scaled-down shape on CPU (bf16): checks that everything constructs and runs")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for gpu_7b.json (default: benchmarks/results; --dry-run: a temporary folder)")
    p.add_argument("--image-size", type=int, default=None, help="square input side (default 448; dry run 112)")
    p.add_argument("--batch-sizes", default=None, help="detection batch sizes (default 1,4,8,16,32; dry run 1,2)")
    p.add_argument("--train-batch", type=int, default=None, help="stage-1 batch (default 16; dry run 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5; dry run 1)")
    p.add_argument("--attn", default="sdpa", help="attn_implementation (sdpa, flash_attention_2, eager)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="dense bf16 peak of the card (default: looked up from its name; H100 SXM 989)")
    p.add_argument("--no-train", action="store_true", help="detection only")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite benchmarks/README.md")
    return p.parse_args(argv)


def build(text: flops.TextShape, vision: flops.VisionShape, *, device, dtype, attn: str, image_size: int,
          seed: int = 0):
    """MEDIC-AD (MedicADConfig defaults) on a random Qwen2.5-VL of the given shape, built on ``device``."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from medic_ad.models.config import MedicADConfig
    from medic_ad.models.builders import build_medic_ad
    from medic_ad.models.qwen2_5_vl.backbone import Backbone
    from medic_ad.models.qwen2_5_vl.processing import MedicADProcessor
    from medic_ad.models.qwen2_5_vl.tiny import QWEN_SPECIAL_TOKENS, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    if len(tokenizer) > text.vocab:
        raise ValueError(f"vocab {text.vocab} smaller than the tokenizer ({len(tokenizer)})")
    hd = text.hidden // text.heads
    mrope = [16, 24, 24] if hd == 128 else [hd // 8, 3 * hd // 16, 3 * hd // 16]
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=text.vocab, hidden_size=text.hidden, intermediate_size=text.intermediate,
            num_hidden_layers=text.layers, num_attention_heads=text.heads, num_key_value_heads=text.kv_heads,
            max_position_embeddings=128000, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            depth=vision.depth, hidden_size=vision.hidden, intermediate_size=vision.intermediate,
            num_heads=vision.heads, out_hidden_size=vision.out_hidden, fullatt_block_indexes=list(vision.fullatt),
            patch_size=vision.patch, temporal_patch_size=vision.temporal_patch, spatial_merge_size=vision.merge,
            window_size=vision.window, hidden_act="silu",
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation=attn)
    model.eval()
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    processor = MedicADProcessor(tokenizer=tokenizer, image_processor=Qwen2VLImageProcessorPil(
        min_pixels=image_size * image_size, max_pixels=image_size * image_size, patch_size=vision.patch,
        temporal_patch_size=vision.temporal_patch, merge_size=vision.merge))
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed + 1)
        medic = build_medic_ad(Backbone(model=model, processor=processor, source="random-qwen2.5-vl-7b-shape"),
                               MedicADConfig())
    return medic.to(device)


def weight_check(medic, text: flops.TextShape, vision: flops.VisionShape) -> dict[str, dict[str, int]]:
    """Analytic weight counts (what the FLOPs use) next to the model's own, to catch a wrong formula."""
    lm = medic.backbone.model.language_model
    visual = medic.backbone.model.visual

    def linear_weights(module):
        return sum(p.numel() for n, p in module.named_parameters()
                   if n.endswith("weight") and p.dim() == 2 and "lora_" not in n)

    return {
        "llm_layer_weights": {"analytic": flops.llm_layer_weights(text), "model": linear_weights(lm.layers)},
        "lora_weights": {"analytic": flops.lora_weights(text, medic.config.lora_r),
                         "model": sum(p.numel() for n, p in lm.named_parameters() if "lora_" in n)},
        "vision_block_weights": {"analytic": vision.depth * flops.vision_block_weights(vision),
                                 "model": linear_weights(visual.blocks)},
        "vision_merger_weights": {"analytic": flops.vision_merger_weights(vision),
                                  "model": linear_weights(visual.merger)},
        "vision_patch_weights": {"analytic": flops.vision_patch_weights(vision),
                                 "model": visual.patch_embed.proj.weight.numel()},
        "lm_head_weights": {"analytic": text.hidden * text.vocab, "model": medic.backbone.lm_head.weight.numel()},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_7b: skipped: no CUDA GPU here (python benchmarks/gpu_7b.py --dry-run checks it on CPU)")
        return 0
    from medic_ad.data.templates import DETECTION_PROMPT
    from medic_ad.data.templates import ChatExample

    dry = args.dry_run
    if dry:
        torch.set_num_threads(1)  # a construct-and-run check: 1 thread is fastest on a shared CPU
    device = torch.device("cpu" if dry else "cuda")
    if not dry:
        # the fp32 pieces (LoRA, MEDIC-AD modules) use TF32 tensor cores, as training on these cards does
        torch.set_float32_matmul_precision("high")
    text, vision = (DRY_TEXT, DRY_VISION) if dry else (flops.QWEN2_5_VL_7B_TEXT, flops.QWEN2_5_VL_7B_VISION)
    size = args.image_size or (112 if dry else 448)
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1,2" if dry else "1,4,8,16,32")).split(",")]
    train_batch = args.train_batch or (2 if dry else 16)
    repeats = args.repeats or (1 if dry else 5)
    warmup = 1 if dry else 2
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="medic-ad-gpu7b-dry-")) if dry else common.DEFAULT_RESULTS)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    machine = common.machine_info()
    started = common.utc_now()
    t_start = time.perf_counter()
    gpu_name = machine["gpu"]["name"] if machine.get("gpu") else None
    peak = args.peak_tflops or (flops.peak_tflops_for(gpu_name) if gpu_name else None)

    def log(msg: str) -> None:
        print(f"[gpu_7b{' dry-run' if dry else ''}] {msg}", flush=True)

    def mem_reset() -> None:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            common.reset_peak_rss()

    def mem_peak_gib() -> float | None:
        if device.type == "cuda":
            return torch.cuda.max_memory_allocated() / 2**30
        kib = common.proc_status_kib("VmHWM")
        return kib / 2**20 if kib else None

    log(f"building MEDIC-AD on a random {'scaled-down' if dry else '7B-shape'} Qwen2.5-VL "
        f"(bf16, {args.attn}) on {device}")
    mem_reset()
    t0 = time.perf_counter()
    model = build(text, vision, device=device, dtype=torch.bfloat16, attn=args.attn, image_size=size)
    build_s = time.perf_counter() - t0
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    check = weight_check(model, text, vision)
    log(f"built in {build_s:.1f} s, {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, "
        f"{weights_gib:.1f} GiB")
    images = common.load_images(max(max(batch_sizes), train_batch), size)
    n_prompts = model.config.num_soft_prompts

    # ------------------------------------------------------------------ detection (prefill scoring)
    detection: dict[str, Any] = {"by_batch": {}}
    for bs in batch_sizes:
        batch = model.prepare([ChatExample([im], DETECTION_PROMPT) for im in images[:bs]])
        batch = {k: v.to(device) for k, v in batch.items()}
        tokens = batch["attention_mask"].sum(1).tolist()
        grids = [(int(h), int(w)) for _, h, w in batch["image_grid_thw"].tolist()]  # one image per sample
        per_image = [flops.prefill_flops(tokens=int(t), grids=[g], text=text, vision=vision, prompts=n_prompts,
                                         lora_r=model.config.lora_r)["total"] for t, g in zip(tokens, grids)]
        mem_reset()
        with torch.inference_mode():
            samples = common.measure({"prefill": lambda b=batch: model.next_token_logits(b)}, warmup=warmup,
                                     repeats=repeats, sync=sync)["prefill"]
        st = common.stats(samples)
        achieved = sum(per_image) / st["median_s"]
        detection["by_batch"][bs] = {
            **st, "images_per_s": bs / st["median_s"], "tokens_per_sample": int(max(tokens)),
            "flops_per_image": sum(per_image) / bs, "achieved_tflops": achieved / 1e12,
            "prefill_limit_share": achieved / (peak * 1e12) if peak else None, "peak_memory_gib": mem_peak_gib(),
        }
        log(f"detection batch {bs}: {bs / st['median_s']:.1f} images/s, {achieved / 1e12:.1f} TFLOP/s"
            + (f" = {100 * achieved / (peak * 1e12):.0f} % of peak" if peak else ""))
    # ------------------------------------------------------------------ score by prefill vs answer by generation
    from benchmarks.prefill_vs_generate import TARGET_SPEEDUP, generate_exactly

    gen_tokens = 16
    batch = {k: v.to(device) for k, v in model.prepare([ChatExample([images[0]], DETECTION_PROMPT)]).items()}
    with torch.inference_mode():
        samples = common.measure({"prefill": lambda: model.next_token_logits(batch),
                                  f"generate_{gen_tokens}": lambda: generate_exactly(model, batch, gen_tokens)},
                                 warmup=warmup, repeats=repeats, sync=sync)
    prefill_vs_generate = {**common.all_stats(samples),
                           "speedup": common.paired_ratio(samples[f"generate_{gen_tokens}"], samples["prefill"])}
    log(f"batch 1: prefill {1e3 * prefill_vs_generate['prefill']['median_s']:.0f} ms, generating {gen_tokens} tokens "
        f"{prefill_vs_generate['speedup']['median']:.1f}× longer")
    best_bs = max(batch_sizes, key=lambda b: detection["by_batch"][b]["images_per_s"])
    detection["best_batch"] = best_bs
    detection["best_images_per_s"] = detection["by_batch"][best_bs]["images_per_s"]

    # ------------------------------------------------------------------ stage-1 training step
    training: dict[str, Any] | None = None
    if not args.no_train:
        log(f"stage-1 training step, batch {train_batch}, gradient checkpointing")
        model.set_stage(1)
        enable = getattr(model.backbone, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:  # transformers < 5.23
            model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        # checkpointing re-runs a layer's forward in backward, calling its submodules again: count them
        calls = {"llm_layer0_attn": 0, "vision_last_block_attn": 0}
        counters = [
            model.backbone.model.language_model.layers[0].self_attn.register_forward_hook(
                lambda *a: calls.__setitem__("llm_layer0_attn", calls["llm_layer0_attn"] + 1)),
            model.backbone.model.visual.blocks[-1].attn.register_forward_hook(
                lambda *a: calls.__setitem__("vision_last_block_attn", calls["vision_last_block_attn"] + 1)),
        ]
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
        examples = [ChatExample([im], DETECTION_PROMPT, ("Yes, there is an abnormality.", "No abnormality is seen.")[i % 2])
                    for i, im in enumerate(images[:train_batch])]
        batch = {k: v.to(device) for k, v in model.prepare(examples, with_answers=True).items()}
        tokens = batch["attention_mask"].sum(1).tolist()
        grids = [(int(h), int(w)) for _, h, w in batch["image_grid_thw"].tolist()]
        supervised = (batch["labels"][:, 1:] != -100).sum(1).tolist()  # the LM head's rows (MedicAD.forward)
        step_flops = sum(flops.stage1_train_flops(tokens=int(t), grids=[g], text=text, vision=vision,
                                                  prompts=n_prompts, prompt_blocks=list(model.prompt_layers),
                                                  lora_r=model.config.lora_r, supervised=int(s))["total"]
                         for t, g, s in zip(tokens, grids, supervised))
        losses: list[float] = []

        def step() -> None:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))

        step()  # one step with the counters on: 2 calls per layer = forward + recompute
        for h in counters:
            h.remove()
        recompute = {k: v == 2 for k, v in calls.items()}
        mem_reset()
        samples = common.measure({"step": step}, warmup=max(0, warmup - 1), repeats=repeats, sync=sync)["step"]
        st = common.stats(samples)
        achieved = step_flops / st["median_s"]
        training = {**st, "batch_size": train_batch, "samples_per_s": train_batch / st["median_s"],
                    "tokens_per_sample": int(max(tokens)), "model_flops_per_step": step_flops,
                    "achieved_tflops": achieved / 1e12, "mfu": achieved / (peak * 1e12) if peak else None,
                    "trainable_params": sum(p.numel() for p in params), "losses": losses,
                    "peak_memory_gib": mem_peak_gib(), "gradient_checkpointing": "non-reentrant",
                    "recompute_observed": recompute}
        log(f"training: {train_batch / st['median_s']:.2f} samples/s, {achieved / 1e12:.1f} TFLOP/s"
            + (f" = {100 * achieved / (peak * 1e12):.0f} % MFU" if peak else ""))

    best = detection["by_batch"][best_bs]
    summary = [
        common.summary_row(f"detection throughput (batch {best_bs})", best["images_per_s"], "images/s"),
        common.summary_row("detection share of the prefill limit",
                           None if best["prefill_limit_share"] is None else 100 * best["prefill_limit_share"], "%",
                           target=f"≥ {100 * PREFILL_TARGET:g} %",
                           met=None if best["prefill_limit_share"] is None else best["prefill_limit_share"] >= PREFILL_TARGET),
        common.summary_row("detection peak memory", best["peak_memory_gib"], "GiB"),
        common.summary_row(f"prefill speed-up vs generating {gen_tokens} tokens (batch 1)",
                           prefill_vs_generate["speedup"]["median"], "×", target=f"≥ {TARGET_SPEEDUP:g}×",
                           met=prefill_vs_generate["speedup"]["median"] >= TARGET_SPEEDUP),
    ]
    if training:
        summary += [
            common.summary_row(f"stage-1 training (batch {train_batch}, grad. checkpointing)",
                               training["samples_per_s"], "samples/s"),
            common.summary_row("stage-1 training MFU", None if training["mfu"] is None else 100 * training["mfu"], "%",
                               target=f"≥ {100 * MFU_TARGET:g} %",
                               met=None if training["mfu"] is None else training["mfu"] >= MFU_TARGET),
            common.summary_row("stage-1 training peak memory", training["peak_memory_gib"], "GiB"),
        ]
    payload = {
        "benchmark": "gpu_7b" if not dry else "gpu_7b_dry_run", "schema_version": common.SCHEMA_VERSION,
        "quick": False, "dry_run": dry, "machine": machine, "started_utc": started,
        "wall_s": round(time.perf_counter() - t_start, 2),
        "config": {"text": text, "vision": vision,
                   "dtype": "bfloat16 backbone, fp32 MEDIC-AD modules and LoRA (TF32 matmuls on CUDA)",
                   "attn_implementation": args.attn,
                   "medic_ad": model.config.to_dict(), "peak_bf16_tflops": peak, "repeats": repeats,
                   "warmup": warmup, "build_s": build_s, "weights_gib": weights_gib,
                   "flops_formula": flops.__doc__},
        "input": {"image_size": [size, size], "image_tokens": (size // (vision.patch * vision.merge)) ** 2,
                  "prompt": DETECTION_PROMPT},
        "results": {"detection": detection, "prefill_vs_generate": prefill_vs_generate, "training": training,
                    "weight_check": check},
        "summary": summary,
    }
    path = common.write_result(out_dir, payload)
    log(f"wrote {path}")
    for row in summary:
        print(f"  {row['metric']}: {common._fmt(row['value'])} {row['unit']}"
              + ({True: "  [target met]", False: "  [target MISSED]", None: ""}[row["met"]]))
    if not dry and not args.no_readme and out_dir.resolve() == common.DEFAULT_RESULTS.resolve():
        common.update_readme(common.DEFAULT_README, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
