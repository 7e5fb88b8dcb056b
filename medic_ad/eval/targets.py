"""What ``medic-ad demo`` holds the tiny default to, checked against its scored metrics.

The metrics are the demo's ``metrics.json`` layout: ``metrics[kind][data][key]`` with kind
``detection`` / ``change`` / ``heatmap`` and data ``control`` (the held-out synthetic control,
always evaluated) or a real held-back split (``br35h_val`` ..., only with the shared data), plus
``metrics["ablations"]`` (the paper's Table 4 shape on the control). A target whose data was not
evaluated has no value and is not checked (``met`` is None).
"""

from __future__ import annotations

from typing import Any

__all__ = ["BR35H_MARGIN", "COLLAPSE_SHARE", "TARGETS", "collapsed_changes", "target_checks"]

# (what, path into the metrics, goal).
TARGETS = (
    ("detection F1, control", ("detection", "control", "f1"), 0.95),
    ("detection AUROC, control", ("detection", "control", "auroc"), 0.98),
    ("change accuracy, control", ("change", "control", "accuracy"), 0.90),
    ("change accuracy of the weakest class, control", ("change", "control", "min_class"), 0.80),
    ("change accuracy, Br35H-mask pairs (val)", ("change", "br35h_mask_pairs_val", "accuracy"), 0.75),
    ("change accuracy, CXR opacity pairs (val)", ("change", "cxr_pairs_val", "accuracy"), 0.80),
    ("heatmap mIoU, control", ("heatmap", "control", "miou"), 0.65),
    ("heatmap mIoU, Br35H masks (val)", ("heatmap", "br35h_masks_val", "miou"), 0.50),
    ("heatmap mIoU, Figshare (held-back blocks)", ("heatmap", "figshare_val", "miou"), 0.50),
    ("detection AUROC, Br35H val", ("detection", "br35h_val", "auroc"), 0.90),
)
# Br35H is also measured against its majority-class baseline: how many of its val images are abnormal
# sets what a constant answer scores.
BR35H_MARGIN = 0.15
# A change answer that takes more than this share of a balanced set's answers has collapsed.
COLLAPSE_SHARE = 0.80
# The paper's Table 4 shape: the full model beats each ablation on these (control, same run).
ABLATION_SHAPE = (("detection", "auroc"), ("change", "accuracy"))
ABLATED = ("no <Ano> modulation", "last layer only")
FULL = "full (4 layers, modulation)"


def _value(metrics: dict[str, Any], kind: str, data: str, key: str) -> float | None:
    row = metrics.get(kind, {}).get(data)
    if row is None:
        return None
    if key == "min_class":
        per_class = row.get("per_class") or {}
        return min(per_class.values()) if per_class else None
    return row.get(key)


def collapsed_changes(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Every change evaluation where one answer took more than :data:`COLLAPSE_SHARE` of the answers."""
    out = []
    for data, row in metrics.get("change", {}).items():
        shares = row.get("answer_shares") or {}
        if shares:
            answer, share = max(shares.items(), key=lambda kv: kv[1])
            if share > COLLAPSE_SHARE:
                out.append({"data": data, "answer": answer, "share": share})
    return out


def target_checks(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its goal, the measured value and whether it was met."""
    rows = []
    for name, (kind, data, key), goal in TARGETS:
        value = _value(metrics, kind, data, key)
        rows.append({"target": name, "goal": goal, "op": "≥", "value": value,
                     "met": None if value is None else value >= goal})
    br = metrics.get("detection", {}).get("br35h_val")
    margin = None if br is None else br["f1"] - br["majority_f1"]
    rows.append({"target": "detection F1 minus majority-class F1, Br35H val", "goal": BR35H_MARGIN, "op": "≥",
                 "value": margin, "met": None if margin is None else margin >= BR35H_MARGIN})
    ablations = metrics.get("ablations") or {}
    for kind, key in ABLATION_SHAPE:
        for ablated in ABLATED:
            if FULL not in ablations or ablated not in ablations:
                continue
            full, other = ablations[FULL][kind].get(key), ablations[ablated][kind].get(key)
            lead = None if full is None or other is None else full - other
            rows.append({"target": f"full model minus '{ablated}', control {kind} {key}", "goal": 0.0, "op": ">",
                         "value": lead, "met": None if lead is None else lead > 0})
    return rows
