"""Scoring by one prefill vs answering by generation (issue 7 §2; target ≥ 5× faster at equal decisions).

* ``prefill``: :meth:`MedicAD.next_token_logits` — one forward, the decision is argmax over the
  first answer token's {Yes, No} logits (what ``detect`` scores with).
* ``generate_N``: :meth:`MedicAD.generate` with exactly N new tokens (``min_new_tokens = N`` so an
  early end-of-turn cannot make generation look cheap), the decision parsed from the answer text.

Agreement: over a set of images, the prefill's {Yes, No} decision vs the decision read from the
generated answer (does it start with "Yes" or "No"). A random backbone answers neither, so the LM-head
rows of "Yes" and "No" are first shifted along the mean final hidden state (both by the same large
amount, plus an offset that splits the calibration images about half/half): the model then answers
Yes or No like a trained detector while its decision still depends on the image. Nothing else changes.

Also: batched scoring throughput (images/s vs batch size) and ``detect()`` end to end — one
``generate`` per batch that reads the {Yes, No} score at its first step and forces the answer to start
with the decision (:meth:`MedicAD.generate_choice`); its scores are checked against the prefill's.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from benchmarks import common

TARGET_SPEEDUP = 5.0


def calibrate_yes_no(model, batch, yes: int, no: int) -> dict[str, float]:
    """Make Yes/No the top two tokens and split decisions ~50/50 on ``batch`` (see module docstring)."""
    head = model.backbone.lm_head
    captured: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda m, a: captured.append(a[0][:, -1].detach().float()))
    try:
        logits = model.next_token_logits(batch)
    finally:
        handle.remove()
    h = torch.cat(captured)  # (B, d) final normed hidden state at the answer position
    u = h.mean(0)
    u = u / u.pow(2).sum()  # h·u ≈ 1 for states near the mean direction
    margin = float((logits.max(-1).values - logits[:, [yes, no]].min(-1).values).max()) + 10.0
    split = float((logits[:, no] - logits[:, yes]).median())
    with torch.no_grad():
        w = head.weight
        w[yes] += (margin + split) * u.to(w.dtype)
        w[no] += margin * u.to(w.dtype)
    return {"shift": margin, "yes_offset": split}


def generate_exactly(model, batch, n: int) -> list[str]:
    """Greedy answers of exactly ``n`` new tokens."""
    model.backbone.generation_config.min_new_tokens = n
    try:
        return model.generate(batch, max_new_tokens=n)
    finally:
        model.backbone.generation_config.min_new_tokens = 0


def text_decision(answer: str) -> str:
    a = answer.strip()
    return "yes" if a.startswith("Yes") else "no" if a.startswith("No") else "other"


def run(*, quick: bool, log: Callable[[str], None], repeats: int | None = None) -> dict[str, Any]:
    from medic_ad.data.templates import DETECTION_PROMPT
    from medic_ad.data.templates import ChatExample

    size = common.bench_size(quick)
    warmup, repeats = (1, repeats or 2) if quick else (1, repeats or 7)
    gen_lengths = [16] if quick else [16, 32]
    batch_sizes = [1, 2] if quick else [1, 2, 4, 8, 16]
    n_agree = 8 if quick else 32
    log(f"building MEDIC-AD ({size.name}, {size.image_size}×{size.image_size}, LoRA unmerged)")
    model = common.build_medic(size)
    proc = model.processor
    yes, no = proc.first_token_id("Yes"), proc.first_token_id("No")
    images = common.load_images(max(n_agree, max(batch_sizes)), size.image_size)

    def prep(ims):
        return model.prepare([ChatExample([im], DETECTION_PROMPT) for im in ims])

    chunk = 8
    with torch.inference_mode():
        calib = calibrate_yes_no(model, prep(images[:chunk]), yes, no)
        log(f"agreement over {n_agree} images (prefill decision vs generated answer)")
        pre_dec, gen_dec = [], []
        for s in range(0, n_agree, chunk):
            batch = prep(images[s:s + chunk])
            logits = model.next_token_logits(batch)
            pre_dec += ["yes" if a >= b else "no" for a, b in logits[:, [yes, no]].tolist()]
            gen_dec += [text_decision(a) for a in generate_exactly(model, batch, 4)]
    agree = sum(p == g for p, g in zip(pre_dec, gen_dec)) / len(pre_dec)

    timing: dict[str, Any] = {}
    speedups: dict[str, Any] = {}
    for bs in ([1] if quick else [1, 8]):
        batch = prep(images[:bs])
        fns = {"prefill": lambda b=batch: model.next_token_logits(b)}
        for n in gen_lengths:
            fns[f"generate_{n}"] = lambda b=batch, n=n: generate_exactly(model, b, n)
        rounds = repeats if bs == 1 else max(2, repeats // 2)  # batch 8 is 8× longer per call
        log(f"batch {bs}: prefill vs generate {gen_lengths}, {warmup} warm-up + {rounds} interleaved rounds")
        with torch.inference_mode():
            samples = common.measure(fns, warmup=warmup, repeats=rounds)
        timing[f"batch_{bs}"] = common.all_stats(samples)
        for n in gen_lengths:
            r = common.paired_ratio(samples[f"generate_{n}"], samples["prefill"])
            speedups[f"batch_{bs}_generate_{n}"] = r

    log(f"scoring throughput at batch sizes {batch_sizes}")
    batches = {bs: prep(images[:bs]) for bs in batch_sizes}
    fns = {f"batch_{bs}": (lambda b=b: model.next_token_logits(b)) for bs, b in batches.items()}
    prep_fns = {f"prepare_batch_{bs}": (lambda bs=bs: prep(images[:bs])) for bs in batch_sizes}
    detect_bs = batch_sizes[-1] if quick else 8
    with torch.inference_mode():
        tput = common.measure(fns, warmup=1, repeats=max(1, repeats // 2 if not quick else 1))
        prep_t = common.measure(prep_fns, warmup=0, repeats=max(1, repeats // 2 if not quick else 1))
    det = common.measure({f"detect_{detect_bs}": lambda: model.detect(images[:detect_bs], batch_size=detect_bs)},
                         warmup=0, repeats=1 if quick else 3)
    throughput = {bs: {"images_per_s": bs / common.stats(tput[f"batch_{bs}"])["median_s"],
                       **common.stats(tput[f"batch_{bs}"]),
                       "prepare_images_per_s": bs / common.stats(prep_t[f"prepare_batch_{bs}"])["median_s"]}
                  for bs in batch_sizes}
    det_stats = common.stats(det[f"detect_{detect_bs}"])
    with torch.inference_mode():  # detect()'s one-pass score is the prefill's, to float tolerance
        pre_yes = torch.softmax(model.next_token_logits(prep(images[:detect_bs]))[:, [yes, no]], -1)[:, 0]
        det_yes = torch.tensor([r.score for r in model.detect(images[:detect_bs], batch_size=detect_bs)])
    score_diff = float((pre_yes.cpu() - det_yes).abs().max())
    best = max(batch_sizes, key=lambda b: throughput[b]["images_per_s"])
    main_key = f"batch_1_generate_{gen_lengths[0]}"
    summary = [
        common.summary_row(f"prefill speed-up vs generating {gen_lengths[0]} tokens (batch 1)",
                           speedups[main_key]["median"], "×", target=f"≥ {TARGET_SPEEDUP:g}×",
                           met=speedups[main_key]["median"] >= TARGET_SPEEDUP),
    ]
    for key, r in speedups.items():
        if key != main_key:
            bs, n = key.split("_")[1], key.split("_")[-1]
            summary.append(common.summary_row(f"prefill speed-up vs generating {n} tokens (batch {bs})",
                                              r["median"], "×"))
    summary += [
        common.summary_row("decision agreement prefill vs generation", 100 * agree, "%", target="100 %",
                           met=agree == 1.0, note=f"{len(pre_dec)} images"),
        common.summary_row("scoring throughput, batch 1", throughput[1]["images_per_s"], "images/s"),
        common.summary_row(f"scoring throughput, best (batch {best})", throughput[best]["images_per_s"], "images/s"),
        common.summary_row(f"detect() end to end, batch {detect_bs}", detect_bs / det_stats["median_s"], "images/s"),
    ]
    return {
        "config": {"size": size.name, "backbone": size.backbone, "medic_ad": size.modules or "MedicADConfig() defaults",
                   "llm_adaptation": "lora (unmerged)", "generation": "greedy, min_new_tokens = max_new_tokens",
                   "warmup": warmup, "repeats": repeats, "yes_no_calibration": calib},
        "input": {"image_size": [size.image_size, size.image_size], "prompt": DETECTION_PROMPT,
                  "tokens_per_sample": int(batches[1]["input_ids"].shape[1]),
                  "images": "shared br35h PNGs resized" if common.png_files(len(images)) else "synthetic"},
        "results": {
            "timing": timing, "speedup_generate_over_prefill": speedups,
            "agreement": {"rate": agree, "n": len(pre_dec), "prefill": pre_dec, "generated": gen_dec,
                          "prefill_yes_rate": pre_dec.count("yes") / len(pre_dec)},
            "throughput_by_batch": throughput,
            "detect_api": {"batch_size": detect_bs, "max_new_tokens": 8, **det_stats,
                           "images_per_s": detect_bs / det_stats["median_s"],
                           "passes": "one generate per batch (score read at its first step)",
                           "max_abs_score_diff_vs_prefill": score_diff},
        },
        "summary": summary,
    }
