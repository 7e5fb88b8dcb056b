"""What ``medic-ad demo`` holds the tiny default to, checked against its scored metrics.

The metrics are the demo's ``metrics.json`` layout: ``metrics[kind][data][key]`` with kind
``detection`` / ``change`` / ``heatmap`` and data ``control`` (the held-out synthetic control,
always evaluated) or a real held-back split (``br35h_val`` ..., only with the shared data).
"""

from __future__ import annotations

from typing import Any

__all__ = ["BR35H_MARGIN", "TARGETS", "target_checks"]

# (what, path into the metrics, goal). Br35H is measured against its majority-class baseline rather
# than an absolute number: how many of its val images are abnormal sets what a constant answer scores.
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
