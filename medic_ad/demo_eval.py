"""Evaluation, ablations, overlays and the report of ``medic-ad demo``.

Every number in the report is computed here from predictions on held-back data: the Br35H ``val``
split (group-wise), Br35H-mask ``val`` images and pairs built from them, and a synthetic control
drawn with a seed the training never used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medic_ad.eval.metrics import change_metrics, detection_metrics, pixel_metrics

CONTROL_SEED = 10_007  # held-out control: never a training seed
CONTROL_SIZE = 168  # the tiny processor's working size (12 × 12 patches)


def _subsample(samples: list, n: int) -> list:
    """Every k-th sample so that about ``n`` remain (0: all), keeping both classes in order."""
    if not n or len(samples) <= n:
        return list(samples)
    idx = np.linspace(0, len(samples) - 1, n).round().astype(int)
    return [samples[i] for i in idx]


def eval_detection(model, samples: list, *, batch_size: int = 16) -> dict[str, Any]:
    results = model.detect([s.images[0] for s in samples], max_new_tokens=1, batch_size=batch_size)
    y_true = [s.label for s in samples]
    return detection_metrics(y_true, [r.abnormal for r in results], [r.score for r in results])


def eval_change(model, samples: list, *, batch_size: int = 16) -> dict[str, Any]:
    results = model.compare([s.images[0] for s in samples], [s.images[1] for s in samples], max_new_tokens=1,
                            batch_size=batch_size)
    return change_metrics([s.change for s in samples], [r.label for r in results])


def eval_heatmaps(model, samples: list, *, batch_size: int = 16) -> dict[str, Any]:
    from medic_ad.data.io import load_image_any, load_mask

    heats, masks = [], []
    for start in range(0, len(samples), batch_size):
        images = [load_image_any(s.images[0]) for s in samples[start:start + batch_size]]
        heats += model.explain(images, batch_size=batch_size)
        masks += [load_mask(s.masks[0], size=im.pixels.shape[:2]) for s, im in zip(samples[start:start + batch_size], images)]
    return pixel_metrics(heats, masks)


def detection_metrics_for(model, *, data_dir: Path, plan) -> dict[str, Any]:
    from medic_ad.data.registry import get_dataset

    val = get_dataset("image_folder").load(data_dir / "br35h", split="val")
    return eval_detection(model, _subsample(list(val), plan.eval_real))


def evaluate_all(model, *, data_dir: Path | None, plan, seed: int = 0) -> dict[str, Any]:
    """Detection, change and heatmap metrics on real held-back data and on the control."""
    from medic_ad.data.pairs import ChangePairs
    from medic_ad.data.registry import get_dataset
    from medic_ad.data.synthetic import SyntheticControl

    control = SyntheticControl(size=CONTROL_SIZE, seed=CONTROL_SEED + seed)
    n = plan.eval_control
    metrics: dict[str, Any] = {"detection": {}, "change": {}, "heatmap": {}}
    print("[demo] evaluating on the held-out control", flush=True)
    metrics["detection"]["control"] = eval_detection(model, control.detection(n))
    metrics["change"]["control"] = eval_change(model, control.pairs(n))
    metrics["heatmap"]["control"] = eval_heatmaps(model, control.segmentation(max(8, n // 2)))
    if data_dir is not None:
        print("[demo] evaluating on the real held-back splits", flush=True)
        metrics["detection"]["br35h_val"] = detection_metrics_for(model, data_dir=data_dir, plan=plan)
        masked_val = list(get_dataset("image_mask").load(data_dir / "br35h_masks", split="val"))
        pairs = ChangePairs(_subsample(masked_val, plan.eval_real // 3 if plan.eval_real else 0),
                            seed=CONTROL_SEED, strength=(0.8, 1.0), validate=False)
        metrics["change"]["br35h_mask_pairs_val"] = eval_change(model, list(pairs))
        metrics["heatmap"]["br35h_masks_val"] = eval_heatmaps(model, _subsample(masked_val, plan.eval_real))
    return metrics


def ablations_on_control(out: Path, *, plan, backbone: Path, seed: int = 0) -> dict[str, Any]:
    """The paper's ablations, trained and scored side by side on the control in one run:
    ``<Ano>`` modulation on/off and 4 tapped layers vs the last layer only (stages 1 and 2)."""
    from medic_ad.data.synthetic import SyntheticControl
    from medic_ad.models.medic_ad import MedicAD
    from medic_ad.training import load_config, train

    variants = {"full (4 layers, modulation)": {}, "no <Ano> modulation": {"modulate": False},
                "last layer only": {"multi_scale": False}}
    base_model = {"anomaly_dim": 64, "qformer_dim": 64, "qformer_layers": 1, "heatmap_dim": 32, "lora_r": 8,
                  "lora_alpha": 16, "feature_layers": [0, 1, 2, 3]}
    control = SyntheticControl(size=CONTROL_SIZE, seed=CONTROL_SEED + 1 + seed)
    det_eval, pair_eval = control.detection(plan.ablation_eval), control.pairs(plan.ablation_eval)
    results = {}
    for name, switch in variants.items():
        slug = name.split(" ")[0] if not switch else "_".join(f"{k}-{v}" for k, v in switch.items())
        common = {"tensorboard": False, "progress": False, "seed": seed, "checkpoint_every": 0}
        optim = {"lr": 3.0e-3, "max_steps": plan.ablation_steps, "batch_size": plan.batch_size, "warmup_steps": 10}
        s1 = train(load_config(base={
            "stage": 1, "input_checkpoint": str(backbone), "output_dir": str(out / slug / "stage1"),
            "model": {**base_model, **switch}, "optim": optim, **common,
            "data": [{"name": "synthetic", "task": "detection", "options": {"kind": "detection", "n": 1024, "seed": 1, "size": CONTROL_SIZE}}],
        }))
        s2 = train(load_config(base={
            "stage": 2, "input_checkpoint": str(s1.output), "output_dir": str(out / slug / "stage2"),
            "optim": {**optim, "lr": 1.0e-3, "max_steps": plan.ablation_change_steps}, **common,
            "data": [{"name": "synthetic", "task": "change", "options": {"kind": "pairs", "n": 1024, "seed": 2, "size": CONTROL_SIZE}}],
        }))
        print(f"[demo] ablation {name}: evaluating", flush=True)
        m1, m2 = MedicAD.from_pretrained(s1.output), MedicAD.from_pretrained(s2.output)
        results[name] = {"detection": eval_detection(m1, det_eval), "change": eval_change(m2, pair_eval)}
    return results


def render_overlays(model, out: Path, *, data_dir: Path | None, n: int = 4) -> list[str]:
    """Heatmap overlays (image | heatmap over image | ground-truth outline) for a few real cases."""
    from PIL import Image, ImageDraw

    from medic_ad.data.io import load_image_any, load_mask
    from medic_ad.data.registry import get_dataset
    from medic_ad.data.synthetic import SyntheticControl

    out.mkdir(parents=True, exist_ok=True)
    if data_dir is not None:
        samples = _subsample(list(get_dataset("image_mask").load(data_dir / "br35h_masks", split="val")), n)
    else:
        samples = SyntheticControl(size=CONTROL_SIZE, seed=CONTROL_SEED).segmentation(n)
    written = []
    for i, s in enumerate(samples):
        image = load_image_any(s.images[0])
        heat = model.explain(image)
        mask = load_mask(s.masks[0], size=image.pixels.shape[:2])
        base = image.to_pil().convert("RGB")
        colour = _jet(heat)
        blend = Image.blend(base, colour, 0.45)
        outline = base.copy()
        edge = mask.astype(bool) & ~_erode(mask.astype(bool))
        arr = np.asarray(outline).copy()
        arr[edge] = (0, 255, 0)
        panel = Image.new("RGB", (base.width * 3, base.height + 18), "white")
        for j, im in enumerate((base, blend, Image.fromarray(arr))):
            panel.paste(im, (j * base.width, 18))
        draw = ImageDraw.Draw(panel)
        for j, label in enumerate(("image", "MEDIC-AD heatmap", "lesion mask (green)")):
            draw.text((j * base.width + 4, 3), label, fill="black")
        path = out / f"case_{i}.png"
        panel.save(path)
        written.append(str(path))
    return written


def _erode(mask: np.ndarray) -> np.ndarray:
    m = np.pad(mask, 1)
    return m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]


def _jet(heat: np.ndarray):
    from matplotlib import colormaps
    from PIL import Image

    rgba = colormaps["jet"](np.clip(heat, 0, 1))
    return Image.fromarray((rgba[..., :3] * 255).astype(np.uint8))


# What the demo is held to on the tiny default: (what, path into the metrics, goal). Br35H is measured
# against its majority-class baseline rather than an absolute number.
TARGETS = (
    ("detection F1, control", ("detection", "control", "f1"), 0.95),
    ("change accuracy, control", ("change", "control", "accuracy"), 0.90),
    ("heatmap mIoU, control", ("heatmap", "control", "miou"), 0.60),
)
BR35H_MARGIN = 0.10  # Br35H val detection F1 at least this far above the majority-class F1


def target_checks(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its goal, the measured value and whether it was met. The control is always
    evaluated; Br35H only with the shared data (else its row has no value and is not checked)."""
    rows = []
    for name, (kind, data, key), goal in TARGETS:
        value = metrics[kind][data][key]
        rows.append({"target": name, "goal": goal, "value": value, "met": value >= goal})
    br = metrics["detection"].get("br35h_val")
    margin = None if br is None else br["f1"] - br["majority_f1"]
    rows.append({"target": "detection F1 minus majority-class F1, Br35H val", "goal": BR35H_MARGIN,
                 "value": margin, "met": None if margin is None else margin >= BR35H_MARGIN})
    return rows


def _fmt(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def write_report(path: Path, metrics: dict[str, Any], overlays: list[str]) -> None:
    lines = ["# MEDIC-AD demo report", "",
             "Tiny offline backbone (random init → stage 0 → stages 1–3); every number below was computed by "
             "this run on data held back from training. See `metrics.json` for all fields.", ""]
    if "targets" in metrics:
        lines += ["## Targets", "", "| target | goal | measured | |", "|---|---|---|---|"]
        for t in metrics["targets"]:
            verdict = {True: "met", False: "missed", None: "not measured (no data)"}[t["met"]]
            lines.append(f"| {t['target']} | ≥ {t['goal']:.2f} | {_fmt(t['value'])} | {verdict} |")
        lines.append("")
    lines += ["## Detection (\"Is there any abnormality in this image?\")", "",
              "| data | n | precision | recall | F1 | AUROC | majority-class F1 | unparseable |",
              "|---|---|---|---|---|---|---|---|"]
    for name, m in metrics["detection"].items():
        lines.append(f"| {name} | {m['n']} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | {_fmt(m['f1'])} | "
                     f"{_fmt(m.get('auroc'))} | {_fmt(m.get('majority_f1'))} | {m.get('unparseable', 0)} |")
    lines += ["", "## Change (worsened / improved / no change)", "",
              "| data | n | worsened | improved | no change | overall |", "|---|---|---|---|---|---|"]
    for name, m in metrics["change"].items():
        pc = m["per_class"]
        lines.append(f"| {name} | {m['n']} | {_fmt(pc.get('worsened'))} | {_fmt(pc.get('improved'))} | "
                     f"{_fmt(pc.get('no change'))} | {_fmt(m['accuracy'])} |")
    lines += ["", "## Heatmaps vs lesion masks", "", "| data | n | pixel AUROC | mIoU |", "|---|---|---|---|"]
    for name, m in metrics["heatmap"].items():
        lines.append(f"| {name} | {m['n']} | {_fmt(m['auroc'])} | {_fmt(m['miou'])} |")
    if "ablations" in metrics:
        lines += ["", "## Ablations on the control (same run, same data, same steps)", "",
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
        lines += ["", "## Heatmap overlays (Br35H-mask validation cases)", ""]
        lines += [f"![case {i}]({Path(p).relative_to(path.parent).as_posix()})" for i, p in enumerate(overlays)]
    t = metrics.get("timings_s", {})
    lines += ["", "## Time (s)", "", " · ".join(f"{k}: {v}" for k, v in t.items()), ""]
    path.write_text("\n".join(lines))


__all__ = ["TARGETS", "target_checks", "evaluate_all", "ablations_on_control", "render_overlays", "write_report", "detection_metrics_for"]

