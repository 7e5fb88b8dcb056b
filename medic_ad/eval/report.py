"""Reports in the paper's shape: markdown tables (model rows × dataset columns) and PNG figures.

Everything is drawn from a *results* dict (``results.json``, see :mod:`medic_ad.eval.suite`), so
``medic-ad eval compare A.json B.json`` can put several runs side by side without any model.

* Table 1 (detection): P / R / F1 per dataset (%) and Avg F1; a second table gives AUROC of the
  P(Yes) score, the best-F1 threshold and the unparseable answers.
* Table 2 (change): accuracy per class (worsened / improved / no change) and overall, per task.
* Table 3 (grounding): pixel AUROC and mIoU (%) per dataset.
* VQA: closed-question accuracy and open-question token recall per dataset.
* Figures (matplotlib, Agg): ``roc_<task>.png`` (every model's ROC curve) and
  ``confusion_<task>_<model>.png`` (with an *unparseable* column).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from medic_ad.eval import published as P

__all__ = ["markdown_report", "merge_results", "write_report", "plot_confusion", "plot_roc"]

DASH = "–"


def _pct(v: Any) -> str:
    return DASH if v is None else f"{100 * float(v):.1f}"


def _acc(v: Any) -> str:
    return DASH if v is None else f"{float(v):.3f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _header(cells: list[str]) -> list[str]:
    return [_row(cells), _row(["---"] * len(cells))]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def default_tables(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A table per task kind, in first-seen order, when the results name no layout."""
    tables: dict[str, dict[str, Any]] = {}
    titles = {"detection": "Zero-shot anomaly detection (P / R / F1, %)",
              "change": "Change classification (accuracy per class and overall)",
              "grounding": "Visual explainability (pixel AUC / mIoU, %)", "vqa": "Medical VQA"}
    for name, info in results.get("tasks", {}).items():
        kind = info["kind"]
        tables.setdefault(kind, {"title": titles[kind], "kind": kind, "tasks": []})["tasks"].append(name)
    return tables


def _metrics(results: dict[str, Any], task: str, model: str) -> dict[str, Any] | None:
    return results.get("results", {}).get(task, {}).get(model)


def _title(results: dict[str, Any], task: str) -> str:
    info = results.get("tasks", {}).get(task, {})
    return info.get("title") or task


# ---------------------------------------------------------------------------------------------- tables


def detection_table(results: dict[str, Any], tasks: list[str], *, published: bool) -> list[str]:
    models = list(results.get("models", {}))
    head = ["model"]
    for t in tasks:
        title = _title(results, t)
        head += [f"{title} P", "R", "F1"]
    head.append("Avg F1")
    lines = _header(head)
    for m in models:
        cells, f1s = [m], []
        for t in tasks:
            r = _metrics(results, t, m)
            if r is None:
                cells += [DASH] * 3
                continue
            cells += [_pct(r["precision"]), _pct(r["recall"]), _pct(r["f1"])]
            f1s.append(r["f1"])
        avg = _pct(sum(f1s) / len(f1s)) if f1s else DASH
        if f1s and len(f1s) < len(tasks):
            avg += f" ({len(f1s)} of {len(tasks)})"
        lines.append(_row(cells + [avg]))
    if published and any(t in next(iter(P.DETECTION_F1.values())) for t in tasks):
        for name, row in P.DETECTION_F1.items():
            cells = [f"{name} *(published)*"]
            for t in tasks:
                cells += [DASH, DASH, DASH if t not in row else f"{row[t]:.1f}"]
            full = set(tasks) == {"brain_mri", "head_ct", "br35h", "covid_cxr"}
            cells.append(f"{row['avg']:.1f}" if full else DASH)
            lines.append(_row(cells))
    lines += ["", "Detection scores: AUROC of P(Yes) (one prefill), the best-F1 threshold on that score, and "
              "answers the parser could not read (counted wrong above).", ""]
    head = ["model"]
    for t in tasks:
        head += [f"{_title(results, t)} AUROC", "best-F1 thr", "unparseable"]
    lines += _header(head)
    for m in models:
        cells = [m]
        for t in tasks:
            r = _metrics(results, t, m)
            if r is None:
                cells += [DASH] * 3
            else:
                thr = DASH if r.get("best_threshold") is None else f"{r['best_threshold']:.3f}"
                cells += [_pct(r.get("auroc")), thr, f"{r.get('unparseable', 0)}/{r['n']}"]
        lines.append(_row(cells))
    return lines


def change_table(results: dict[str, Any], tasks: list[str], *, published: bool) -> list[str]:
    lines: list[str] = []
    for t in tasks:
        lines += [f"**{_title(results, t)}**", ""]
        lines += _header(["model", "worsened", "improved", "no change", "overall", "unparseable", "n"])
        for m in results.get("models", {}):
            r = _metrics(results, t, m)
            if r is None:
                lines.append(_row([m] + [DASH] * 6))
                continue
            pc = r.get("per_class") or {}
            lines.append(_row([m, _acc(pc.get("worsened")), _acc(pc.get("improved")), _acc(pc.get("no change")),
                               _acc(r.get("accuracy")), str(r.get("unparseable", 0)), str(r.get("n"))]))
        if published and t == "mmxu":
            for name, row in P.MMXU.items():
                lines.append(_row([f"{name} *(published)*", _acc(row.get("worsened")), _acc(row.get("improved")),
                                   _acc(row.get("no change")), _acc(row.get("overall")), DASH, DASH]))
        lines.append("")
    return lines


def grounding_table(results: dict[str, Any], tasks: list[str], *, published: bool) -> list[str]:
    head = ["model"]
    for t in tasks:
        head += [f"{_title(results, t)} AUC", "mIoU"]
    lines = _header(head)
    for m in results.get("models", {}):
        cells = [m]
        for t in tasks:
            r = _metrics(results, t, m)
            cells += [DASH, DASH] if r is None else [_pct(r.get("auroc")), _pct(r.get("miou"))]
        lines.append(_row(cells))
    thr = {(_metrics(results, t, m) or {}).get("threshold") for t in tasks for m in results.get("models", {})} - {None}
    lines += ["", f"mIoU at heatmap threshold {', '.join(str(v) for v in sorted(thr)) or '0.5'}, per image then "
              "averaged; pixel AUC over all pixels of the dataset (protocol: docs/eval.md)."]
    if published:
        lines += ["", "Published (the paper's datasets, which are not in the shared folders):", ""]
        head = ["model"]
        for d in P.GROUNDING_DATASETS:
            head += [f"{d} AUC", "mIoU"]
        lines += _header(head)
        for name, row in P.GROUNDING.items():
            cells = [f"{name} *(published)*"]
            for d in P.GROUNDING_DATASETS:
                cells += [f"{row[d][0]:.1f}", f"{row[d][1]:.1f}"]
            lines.append(_row(cells))
    return lines


def vqa_table(results: dict[str, Any], tasks: list[str], **_: Any) -> list[str]:
    head = ["model"]
    for t in tasks:
        head += [f"{_title(results, t)} closed acc", "open recall"]
    lines = _header(head)
    for m in results.get("models", {}):
        cells = [m]
        for t in tasks:
            r = _metrics(results, t, m)
            cells += [DASH, DASH] if r is None else [_pct(r.get("closed_accuracy")), _pct(r.get("open_recall"))]
        lines.append(_row(cells))
    return lines


_TABLES = {"detection": detection_table, "change": change_table, "grounding": grounding_table, "vqa": vqa_table}


def markdown_report(results: dict[str, Any], *, published: bool = True, figures: dict[str, list[str]] | None = None,
                    title: str | None = None) -> str:
    """The whole report as markdown (tables, data notes, skipped tasks, figure links)."""
    lines = [f"# {title or 'MEDIC-AD evaluation'}", ""]
    models = results.get("models", {})
    if models:
        lines += ["Models: " + "; ".join(f"**{n}** ({m.get('kind')}, `{m.get('path')}`)" for n, m in models.items()),
                  ""]
    tables = results.get("tables") or default_tables(results)
    for table in tables.values():
        tasks = [t for t in table["tasks"] if t in results.get("results", {})]
        lines += [f"## {table['title']}", ""]
        if not tasks:
            lines += ["No task of this table could run here (see *Skipped*).", ""]
        else:
            lines += _TABLES[table["kind"]](results, tasks, published=published)
            lines.append("")
        if published and table["kind"] == "change" and "mmxu" in table["tasks"] and "mmxu" not in tasks:
            lines += ["**MMXU** (not run here; published rows only)", ""]
            lines += _header(["model", "worsened", "improved", "no change", "overall"])
            lines += [_row([f"{name} *(published)*", _acc(row.get("worsened")), _acc(row.get("improved")),
                            _acc(row.get("no change")), _acc(row.get("overall"))]) for name, row in P.MMXU.items()]
            lines.append("")
    data_lines = []
    for name, info in results.get("tasks", {}).items():
        d = info.get("data") or {}
        if name in results.get("results", {}):
            n = {m: r.get("n") for m, r in results["results"][name].items()}
            used = ", ".join(sorted({str(v) for v in n.values()}))
            data_lines.append(f"- **{name}**: {used} sample(s) from `{d.get('root')}` ({d.get('format')}"
                              f"{', split ' + d['split'] if d.get('split') else ''})"
                              + (f"; {'; '.join(d['notes'])}" if d.get("notes") else ""))
    if data_lines:
        lines += ["## Data", ""] + data_lines + [""]
    skipped = results.get("skipped") or []
    if skipped:
        lines += ["## Skipped", ""]
        lines += [f"- **{s['task']}**{' / ' + s['model'] if s.get('model') else ''}: {s['reason']}" for s in skipped]
        lines.append("")
    if published:
        lines += ["Rows marked *(published)* are the paper's numbers on the full benchmarks with 7–13B models "
                  f"({P.SOURCE}); the shared folders hold dev samples, so they frame our rows and are not a "
                  "like-for-like comparison.", ""]
    if figures:
        lines += ["## Figures", ""]
        for name, paths in figures.items():
            lines += [f"- {name}: " + ", ".join(f"[{Path(p).name}]({p})" for p in paths)]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(curves: dict[str, dict[str, Any]], title: str, path: Path) -> Path | None:
    """ROC curves (``{model: {"fpr", "tpr", "auroc"}}``) on one plot; None when no curve exists."""
    curves = {m: c for m, c in curves.items() if c.get("fpr")}
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=120)
    for m, c in curves.items():
        auc = c.get("auroc")
        ax.plot(c["fpr"], c["tpr"], lw=1.6, label=f"{m} (AUC {auc:.3f})" if auc is not None else m)
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate (abnormal)",
           title=title)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_confusion(matrix: list[list[int]], rows: list[str], cols: list[str], title: str, path: Path) -> Path:
    """A confusion matrix with counts in the cells (true classes as rows)."""
    import numpy as np

    plt = _plt()
    a = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1.3 + 1.1 * len(cols), 1.1 + 0.9 * len(rows)), dpi=120)
    ax.imshow(a, cmap="Blues", vmin=0, vmax=max(a.max(), 1))
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            ax.text(j, i, int(a[i, j]), ha="center", va="center",
                    color="white" if a[i, j] > 0.6 * max(a.max(), 1) else "black", fontsize=9)
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    ax.title.set_fontsize(9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_figures(results: dict[str, Any], folder: Path) -> dict[str, list[str]]:
    """ROC per detection task and a confusion matrix per (task, model); paths relative to ``folder.parent``."""
    made: dict[str, list[str]] = {}
    for task, per_model in results.get("results", {}).items():
        kind = results["tasks"][task]["kind"]
        title = _title(results, task)
        paths: list[Path] = []
        if kind == "detection":
            roc = plot_roc({m: {**(r.get("roc") or {}), "auroc": r.get("auroc")} for m, r in per_model.items()},
                           f"ROC — {title}", folder / f"roc_{_safe(task)}.png")
            if roc:
                paths.append(roc)
            for m, r in per_model.items():
                c = r["confusion"]
                matrix = [[c["tp"], c["fn"] - c["unparseable_abnormal"], c["unparseable_abnormal"]],
                          [c["fp"] - c["unparseable_normal"], c["tn"], c["unparseable_normal"]]]
                paths.append(plot_confusion(matrix, ["abnormal", "normal"], ["abnormal", "normal", "unparseable"],
                                            f"{m} — {title}", folder / f"confusion_{_safe(task)}_{_safe(m)}.png"))
        elif kind == "change":
            for m, r in per_model.items():
                conf = r.get("confusion")
                if not conf:
                    continue
                classes = ["worsened", "improved", "no change"]
                matrix = [[conf[a].get(b, 0) for b in (*classes, "unparseable")] for a in classes]
                paths.append(plot_confusion(matrix, classes, [*classes, "unparseable"], f"{m} — {title}",
                                            folder / f"confusion_{_safe(task)}_{_safe(m)}.png"))
        if paths:
            made[task] = [p.relative_to(folder.parent).as_posix() for p in paths]
    return made


def write_report(results: dict[str, Any], out_dir: str | Path, *, published: bool = True,
                 title: str | None = None, stem: str = "report") -> dict[str, Path]:
    """Write ``<stem>.md``, ``results.json`` and ``figures/`` under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = write_figures(results, out_dir / "figures")
    md = out_dir / f"{stem}.md"
    md.write_text(markdown_report(results, published=published, figures=figures, title=title))
    js = out_dir / "results.json"
    _atomic_json(js, results)
    return {"markdown": md, "json": js, "figures": out_dir / "figures"}


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------- merging


def load_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: results file does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{path}: not JSON (expected a results.json written by medic-ad eval)") from None
    if not isinstance(data, dict) or not {"models", "tasks", "results"} <= set(data):
        raise ValueError(f"{path}: not a medic-ad eval results file (needs models, tasks, results)")
    return data


def merge_results(parts: list[dict[str, Any]], labels: list[str] | None = None) -> dict[str, Any]:
    """Several results dicts as one: models side by side (a clashing name gets its run's label)."""
    merged: dict[str, Any] = {"version": 1, "models": {}, "tasks": {}, "results": {}, "skipped": [], "tables": {}}
    for k, part in enumerate(parts):
        label = labels[k] if labels else f"run{k + 1}"
        rename = {}
        for m, info in part["models"].items():
            name = m if m not in merged["models"] else f"{m} ({label})"
            rename[m] = name
            merged["models"][name] = info
        for t, info in part["tasks"].items():
            merged["tasks"].setdefault(t, info)
        for t, per_model in part["results"].items():
            for m, r in per_model.items():
                merged["results"].setdefault(t, {})[rename.get(m, m)] = r
        merged["skipped"] += [dict(s, model=rename.get(s.get("model"), s.get("model")))
                              for s in part.get("skipped", [])]
        for tid, table in (part.get("tables") or {}).items():
            have = merged["tables"].setdefault(tid, {**table, "tasks": []})
            have["tasks"] += [t for t in table["tasks"] if t not in have["tasks"]]
    if not merged["tables"]:
        merged["tables"] = default_tables(merged)
    else:  # tasks no table names get their kind's default table
        named = {t for table in merged["tables"].values() for t in table["tasks"]}
        rest = {t: i for t, i in merged["tasks"].items() if t not in named}
        for tid, table in default_tables({"tasks": rest}).items():
            merged["tables"][f"extra_{tid}"] = table
    return merged
