"""MEDIC-AD data layer: image readers, the sample schema, dataset adapters, splits, task
templates, the synthetic control set and constructed longitudinal pairs (see ``docs/data.md``)."""

from medic_ad.data.errors import DatasetFormatError, EmptyDatasetError, ImageReadError, LoadWarning
from medic_ad.data.pairs import ChangePairs, apply_acquisition, make_change_pairs, remove_lesion
from medic_ad.data.cxr_opacity import OpacityPairs
from medic_ad.data.io import (
    ImageMeta,
    MedicalImage,
    image_size,
    load_image_any,
    load_mask,
    read_image,
    sniff_format,
    window_from_center_width,
)
from medic_ad.data.registry import (
    DatasetAdapter,
    LoadedDataset,
    LoadReport,
    detect_format,
    get_dataset,
    list_datasets,
    load_dataset,
    register_dataset,
)
from medic_ad.data.schema import CHANGES, LABELS, Change, Label, Sample
from medic_ad.data.splits import assert_disjoint_groups, by_split, canonical_split, group_split
from medic_ad.data.summary import DatasetSummary, summarize
from medic_ad.data.synthetic import Acquisition, SyntheticControl
from medic_ad.data.templates import (
    DETECTION_PROMPT,
    ChatExample,
    change_example,
    detection_example,
    grounding_example,
    make_example,
    vqa_example,
)

__all__ = [
    "CHANGES",
    "DETECTION_PROMPT",
    "LABELS",
    "Acquisition",
    "Change",
    "ChangePairs",
    "ChatExample",
    "DatasetAdapter",
    "DatasetFormatError",
    "DatasetSummary",
    "EmptyDatasetError",
    "ImageMeta",
    "ImageReadError",
    "Label",
    "LoadReport",
    "LoadWarning",
    "LoadedDataset",
    "MedicalImage",
    "OpacityPairs",
    "Sample",
    "SyntheticControl",
    "apply_acquisition",
    "assert_disjoint_groups",
    "by_split",
    "canonical_split",
    "change_example",
    "detect_format",
    "detection_example",
    "get_dataset",
    "grounding_example",
    "image_size",
    "list_datasets",
    "load_dataset",
    "load_image_any",
    "load_mask",
    "make_change_pairs",
    "make_example",
    "read_image",
    "register_dataset",
    "remove_lesion",
    "sniff_format",
    "summarize",
    "vqa_example",
    "window_from_center_width",
]
