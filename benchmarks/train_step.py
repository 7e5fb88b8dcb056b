"""Training step per stage on CPU (issue 7 §4): samples/s and peak memory at the small config.

* stage 1 (``set_stage(1)``): one-image detection samples, LM loss on the answer tokens
  (labels from ``prepare(..., with_answers=True)``); trains soft prompts, system tokens, Anomaly
  Q-Former + MLP and LoRA.
* stage 2: prior/current pairs with the MMXU-style question, LM loss; trains the Diff Q-Former + LoRA.
* stage 3: ``compute_lm=False, compute_heatmap=True``, Dice + BCE (``heatmap_loss``) against random
  masks; trains the heatmap decoder only.

AdamW over exactly the stage's trainable parameters; one warm-up step (allocates the optimizer state),
then timed steps (forward + backward + ``optimizer.step`` + ``zero_grad``). Peak memory is the
process's resident high-water mark ``VmHWM`` from ``/proc/self/status``, reset with
``/proc/self/clear_refs`` before the stage's model is built (so it covers build, warm-up and steps), each
stage in its own interpreter in the full run; ``tracemalloc`` would miss tensors (torch allocates
outside Python's allocator). Reported as the absolute peak (includes ~0.4 GiB of imported libraries)
and as the peak above the resident size before the model was built.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable

import torch

from benchmarks import common

ANSWERS = ("Yes, there is an abnormality.", "No abnormality is seen.")
CHANGE_ANSWERS = ("A: No significant change", "B: Improved", "C: Worsened")


def _batch(model, stage: int, images, batch_size: int):
    from medic_ad.data.templates import DETECTION_PROMPT, change_prompt
    from medic_ad.data.templates import ChatExample

    if stage == 2:
        examples = [ChatExample([images[(2 * i) % len(images)], images[(2 * i + 1) % len(images)]],
                                change_prompt("left lower lung zone"), CHANGE_ANSWERS[i % 3]) for i in range(batch_size)]
    else:
        examples = [ChatExample([images[i % len(images)]], DETECTION_PROMPT, ANSWERS[i % 2]) for i in range(batch_size)]
    return model.prepare(examples, with_answers=stage in (1, 2))


def _loss(model, stage: int, batch, masks):
    if stage == 3:
        from medic_ad.training.losses import heatmap_loss

        out = model(**batch, compute_lm=False, compute_heatmap=True)
        return heatmap_loss(out.heatmap_logits, masks, torch.ones(len(masks), dtype=torch.long))
    return model(**batch).loss


def measure_stage(stage: int, *, quick: bool, batch_size: int, steps: int) -> dict[str, Any]:
    """Build a fresh model, run 1 warm-up + ``steps`` timed training steps of ``stage``; time and memory."""
    size = common.bench_size(quick)
    images = common.load_images(2 * batch_size, size.image_size)
    gc.collect()
    rss_before = common.proc_status_kib("VmRSS")
    hwm_reset = common.reset_peak_rss()
    model = common.build_medic(size)
    model.set_stage(stage)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    batch = _batch(model, stage, images, batch_size)
    g = torch.Generator().manual_seed(stage)
    masks = [(torch.rand(size.image_size, size.image_size, generator=g) > 0.7).float() for _ in range(batch_size)]
    rss_built = common.proc_status_kib("VmRSS")
    times, losses, warm = [], [], None
    for i in range(1 + steps):
        t0 = time.perf_counter()
        loss = _loss(model, stage, batch, masks)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        losses.append(float(loss.detach()))
        if i:
            times.append(dt)
        else:
            warm = dt
    st = common.stats(times)
    peak = common.proc_status_kib("VmHWM")

    def mib(kib):
        return kib / 1024 if kib else None

    return {
        "batch_size": batch_size,
        "images_per_sample": 2 if stage == 2 else 1,
        "tokens_per_sample": int(batch["input_ids"].shape[1]),
        "trainable_params": sum(p.numel() for p in params),
        "total_params": sum(p.numel() for p in model.parameters()),
        "step": st,
        "samples_per_s": batch_size / st["median_s"],
        "warmup_step_s": warm,
        "losses": losses,
        "rss_before_build_mib": mib(rss_before),
        "rss_after_build_mib": mib(rss_built),
        "peak_rss_mib": mib(peak),
        "peak_over_before_mib": mib(peak - rss_before) if peak and rss_before else None,
        "peak_reset": hwm_reset,
    }


def _in_subprocess(stage: int, *, quick: bool, batch_size: int, steps: int) -> dict[str, Any]:
    """:func:`measure_stage` in a fresh interpreter: its peak RSS is that stage's alone (freed heap from an
    earlier stage stays resident in this process and would hide or inflate it)."""
    cmd = [sys.executable, "-m", "benchmarks.train_step", "--stage", str(stage), "--batch-size", str(batch_size),
           "--steps", str(steps), "--threads", str(torch.get_num_threads())] + (["--quick"] if quick else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(common.REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=common.REPO_ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(*, quick: bool, log: Callable[[str], None], repeats: int | None = None) -> dict[str, Any]:
    size = common.bench_size(quick)
    batch_size = 2 if quick else 4
    steps = repeats or (2 if quick else 5)
    isolate = not quick  # quick: in-process, seconds; full: one interpreter per stage for clean peaks
    results: dict[str, Any] = {}
    summary = []
    for stage in (1, 2, 3):
        log(f"stage {stage}: build, 1 warm-up + {steps} timed steps at batch {batch_size}"
            + (" (own process)" if isolate else ""))
        r = (_in_subprocess(stage, quick=quick, batch_size=batch_size, steps=steps) if isolate
             else measure_stage(stage, quick=quick, batch_size=batch_size, steps=steps))
        results[f"stage_{stage}"] = r
        summary.append(common.summary_row(f"stage {stage} training samples/s (batch {batch_size})",
                                          r["samples_per_s"], "samples/s",
                                          note=f"{r['trainable_params'] / 1e6:.2f} M trainable"))
        summary.append(common.summary_row(
            f"stage {stage} peak RSS", r["peak_rss_mib"], "MiB",
            note=("own process" if isolate else "shared process") + (", VmHWM reset" if r["peak_reset"] else "")))
    return {
        "config": {"size": size.name, "backbone": size.backbone, "medic_ad": size.modules or "MedicADConfig() defaults",
                   "optimizer": "AdamW lr 1e-4 over the stage's trainable parameters", "batch_size": batch_size,
                   "timed_steps": steps, "gradient_checkpointing": False,
                   "memory": "VmHWM (/proc/self/status), reset by /proc/self/clear_refs before the model is built; "
                             + ("each stage in its own interpreter" if isolate else
                                "all stages in one interpreter (heap freed by a stage stays resident)"),
                   "stage_losses": {1: "LM", 2: "LM", 3: "Dice + BCE vs random masks (heatmap_loss)"}},
        "input": {"image_size": [size.image_size, size.image_size]},
        "results": results,
        "summary": summary,
    }


if __name__ == "__main__":  # one stage, one JSON line on stdout (used by run() for isolation)
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", type=int, required=True)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(json.dumps(measure_stage(a.stage, quick=a.quick, batch_size=a.batch_size, steps=a.steps)))
