"""Overhead of MEDIC-AD over its bare backbone (issue 7 §1; target ≤ 5 % for ``<Ano>`` + ``<Diff>``).

The same images go through

* ``backbone``: the stock ``Qwen2_5_VLForConditionalGeneration`` — its own pixel path, no LoRA, no
  hooks, stock inputs (``num_ano_tokens = num_diff_tokens = 0``);
* ``medic_*``: :class:`MedicAD` on a backbone built from the same seed (identical weights, checked),
  with LoRA unmerged as trained, and with LoRA merged by :meth:`MedicAD.merge_lora` (peft's
  ``LoraLayer.merge``, as serving and evaluation run it) so the module cost is separated from LoRA's;
  the merged variants keep their historical ``*_nolora`` keys. ``_heatmap`` adds the Stage-3 decoder.

One image (``<Ano>``) and a prior/current pair (``<Ano>`` ×2 + ``<Diff>``), prefill with one logits
row (a detection/compare decision), ``torch.inference_mode``, all variants interleaved. A component
breakdown (vision tower with/without prompts and taps, the processors, the LLM on T vs T + 48 tokens)
and a torch.profiler table say where the added time goes.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from benchmarks import common, flops

TARGET_PCT = 5.0


def _profile(fn: Callable[[], Any], rows: int = 15) -> list[dict[str, Any]]:
    """Top operators of one call by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1e3, 3),
             "self_pct": round(100 * e.self_cpu_time_total / total, 2)} for e in events[:rows]]


def _counted_gflops(fn: Callable[[], Any]) -> float:
    """Matmul/conv GFLOPs of one call as torch.profiler counts them (attention kernels are not counted)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        fn()
    return sum(e.flops for e in prof.key_averages() if e.flops) / 1e9


def _module_times(model: torch.nn.Module, fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Median inclusive wall time (ms) per named top-level piece, from forward pre/post hooks."""
    import time

    pieces = {
        "vision_tower": model.backbone.model.visual,
        "language_model": model.backbone.model.language_model,
        "anomaly_processor": model.anomaly,
        "diff_processor": model.diff,
    }
    acc: dict[str, list[float]] = {k: [] for k in pieces}
    handles, start = [], {}
    for name, mod in pieces.items():
        handles.append(mod.register_forward_pre_hook(lambda m, a, n=name: start.__setitem__(n, time.perf_counter())))
        handles.append(mod.register_forward_hook(
            lambda m, a, o, n=name: acc[n].append(time.perf_counter() - start[n])))
    try:
        for _ in range(repeats):
            fn()
    finally:
        for h in handles:
            h.remove()
    import statistics

    return {k: round(1e3 * statistics.median(v), 3) for k, v in acc.items() if v}


def run(*, quick: bool, log: Callable[[str], None], repeats: int | None = None) -> dict[str, Any]:
    from medic_ad.data.templates import DETECTION_PROMPT, change_prompt
    from medic_ad.data.templates import ChatExample

    size = common.bench_size(quick)
    warmup, repeats = (1, repeats or 2) if quick else (2, repeats or 15)
    log(f"building models ({size.name}, {size.image_size}×{size.image_size})")
    bare, processor = common.build_backbone(size)
    medic = common.build_medic(size)
    medic_none = common.build_medic(size).merge_lora()  # "nolora" keys: LoRA merged into the projections
    if not medic_none.lora_merged:
        raise RuntimeError("merge_lora() merged no LoRA layer")
    for m in (medic, medic_none):  # the comparison is only fair on identical weights
        for name in ("lm_head.weight", "model.visual.blocks.0.mlp.down_proj.weight"):
            if not torch.equal(dict(bare.named_parameters())[name], dict(m.backbone.named_parameters())[name]):
                raise RuntimeError(f"bare and MEDIC-AD backbones differ at {name}")
    bare_proc = common.bare_processor(processor)

    images = common.load_images(3, size.image_size)
    single = [ChatExample([images[0]], DETECTION_PROMPT)]
    pair = [ChatExample([images[1], images[2]], change_prompt("left lower lung zone"))]
    b1, b2 = bare_proc(single, use_diff=False), bare_proc(pair, use_diff=False)
    m1, m2 = medic.prepare(single), medic.prepare(pair)
    tokens = {"backbone_single": b1["input_ids"].shape[1], "medic_single": m1["input_ids"].shape[1],
              "backbone_pair": b2["input_ids"].shape[1], "medic_pair": m2["input_ids"].shape[1],
              "image_tokens_per_image": int(b1["mm_token_type_ids"].sum())}
    if tokens["image_tokens_per_image"] != size.image_tokens:
        raise RuntimeError(f"expected {size.image_tokens} image tokens, the processor gave {tokens['image_tokens_per_image']}")

    def hf(batch):
        return {k: v for k, v in batch.items() if k != "images_per_sample"}

    variants = {
        "backbone": lambda: bare(**hf(b1), logits_to_keep=1, use_cache=False),
        "medic_ano": lambda: medic(**m1, logits_to_keep=1),
        "medic_ano_nolora": lambda: medic_none(**m1, logits_to_keep=1),
        "medic_ano_heatmap": lambda: medic(**m1, logits_to_keep=1, compute_heatmap=True),
        "backbone_pair": lambda: bare(**hf(b2), logits_to_keep=1, use_cache=False),
        "medic_ano_diff": lambda: medic(**m2, logits_to_keep=1),
        "medic_ano_diff_nolora": lambda: medic_none(**m2, logits_to_keep=1),
    }
    log(f"end-to-end: {len(variants)} variants, {warmup} warm-up + {repeats} interleaved rounds")
    with torch.inference_mode():
        samples = common.measure(variants, warmup=warmup, repeats=repeats)

    # ------------------------------------------------------------------ components (the pair)
    with torch.inference_mode():
        pv, grid = m2["pixel_values"], m2["image_grid_thw"]
        feats = medic_none.encode_images(pv, grid)
        ano, maps = medic_none.anomaly(feats.layers, feats.projected)
        diff = medic_none._diff_tokens([2], feats, maps)
        projected = BaseModelOutputWithPooling(pooler_output=tuple(feats.projected))
        bare_embeds = bare.get_input_embeddings()(b2["input_ids"])
        medic_embeds = medic_none.build_inputs_embeds(m2["input_ids"], ano, diff)

    def llm(model, batch, embeds):
        return lambda: model(input_ids=batch["input_ids"], inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                             mm_token_type_ids=batch["mm_token_type_ids"], image_grid_thw=batch["image_grid_thw"],
                             mm_encoder_outputs={"image": projected}, logits_to_keep=1, use_cache=False)

    components = {
        "vision_bare": lambda: bare.model.visual(pv, grid_thw=grid),
        "vision_prompts_taps": lambda: medic_none.encode_images(pv, grid),
        "anomaly_processor": lambda: medic_none.anomaly(feats.layers, feats.projected),
        "diff_processor": lambda: medic_none._diff_tokens([2], feats, maps),
        "heatmap_decoder_x2": lambda: [medic_none.heatmap(layers=[f[None] for f in feats.layers[i]],
                                                          projected=feats.projected[i][None], ano_tokens=ano[i:i + 1],
                                                          anomaly_map=maps[i].anomaly[None],
                                                          out_size=medic_none._pixel_size(feats.grids[i]))
                                       for i in range(2)],
        "llm_backbone_tokens": llm(bare, b2, bare_embeds),
        "llm_medic_tokens": llm(medic_none.backbone, m2, medic_embeds),
        "llm_medic_tokens_lora": llm(medic.backbone, m2, medic_embeds),
    }
    log(f"components: {len(components)} pieces of the pair forward")
    with torch.inference_mode():
        comp_samples = common.measure(components, warmup=warmup, repeats=repeats)
        log("profiling the pair forward (torch.profiler, hooks per module)")
        profile = {
            "medic_ano_diff": _profile(variants["medic_ano_diff"]),
            "backbone_pair": _profile(variants["backbone_pair"]),
        }
        log("counting FLOPs per variant (profiler, load-independent)")
        counted = {name: _counted_gflops(fn) for name, fn in variants.items()}
        module_ms = {
            "medic_ano_diff": _module_times(medic, variants["medic_ano_diff"], max(1, min(repeats, 5))),
            "medic_ano_diff_nolora": _module_times(medic_none, variants["medic_ano_diff_nolora"],
                                                   max(1, min(repeats, 5))),
        }

    st = common.all_stats(samples)
    cst = common.all_stats(comp_samples)
    pairs = {"ano": ("medic_ano", "backbone"), "ano_nolora": ("medic_ano_nolora", "backbone"),
             "ano_heatmap": ("medic_ano_heatmap", "backbone"), "ano_diff": ("medic_ano_diff", "backbone_pair"),
             "ano_diff_nolora": ("medic_ano_diff_nolora", "backbone_pair")}
    ratios = {key: {**common.paired_ratio(samples[num], samples[den]),
                    "ratio_of_medians": st[num]["median_s"] / st[den]["median_s"]}
              for key, (num, den) in pairs.items()}

    def med(name):
        return cst[name]["median_s"]

    pair_base = st["backbone_pair"]["median_s"]
    added = {  # each piece's added seconds, and as % of the bare pair forward
        "soft_prompts_and_taps": med("vision_prompts_taps") - med("vision_bare"),
        "anomaly_processor": med("anomaly_processor"),
        "diff_processor": med("diff_processor"),
        "extra_48_llm_tokens": med("llm_medic_tokens") - med("llm_backbone_tokens"),
        "lora_unmerged": med("llm_medic_tokens_lora") - med("llm_medic_tokens"),
    }
    breakdown = {k: {"added_s": v, "pct_of_backbone_pair": 100 * v / pair_base} for k, v in added.items()}

    def pct(key):
        return 100 * (ratios[key]["median"] - 1)

    counted_added = {key: 100 * (counted[num] / counted[den] - 1) for key, (num, den) in pairs.items()}
    text, vision = flops.shapes_from_hf(bare.config)
    modules = medic.config.to_dict()
    analytic = {}
    per_image = tokens["image_tokens_per_image"]
    for label, (t_shape, v_shape, side_px) in {
        "this_config": (text, vision, size.image_size),
        "qwen2_5_vl_7b": (flops.QWEN2_5_VL_7B_TEXT, flops.QWEN2_5_VL_7B_VISION, 448),  # always the clinical size
    }.items():
        side = side_px // v_shape.patch
        for case, n in (("single", 1), ("pair", 2)):
            # same chat text as measured here, image tokens at this label's input size
            tok = tokens[f"backbone_{case}"] - n * per_image + n * (side // v_shape.merge) ** 2
            for lora in (False, True):
                analytic[f"{label}_{case}_{'lora' if lora else 'nolora'}"] = flops.medic_overhead(
                    text=t_shape, vision=v_shape, backbone_tokens=tok, grids=[(side, side)] * n, modules=modules,
                    lora=lora)

    summary = [
        common.summary_row("added time, <Ano>+<Diff> (pair), LoRA unmerged", pct("ano_diff"), "%",
                           target=f"≤ {TARGET_PCT:g} %", met=pct("ano_diff") <= TARGET_PCT),
        common.summary_row("added time, <Ano>+<Diff> (pair), LoRA merged", pct("ano_diff_nolora"), "%",
                           target=f"≤ {TARGET_PCT:g} %", met=pct("ano_diff_nolora") <= TARGET_PCT),
        common.summary_row("added matmul FLOPs, <Ano>+<Diff> (pair), LoRA merged (profiler count)",
                           counted_added["ano_diff_nolora"], "%"),
        common.summary_row("added FLOPs at the 7B shape, <Ano>+<Diff> (pair, 448², analytic)",
                           analytic["qwen2_5_vl_7b_pair_nolora"]["added_pct"], "%", target=f"≤ {TARGET_PCT:g} %",
                           met=analytic["qwen2_5_vl_7b_pair_nolora"]["added_pct"] <= TARGET_PCT,
                           note=f"of which {analytic['qwen2_5_vl_7b_pair_nolora']['extra_tokens_pct']:.1f} % "
                                "the 48 extra LLM tokens"),
        common.summary_row("added time, <Ano> (1 image), LoRA unmerged", pct("ano"), "%"),
        common.summary_row("added time, <Ano> (1 image), LoRA merged", pct("ano_nolora"), "%"),
        common.summary_row("added time, <Ano> + heatmap (1 image)", pct("ano_heatmap"), "%"),
        common.summary_row("backbone prefill, 1 image", 1e3 * st["backbone"]["median_s"], "ms"),
        common.summary_row("backbone prefill, pair", 1e3 * pair_base, "ms"),
    ]
    return {
        "config": {"size": size.name, "backbone": size.backbone, "medic_ad": size.modules or "MedicADConfig() defaults",
                   "warmup": warmup, "repeats": repeats, "logits_to_keep": 1, "mode": "torch.inference_mode",
                   "lora_merged": "MedicAD.merge_lora() (peft LoraLayer.merge); the *_nolora keys hold it"},
        "input": {"image_size": [size.image_size, size.image_size], "tokens": tokens,
                  "images": "shared br35h PNGs resized" if common.png_files(3) else "synthetic"},
        "results": {"end_to_end": st, "ratios": ratios, "components": cst, "added_breakdown": breakdown,
                    "counted_gflops": counted, "counted_added_pct": counted_added, "analytic_flops": analytic,
                    "module_hook_ms": module_ms, "profile_top_ops": profile},
        "summary": summary,
    }
