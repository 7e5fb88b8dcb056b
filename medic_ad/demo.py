"""``medic-ad demo``: the whole method on the embedded tiny default, end to end, offline.

Stages 1 → 2 → 3 run as in the paper from the pretrained tiny backbone shipped with the package
(``medic_ad/assets/tiny_backbone``: the tiny analogue of Lingshu, built once by the stage-0 recipe;
its ``MANIFEST.json`` says how), on the real data in ``../shared/data`` (Br35H train split, Br35H and
Figshare masks, change pairs built from real masks and from chest X-rays with synthetic opacities)
and on the synthetic control; the paper's two ablations are trained on the control, and a report is
written.

Every number is computed by the evaluation harness (:mod:`medic_ad.eval`), predictions first and
scores second, on data held back from training: the eval tasks ``control_detection``,
``control_change`` and ``control_grounding`` (the synthetic control, rendered with a seed no training
uses) and, with the shared data, ``br35h``, ``demo_br35h_mask_pairs``, ``demo_cxr_pairs``,
``br35h_masks`` (val splits) and ``figshare`` (held-back blocks).
Layout of the output folder::

    checkpoint/                     final model (stage 3), with its backbone
    eval/predictions/checkpoint/*.jsonl, eval/results.json, eval/report.md
    ablations/<variant>/stage1|stage2/    ablations/eval/ablation.md (Table 4 shape)
    overlays/case_<i>.png           image | heatmap | lesion mask
    metrics.json, report.md         the demo's view of the scored results, with its targets
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from medic_ad.eval.targets import collapsed_changes, target_checks
from medic_ad.paths import repo_root, shared_data_dir

logger = logging.getLogger("medic_ad.demo")


@dataclass(frozen=True)
class DemoPlan:
    """Steps per stage and evaluation sizes; ``QUICK`` is what the tests run."""

    stage1_steps: int
    stage2_steps: int
    stage3_steps: int
    ablation_steps: int  # stage 1 of each ablation variant
    ablation_change_steps: int  # stage 2 of each ablation variant
    batch_size: int
    eval_real: int  # real validation images per task, the subset of its eval task (0: all)
    eval_control: int  # held-out control samples per task (grounding: half, at least 8)
    ablation_eval: int  # held-out control samples per task for each ablation variant
    comparison_steps: int  # stage 1 from the frozen random and from the stage-0 backbone, side by side (0: skip)
    calibration: int  # stage 2's fresh training cases per task for the choice offsets


# FULL fits the 15 minutes on 2 quiet cores with margin, so the stage-1 start comparison is left
# to ``--compare-start``; the ablations keep enough steps for their variants to differ at all. How the
# step counts were sized: docs/model.md, "Sizing the demo".
FULL = DemoPlan(stage1_steps=800, stage2_steps=700, stage3_steps=600, ablation_steps=200,
                ablation_change_steps=100, batch_size=8, eval_real=0, eval_control=200, ablation_eval=100,
                comparison_steps=0, calibration=300)
QUICK = DemoPlan(stage1_steps=10, stage2_steps=8, stage3_steps=8, ablation_steps=4,
                 ablation_change_steps=4, batch_size=4, eval_real=16, eval_control=12, ablation_eval=12,
                 comparison_steps=0, calibration=24)

CONFIGS = ("stage1_anomaly", "stage2_difference", "stage3_heatmap")


def _stage_config(name: str, out: Path, steps: int, batch: int, data_dir: Path, has_data: bool,
                  **overrides: Any):
    """A tiny recipe config with the demo's output folders, step counts and (maybe) no real data."""
    from medic_ad.training.config import load_config
    from medic_ad.yaml_files import read_yaml

    path = repo_root() / "recipes" / "configs" / "tiny" / f"{name}.yaml"
    raw = read_yaml(path, what="tiny recipe config (the demo reads them from the repository)")
    if not has_data:  # the sources and the held-out sets that live in the shared data go together
        for key in ("data", "holdout"):
            raw[key] = [d for d in raw.get(key, []) if "${data}" not in str(d.get("root", ""))]
    raw["output_dir"] = str(out / name.split("_")[0])
    raw["optim"]["max_steps"] = steps
    raw["optim"]["batch_size"] = batch
    raw["optim"]["warmup_steps"] = min(raw["optim"].get("warmup_steps", 10), max(1, steps // 10))
    raw["checkpoint_every"] = max(50, steps // 4)
    raw["progress"] = True
    for key, value in overrides.items():
        raw[key] = value
    cfg = load_config(base=raw)
    for source in [*cfg.data, *cfg.holdout]:
        if source.root and "${data}" not in source.root and str(shared_data_dir()) in source.root:
            source.root = source.root.replace(str(shared_data_dir()), str(data_dir))
    return cfg


def run_demo(out: str | Path = "runs/demo", *, quick: bool = False, data_dir: str | Path | None = None,
             seed: int = 0, compare_start: int = 0, backbone: str | Path | None = None) -> dict[str, Any]:
    """Train stages 1–3 from ``backbone`` (the shipped tiny one), evaluate, run the ablations, write
    ``report.md``/``metrics.json``/overlays."""
    from medic_ad.models.qwen2_5_vl.shipped import verify_tiny_backbone
    from medic_ad.training import train

    plan = QUICK if quick else FULL
    if compare_start:
        plan = replace(plan, comparison_steps=compare_start)
    out = Path(out)
    data_dir = Path(data_dir) if data_dir else shared_data_dir()
    has_data = data_dir.is_dir()
    if not has_data:
        print(f"medic-ad demo: no shared data at {data_dir}; running on the synthetic control alone")
    if backbone is None:
        backbone = verify_tiny_backbone()  # a damaged or LFS-pointer copy fails here, by name, not in stage 1
    backbone = Path(backbone)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str, steps: int, **overrides):
        tick = time.perf_counter()
        cfg = _stage_config(name, out / "stages", steps, plan.batch_size, data_dir, has_data, seed=seed, **overrides)
        print(f"[demo] {name}: {steps} steps → {cfg.output_dir}", flush=True)
        result = train(cfg)
        timings[name] = round(time.perf_counter() - tick, 1)
        return result.output

    s1 = stage("stage1_anomaly", plan.stage1_steps, input_checkpoint=str(backbone))
    s2 = stage("stage2_difference", plan.stage2_steps, input_checkpoint=str(s1), calibration=plan.calibration)
    s3 = stage("stage3_heatmap", plan.stage3_steps, input_checkpoint=str(s2))
    # the final checkpoint carries its backbone (checkpoint/backbone/), so it stays usable when the run's
    # stage folders are moved, deleted or overwritten by the next run; save_pretrained replaces it atomically
    from medic_ad.models.medic_ad import MedicAD

    final = out / "checkpoint"
    MedicAD.from_pretrained(s3).save_pretrained(final, save_backbone=True)
    real_data = data_dir if has_data else None

    tick = time.perf_counter()
    print("[demo] evaluating on the held-out control" + (" and the real held-back splits" if has_data else ""),
          flush=True)
    metrics = evaluate_demo(final, out / "eval", plan=plan, data_dir=real_data, seed=seed)
    timings["evaluation"] = round(time.perf_counter() - tick, 1)
    tick = time.perf_counter()
    metrics["ablations"] = ablations_on_control(out / "ablations", plan=plan, backbone=backbone, seed=seed)
    if plan.comparison_steps and has_data:
        metrics["start_comparison"] = _start_comparison(out, plan, data_dir, seed, backbone)
    timings["ablations"] = round(time.perf_counter() - tick, 1)
    overlays = render_overlays(final, out / "overlays", data_dir=real_data, seed=seed)
    timings["total"] = round(time.perf_counter() - t0, 1)
    metrics["targets"] = target_checks(metrics)
    metrics["collapsed"] = collapsed_changes(metrics)
    metrics["backbone"] = _backbone_record(backbone)
    metrics["timings_s"] = timings
    metrics["plan"] = plan.__dict__
    metrics["data_dir"] = str(real_data) if real_data else None
    metrics["eval"] = {"results": "eval/results.json", "report": "eval/report.md",
                       "predictions": "eval/predictions", "ablations": "ablations/eval/ablation.md"}
    # targets first: the report and metrics.json open with what the run is held to
    metrics = {"targets": metrics.pop("targets"), **metrics}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_report(out / "report.md", metrics, overlays)
    for c in metrics["collapsed"]:
        print(f"[demo] WARNING: change answers collapsed on {c['data']}: {c['share']:.0%} of a balanced set "
              f"answered {c['answer']!r}", flush=True)
    print(f"[demo] done in {timings['total']:.0f} s: {out / 'report.md'}, {out / 'metrics.json'}, {final}")
    return metrics


def _backbone_record(backbone: Path) -> dict[str, Any]:
    """Where the run's backbone came from: its manifest's record when it has one (the shipped one)."""
    from medic_ad.models.qwen2_5_vl.shipped import MANIFEST_FILE, read_manifest

    record: dict[str, Any] = {"path": str(backbone)}
    if (backbone / MANIFEST_FILE).is_file():
        manifest = read_manifest(backbone)
        record.update({k: manifest.get(k) for k in ("weights_sha256", "command", "commit", "steps", "wall_s")})
    return record


# ---------------------------------------------------------------------------------------------- evaluation

# The demo's rows in metrics.json: (metrics kind, data name, eval task). The control is always evaluated;
# the real rows need the shared data.
CONTROL_ROWS = (("detection", "control", "control_detection"), ("change", "control", "control_change"),
                ("heatmap", "control", "control_grounding"))
REAL_ROWS = (("detection", "br35h_val", "br35h"), ("change", "br35h_mask_pairs_val", "demo_br35h_mask_pairs"),
             ("change", "cxr_pairs_val", "demo_cxr_pairs"), ("heatmap", "br35h_masks_val", "br35h_masks"),
             ("heatmap", "figshare_val", "figshare"))
EVAL_BATCH = 16
# Scored answers are the chosen option verbatim (generate_choice), so its first token already carries the
# decision that the text scorer parses; the rest of the option's words would cost steps and change nothing.
EVAL_NEW_TOKENS = 1


def control_task(name: str, n: int, seed_offset: int = 0):
    """A control eval task with ``n`` samples, its seed moved by ``seed_offset`` (the demo's ``--seed``;
    the ablations add 1 so that they are scored on other images than the main model)."""
    from medic_ad.eval.tasks import get_task

    task = get_task(name)
    synthetic = dict(task.synthetic or {})
    synthetic["seed"] = int(synthetic["seed"]) + seed_offset
    return replace(task, subset=n, synthetic=synthetic)


def demo_tasks(plan: DemoPlan, *, seed: int = 0, with_data: bool = True) -> list[tuple[str, str, Any]]:
    """(metrics kind, data name, task) of every evaluation of the demo, sized by ``plan``."""
    from medic_ad.eval.tasks import get_task

    n = plan.eval_control
    sizes = {"control_detection": n, "control_change": n, "control_grounding": max(8, n // 2)}
    rows = [(kind, data, control_task(name, sizes[name], seed)) for kind, data, name in CONTROL_ROWS]
    if with_data:
        for kind, data, name in REAL_ROWS:
            task = get_task(name)
            if task.pairs is not None:  # pairs: a third of the images as sources, three pairs each
                task = replace(task, pairs={**task.pairs, "max_sources": plan.eval_real // 3})
            else:
                task = replace(task, subset=plan.eval_real)
            rows.append((kind, data, task))
    return rows


def _evaluate(models: list, tasks: list, out_dir: Path, *, data_dir: Path | None, title: str) -> dict[str, Any]:
    """:func:`medic_ad.eval.suite.evaluate` as the demo runs it: predictions are redone every run (the
    checkpoints were just retrained, so an earlier run's lines in the same folder are stale)."""
    import sys

    from medic_ad.eval.suite import evaluate

    return evaluate(models, tasks, out_dir, data_root=data_dir, batch_size=EVAL_BATCH,
                    max_new_tokens=EVAL_NEW_TOKENS, overwrite=True, progress=sys.stderr.isatty(),
                    published=False, title=title, log=lambda msg: print(f"[eval] {msg}", flush=True))


def _metrics(results: dict[str, Any], task: str, model: str) -> dict[str, Any]:
    """One task's scored metrics for metrics.json (the ROC points stay in the eval's results.json)."""
    return {k: v for k, v in results["results"][task][model].items() if k != "roc"}


def evaluate_demo(checkpoint: Path, out_dir: Path, *, plan: DemoPlan, data_dir: Path | None,
                  seed: int = 0) -> dict[str, Any]:
    """Detection, change and heatmap metrics of ``checkpoint`` on the control and (with ``data_dir``) the
    real held-back splits: predictions under ``out_dir/predictions``, then ``results.json``, ``report.md``."""
    from medic_ad.eval.models import resolve_models

    rows = demo_tasks(plan, seed=seed, with_data=data_dir is not None)
    models = resolve_models([str(checkpoint)])
    results = _evaluate(models, [task for _, _, task in rows], out_dir, data_dir=data_dir,
                        title="MEDIC-AD demo: held-back evaluation")
    metrics: dict[str, Any] = {"detection": {}, "change": {}, "heatmap": {}}
    for kind, data, task in rows:
        metrics[kind][data] = _metrics(results, task.name, models[0].name)
    return metrics


# The paper's ablations, trained side by side on the control: <Ano> modulation on/off and 4 tapped layers
# vs the last layer only. Row name in metrics.json → (model name in the eval, config switch).
ABLATION_VARIANTS = {"full (4 layers, modulation)": ("full", {}),
                     "no <Ano> modulation": ("no_modulation", {"modulate": False}),
                     "last layer only": ("last_layer", {"multi_scale": False})}
ABLATION_MODEL = {"anomaly_dim": 64, "qformer_dim": 64, "qformer_layers": 1, "heatmap_dim": 32, "lora_r": 8,
                  "lora_alpha": 16, "feature_layers": [0, 1, 2, 3]}
CONTROL_SIZE = 168  # the tiny processor's working size (12 × 12 patches), as in the control tasks


def ablations_on_control(out: Path, *, plan: DemoPlan, backbone: Path, seed: int = 0) -> dict[str, Any]:
    """Train each variant (stage 1, then stage 2 from it) and score it with the eval harness on the control.

    Detection is scored on the stage-1 checkpoint and change on the stage-2 one: stage 2 freezes the
    anomaly module but keeps training the LoRA adapters, so it changes the detection answers too, and
    each switch is meant to be read off the stage that trains what it switches. Each variant's stage 2
    ends with the choice calibration of the main recipe, so that the variants are compared by how they
    rank the pairs, not by where their options' scores happen to sit. The Table-4-shaped rows
    (``ablations/eval/ablation.md``) are built by :mod:`medic_ad.eval.ablations`.
    """
    from medic_ad.eval.ablations import write_ablation_report
    from medic_ad.eval.models import resolve_models
    from medic_ad.training import load_config, train

    common = {"tensorboard": False, "progress": False, "seed": seed, "checkpoint_every": 0}
    optim = {"lr": 3.0e-3, "max_steps": plan.ablation_steps, "batch_size": plan.batch_size, "warmup_steps": 10}
    stage1, stage2 = [], []
    for name, (slug, switch) in ABLATION_VARIANTS.items():
        print(f"[demo] ablation {name}: stages 1 and 2", flush=True)
        s1 = train(load_config(base={
            "stage": 1, "input_checkpoint": str(backbone), "output_dir": str(out / slug / "stage1"),
            "model": {**ABLATION_MODEL, **switch}, "optim": optim, **common,
            "data": [{"name": "synthetic", "task": "detection",
                      "options": {"kind": "detection", "n": 1024, "seed": 1, "size": CONTROL_SIZE}}],
        }))
        s2 = train(load_config(base={
            "stage": 2, "input_checkpoint": str(s1.output), "output_dir": str(out / slug / "stage2"),
            "optim": {**optim, "lr": 1.0e-3, "max_steps": plan.ablation_change_steps},
            "calibration": plan.calibration, **common,
            "data": [{"name": "synthetic", "task": "change",
                      "options": {"kind": "pairs", "n": 1024, "seed": 2, "size": CONTROL_SIZE}}],
        }))
        stage1.append(f"{slug}={s1.output}")
        stage2.append(f"{slug}={s2.output}")
    n = plan.ablation_eval
    detection = control_task("control_detection", n, seed + 1)
    change = control_task("control_change", n, seed + 1)
    print("[demo] ablations: evaluating", flush=True)
    m1, m2 = resolve_models(stage1), resolve_models(stage2)
    r1 = _evaluate(m1, [detection], out / "eval" / "stage1", data_dir=None, title="MEDIC-AD demo ablations: stage 1")
    r2 = _evaluate(m2, [change], out / "eval" / "stage2", data_dir=None, title="MEDIC-AD demo ablations: stage 2")
    # same model names in both runs: one results dict with detection from stage 1 and change from stage 2
    merged = {"tasks": {**r1["tasks"], **r2["tasks"]}, "results": {**r1["results"], **r2["results"]}}
    table = write_ablation_report(merged, m2, out / "eval", reference="full", published=False)
    rows = {r["model"]: r for r in table["rows"]}
    return {name: {"detection": _metrics(r1, detection.name, slug), "change": _metrics(r2, change.name, slug),
                   "variant": rows[slug]["variant"], "switches": rows[slug]["switches"]}
            for name, (slug, _) in ABLATION_VARIANTS.items()}


def _start_comparison(out: Path, plan: DemoPlan, data_dir: Path, seed: int, stage0: Path) -> dict[str, Any]:
    """Stage 1 (same steps, same data) from the frozen *random* tiny backbone and from the stage-0
    backbone, both scored on the Br35H validation split: what stage 0 buys (design doc §5)."""
    from medic_ad.eval.models import resolve_models
    from medic_ad.models.qwen2_5_vl.backbone import Backbone
    from medic_ad.models.qwen2_5_vl.tiny import TinyBackboneConfig, build_tiny_qwen2_5_vl
    from medic_ad.training import train

    s0cfg = _stage_config("stage0_pretrain", out / "stages", 1, plan.batch_size, data_dir, True)
    sizes = {k: v for k, v in s0cfg.model.items() if k not in ("mask_ratio", "paste_prob")}
    model, processor = build_tiny_qwen2_5_vl(TinyBackboneConfig(**sizes), seed=seed)
    random_dir = out / "comparison" / "random_backbone"
    Backbone(model=model, processor=processor, source="tiny").save_pretrained(random_dir)
    trained = []
    for name, backbone in (("random_start", random_dir), ("stage0_start", stage0)):
        cfg = _stage_config("stage1_anomaly", out / "comparison" / name, plan.comparison_steps, plan.batch_size,
                            data_dir, True, input_checkpoint=str(backbone), seed=seed)
        print(f"[demo] comparison: stage 1 from the {name.replace('_', ' ')}", flush=True)
        trained.append(f"{name}={train(cfg).output}")
    br35h = next(task for kind, data, task in demo_tasks(plan, seed=seed) if data == "br35h_val")
    results = _evaluate(resolve_models(trained), [br35h], out / "comparison" / "eval", data_dir=data_dir,
                        title="MEDIC-AD demo: stage 1 from the random vs the stage-0 backbone")
    comparison: dict[str, Any] = {name: _metrics(results, br35h.name, name)
                                  for name in ("random_start", "stage0_start")}
    comparison["steps"] = plan.comparison_steps
    return comparison


# ---------------------------------------------------------------------------------------------- overlays and report


def render_overlays(checkpoint: Path, out: Path, *, data_dir: Path | None, seed: int = 0, n: int = 4) -> list[str]:
    """Heatmap overlays (image | heatmap over image | lesion-mask outline) of ``n`` grounding samples:
    Br35H-mask val cases with the shared data, control cases without."""
    from medic_ad.data.io import load_image_any, load_mask
    from medic_ad.eval.samples import load_task_samples
    from medic_ad.eval.tasks import get_task
    from medic_ad.models.medic_ad import MedicAD
    from medic_ad.serve.overlay import overlay_png

    task = get_task("br35h_masks") if data_dir is not None else control_task("control_grounding", n, seed)
    samples = load_task_samples(task, data_root=data_dir, limit=n).samples
    what = "Br35H-mask validation case" if data_dir is not None else "held-out control case"
    model = MedicAD.from_pretrained(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, sample in enumerate(samples):
        image = load_image_any(sample.images[0])
        mask = load_mask(sample.masks[0], size=image.pixels.shape[:2])
        path = out / f"case_{i}.png"
        path.write_bytes(overlay_png(image, model.explain(image).heatmap, alpha=0.45, title=f"{what} {i}", mask=mask))
        written.append(str(path))
    return written


def _fmt(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def write_report(path: Path, metrics: dict[str, Any], overlays: list[str]) -> None:
    """The demo's ``report.md`` from its metrics (the scored eval results): targets first."""
    lines = ["# MEDIC-AD demo report", "",
             "Tiny offline backbone (the shipped stage-0 backbone → stages 1–3); every number below was computed "
             "by this run on data held back from training, predictions first (`eval/predictions/`) and scores "
             "second (`eval/results.json`, `eval/report.md`). See `metrics.json` for all fields.", ""]
    backbone = metrics.get("backbone") or {}
    if backbone.get("weights_sha256"):
        lines += [f"Backbone: `{backbone['path']}` (weights SHA-256 `{backbone['weights_sha256'][:16]}…`, "
                  f"{backbone.get('steps')} stage-0 steps; its `MANIFEST.json` has the command that rebuilds it).", ""]
    for c in metrics.get("collapsed", []):
        lines += [f"> **WARNING: the change answers collapsed on {c['data']}**: {c['share']:.0%} of a balanced "
                  f"set was answered {c['answer']!r} (more than 80 %). Its accuracy is not evidence that compare "
                  "works.", ""]
    if "targets" in metrics:
        lines += ["## Targets", "", "| target | goal | measured | |", "|---|---|---|---|"]
        for t in metrics["targets"]:
            verdict = {True: "met", False: "missed", None: "not measured (no data)"}[t["met"]]
            lines.append(f"| {t['target']} | {t.get('op', '≥')} {t['goal']:.2f} | {_fmt(t['value'])} | {verdict} |")
        lines.append("")
    lines += ["## Detection (\"Is there any abnormality in this image?\")", "",
              "| data | n | precision | recall | F1 | AUROC | majority-class F1 | unparseable |",
              "|---|---|---|---|---|---|---|---|"]
    for name, m in metrics["detection"].items():
        lines.append(f"| {name} | {m['n']} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | {_fmt(m['f1'])} | "
                     f"{_fmt(m.get('auroc'))} | {_fmt(m.get('majority_f1'))} | {m.get('unparseable', 0)} |")
    lines += ["", "## Change (worsened / improved / no change)", "",
              "Accuracy per true class; the last column is how often each answer was given (W / I / N).", "",
              "| data | n | worsened | improved | no change | overall | answers W / I / N |",
              "|---|---|---|---|---|---|---|"]
    for name, m in metrics["change"].items():
        pc = m.get("per_class") or {}
        shares = m.get("answer_shares") or {}
        given = " / ".join(f"{shares[c]:.2f}" for c in ("worsened", "improved", "no change")) if shares else "–"
        lines.append(f"| {name} | {m['n']} | {_fmt(pc.get('worsened'))} | {_fmt(pc.get('improved'))} | "
                     f"{_fmt(pc.get('no change'))} | {_fmt(m['accuracy'])} | {given} |")
    lines += ["", "## Heatmaps vs lesion masks", "", "| data | n | pixel AUROC | mIoU |", "|---|---|---|---|"]
    for name, m in metrics["heatmap"].items():
        lines.append(f"| {name} | {m['n']} | {_fmt(m['auroc'])} | {_fmt(m['miou'])} |")
    if "ablations" in metrics:
        lines += ["", "## Ablations on the control (same run, same data, same steps)", "",
                  "Detection scored on each variant's stage-1 checkpoint, change on its stage-2 checkpoint; "
                  "Table 4 shape in `ablations/eval/ablation.md`.", "",
                  "| variant | detection F1 | AUROC | change accuracy |", "|---|---|---|---|"]
        for name, m in metrics["ablations"].items():
            lines.append(f"| {name} | {_fmt(m['detection']['f1'])} | {_fmt(m['detection'].get('auroc'))} | "
                         f"{_fmt(m['change']['accuracy'])} |")
    if "start_comparison" in metrics:
        sc = metrics["start_comparison"]
        lines += ["", "## Br35H val detection after stage 1: frozen random backbone vs stage-0 backbone", "",
                  f"Stage 1 for {sc['steps']} steps from each start, same data.", "",
                  "| start | F1 | AUROC |", "|---|---|---|",
                  f"| frozen random | {_fmt(sc['random_start']['f1'])} | {_fmt(sc['random_start'].get('auroc'))} |",
                  f"| stage 0 | {_fmt(sc['stage0_start']['f1'])} | {_fmt(sc['stage0_start'].get('auroc'))} |"]
    if overlays:
        where = "Br35H-mask validation cases" if metrics.get("data_dir") else "held-out control cases"
        lines += ["", f"## Heatmap overlays ({where})", ""]
        lines += [f"![case {i}]({Path(p).relative_to(path.parent).as_posix()})" for i, p in enumerate(overlays)]
    t = metrics.get("timings_s", {})
    lines += ["", "## Time (s)", "", " · ".join(f"{k}: {v}" for k, v in t.items()), ""]
    path.write_text("\n".join(lines))


__all__ = ["DemoPlan", "FULL", "QUICK", "ablations_on_control", "control_task", "demo_tasks", "evaluate_demo",
           "render_overlays", "run_demo", "write_report"]
