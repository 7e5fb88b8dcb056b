"""The paper's published numbers (design doc §4), shown as rows marked "(published)" beside ours.

They come from the full benchmarks and 7–13B models; the shared folders hold dev samples only, so
they frame our rows and are never a like-for-like comparison.
"""

from __future__ import annotations

__all__ = ["ABLATIONS", "DETECTION_F1", "GROUNDING", "GROUNDING_DATASETS", "MMXU", "SOURCE"]

SOURCE = "MEDIC-AD paper (CVPR submission 22318), as summarised in docs/design MEDIC-AD.md §4"

#: Table 1, F1 (%) per dataset; keys are our task names (+ "avg" as the paper states it).
DETECTION_F1: dict[str, dict[str, float]] = {
    "Qwen2.5-VL-7B": {"brain_mri": 83.6, "head_ct": 76.3, "br35h": 78.0, "covid_cxr": 85.9, "avg": 81.0},
    "GPT-4o": {"brain_mri": 74.1, "head_ct": 65.5, "br35h": 65.6, "covid_cxr": 44.4, "avg": 62.4},
    "AnomalyGPT-13B": {"brain_mri": 74.8, "head_ct": 66.7, "br35h": 61.6, "covid_cxr": 42.5, "avg": 61.4},
    "Citrus-V-8B": {"brain_mri": 90.2, "head_ct": 88.1, "br35h": 87.6, "covid_cxr": 70.9, "avg": 84.2},
    "Lingshu-7B": {"brain_mri": 88.4, "head_ct": 92.8, "br35h": 89.5, "covid_cxr": 84.2, "avg": 88.7},
    "MEDIC-AD-7B": {"brain_mri": 92.0, "head_ct": 95.5, "br35h": 90.2, "covid_cxr": 88.5, "avg": 91.6},
}

#: MMXU accuracy: per class where published, overall always.
MMXU: dict[str, dict[str, float]] = {
    "MEDIC-AD-7B": {"worsened": 0.663, "improved": 0.714, "no change": 0.588, "overall": 0.655},
    "Lingshu-7B": {"overall": 0.620},
    "GPT-4o": {"overall": 0.571},
    "Citrus-V-8B": {"overall": 0.571},
}

#: Visual explainability: (pixel AUC %, mIoU %) on the paper's datasets (not in the shared folders).
GROUNDING_DATASETS = ("BraTS2021", "RESC", "BTCV+LiTS", "ChestX-Det")
GROUNDING: dict[str, dict[str, tuple[float, float]]] = {
    "MEDIC-AD-7B": {"BraTS2021": (99.8, 87.6), "RESC": (100.0, 97.2), "BTCV+LiTS": (97.2, 83.6),
                    "ChestX-Det": (99.8, 79.8)},
    "Citrus-V-8B": {"BraTS2021": (98.8, 32.6), "RESC": (87.6, 2.1), "BTCV+LiTS": (82.1, 1.7),
                    "ChestX-Det": (98.0, 12.4)},
}

#: Ablations as the design doc states them: (Avg F1 %, MMXU overall) pairs.
ABLATIONS: list[dict[str, object]] = [
    {"variant": "multi-scale features (4 layers)", "avg_f1": 91.6, "mmxu": 0.635},
    {"variant": "last-layer features only", "avg_f1": 90.9, "mmxu": 0.619},
    {"variant": "<Diff> with <Ano> modulation", "avg_f1": None, "mmxu": 0.655},
    {"variant": "<Diff> without <Ano> modulation", "avg_f1": None, "mmxu": 0.635},
    {"variant": "pooling 4×4, 10 soft prompts (best in the sensitivity study)", "avg_f1": 91.6, "mmxu": 0.655},
]
