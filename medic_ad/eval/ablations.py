"""Ablations by switch: several checkpoints → the paper's Table 4 and Fig. 5 shapes.

The checkpoints come from training runs that differ in one switch of
:class:`~medic_ad.models.config.MedicADConfig` (``modulate``, ``multi_scale``, ``pool_size``,
``num_soft_prompts``, ``use_diff``, ...). Each is evaluated by the same harness on the same tasks;
its row is labelled by how its config differs from the *reference* checkpoint (the first one, or
``reference=``), or by the ``NAME=`` given on the command line.

* Table 4 shape: one row per variant with its switches, Avg F1 over the detection tasks, the
  change accuracy (MMXU or the change task given) and, when grounding tasks run, pixel AUC / mIoU.
* Fig. 5 shape: ``sensitivity_pool_size.png`` and ``sensitivity_num_soft_prompts.png`` — the
  metrics against the switch's value, over the reference and the variants that differ from it in
  that switch only (drawn when at least two values exist).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medic_ad.eval import published as P
from medic_ad.eval.models import EvalModel

__all__ = ["SWITCHES", "ablation_rows", "ablation_markdown", "describe_variant", "write_ablation_report"]

#: switch → (column title, how a value reads in a row label)
SWITCHES: dict[str, tuple[str, Any]] = {
    "modulate": ("<Ano> modulation", lambda v: "with <Ano> modulation" if v else "w/o <Ano> modulation"),
    "multi_scale": ("features", lambda v: "multi-scale features" if v else "last-layer features"),
    "pool_size": ("pooling", lambda v: f"pooling {v}×{v}"),
    "num_soft_prompts": ("soft prompts", lambda v: f"{v} soft prompts"),
    "use_diff": ("<Diff>", lambda v: "with <Diff>" if v else "w/o <Diff>"),
}
SENSITIVITY = ("pool_size", "num_soft_prompts")
_IGNORED = {"lora_targets"}


def _config(model: EvalModel) -> dict[str, Any]:
    cfg = model.describe().get("config")
    if not isinstance(cfg, dict):
        raise ValueError(f"{model.path}: an ablation needs MEDIC-AD checkpoints (this one has no config)")
    return cfg


def describe_variant(config: dict[str, Any], reference: dict[str, Any]) -> str:
    """"w/o <Ano> modulation", "pooling 2×2, 4 soft prompts", or "reference" when nothing differs."""
    parts = []
    for key in sorted(set(config) | set(reference)):
        if key in _IGNORED or config.get(key) == reference.get(key):
            continue
        value = config.get(key)
        parts.append(SWITCHES[key][1](value) if key in SWITCHES else f"{key}={value}")
    return ", ".join(parts) if parts else "reference"


def _switch_cell(key: str, value: Any) -> str:
    if key == "modulate":
        return "✓" if value else "✗"
    if key == "multi_scale":
        return "4 layers" if value else "last layer"
    if key == "pool_size":
        return f"{value}×{value}"
    if key == "use_diff":
        return "✓" if value else "✗"
    return str(value)


def ablation_rows(results: dict[str, Any], models: list[EvalModel], *,
                  reference: str | None = None) -> list[dict[str, Any]]:
    """One row per checkpoint: its switches, its label, and its summary metrics."""
    configs = {m.name: _config(m) for m in models}
    ref = reference or models[0].name
    if ref not in configs:
        raise ValueError(f"--reference {ref!r} is not one of the models ({', '.join(configs)})")
    kinds = {t: info["kind"] for t, info in results["tasks"].items()}
    rows = []
    for m in models:
        cfg = configs[m.name]
        label = describe_variant(cfg, configs[ref])
        if label == "reference" and m.name != ref:
            label = "same switches as the reference"
        row: dict[str, Any] = {"model": m.name, "variant": label, "reference": m.name == ref,
                               "switches": {k: cfg.get(k) for k in SWITCHES}}
        per_kind: dict[str, list[dict[str, Any]]] = {}
        for task, per_model in results["results"].items():
            if m.name in per_model:
                per_kind.setdefault(kinds[task], []).append(per_model[m.name])
        det = per_kind.get("detection", [])
        row["avg_f1"] = sum(r["f1"] for r in det) / len(det) if det else None
        aucs = [r["auroc"] for r in det if r.get("auroc") is not None]
        row["avg_auroc"] = sum(aucs) / len(aucs) if aucs else None
        ch = per_kind.get("change", [])
        row["change_accuracy"] = sum(r["accuracy"] for r in ch) / len(ch) if ch else None
        gr = per_kind.get("grounding", [])
        gr_auc = [r["auroc"] for r in gr if r.get("auroc") is not None]
        row["pixel_auroc"] = sum(gr_auc) / len(gr_auc) if gr_auc else None
        row["miou"] = sum(r["miou"] for r in gr) / len(gr) if gr else None
        rows.append(row)
    return rows


def ablation_markdown(rows: list[dict[str, Any]], *, tasks: dict[str, list[str]], published: bool = True) -> str:
    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}"

    def acc(v):
        return "–" if v is None else f"{v:.3f}"

    has_ground = any(r["miou"] is not None for r in rows)
    head = ["variant", "model", *(SWITCHES[k][0] for k in SWITCHES), "Avg F1", "Avg AUROC", "change acc"]
    if has_ground:
        head += ["pixel AUC", "mIoU"]
    lines = ["# Ablations (Table 4 shape)", ""]
    lines += [f"Detection tasks (Avg F1, Avg AUROC of P(Yes)): {', '.join(tasks.get('detection', [])) or '–'}; "
              f"change: {', '.join(tasks.get('change', [])) or '–'}"
              + (f"; grounding: {', '.join(tasks.get('grounding', []))}" if has_ground else "") + ".", ""]
    lines += ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] * len(head)) + " |"]
    for r in rows:
        cells = [r["variant"], r["model"]]
        cells += [_switch_cell(k, r["switches"].get(k)) for k in SWITCHES]
        cells += [pct(r["avg_f1"]), pct(r["avg_auroc"]), acc(r["change_accuracy"])]
        if has_ground:
            cells += [pct(r["pixel_auroc"]), pct(r["miou"])]
        lines.append("| " + " | ".join(cells) + " |")
    if published:
        lines += ["", "Published ablations (full benchmarks, 7B; design doc §4):", "",
                  "| variant | Avg F1 | MMXU |", "| --- | --- | --- |"]
        for p in P.ABLATIONS:
            lines.append(f"| {p['variant']} *(published)* | {'–' if p['avg_f1'] is None else p['avg_f1']} | "
                         f"{p['mmxu']:.3f} |")
    lines.append("")
    return "\n".join(lines)


def plot_sensitivity(rows: list[dict[str, Any]], switch: str, path: Path) -> Path | None:
    """Fig. 5 shape: metrics against one switch, over the reference and the variants differing only there."""
    ref = next(r for r in rows if r["reference"])
    others = [k for k in SWITCHES if k != switch]
    points = sorted(((r["switches"][switch], r) for r in rows
                     if all(r["switches"].get(k) == ref["switches"].get(k) for k in others)),
                    key=lambda p: p[0])
    if len({v for v, _ in points}) < 2:
        return None
    from medic_ad.eval.report import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.4, 3.4), dpi=120)
    xs = [v for v, _ in points]
    for key, label in (("avg_f1", "Avg F1"), ("avg_auroc", "Avg AUROC"), ("change_accuracy", "change acc"),
                       ("miou", "mIoU")):
        ys = [r[key] for _, r in points]
        if all(y is not None for y in ys):
            ax.plot(xs, ys, marker="o", label=label)
    ax.set(xlabel=SWITCHES[switch][0] + (" (side)" if switch == "pool_size" else ""), ylabel="metric",
           title=f"Sensitivity: {SWITCHES[switch][0]}", ylim=(0, 1.02))
    ax.set_xticks(xs)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_ablation_report(results: dict[str, Any], models: list[EvalModel], out_dir: str | Path, *,
                          reference: str | None = None, published: bool = True) -> dict[str, Any]:
    """``ablation.md``, ``ablation.json`` and the sensitivity PNGs; returns the rows and file paths."""
    import json

    out_dir = Path(out_dir)
    rows = ablation_rows(results, models, reference=reference)
    tasks: dict[str, list[str]] = {}
    for t, info in results["tasks"].items():
        if t in results["results"]:
            tasks.setdefault(info["kind"], []).append(t)
    figures = [p for s in SENSITIVITY if (p := plot_sensitivity(rows, s, out_dir / "figures" / f"sensitivity_{s}.png"))]
    md = ablation_markdown(rows, tasks=tasks, published=published)
    if figures:
        md += "\n## Sensitivity (Fig. 5 shape)\n\n" + "\n".join(
            f"![{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in figures) + "\n"
    (out_dir / "ablation.md").write_text(md)
    payload = {"rows": rows, "tasks": tasks, "figures": [str(p) for p in figures]}
    (out_dir / "ablation.json").write_text(json.dumps(payload, indent=2))
    return {**payload, "markdown": str(out_dir / "ablation.md")}
