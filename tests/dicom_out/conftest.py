"""A PHI-bearing CT series and its study result, for the DICOM writers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ct_series import heatmaps_for, make_ct_series  # noqa: E402

from medic_ad.studies.result import StudyResult  # noqa: E402

@pytest.fixture
def ct_series(dicom_file):
    """Five CT slices of one study, ordered by z, carrying the PHI fields."""
    return make_ct_series(dicom_file("CT_small.dcm"), 5)


@pytest.fixture
def study_result(ct_series) -> StudyResult:
    """Slices 0, 2 and 4 scored, slice 2 the key one, with 16 x 16 heatmaps."""
    indices = [0, 2, 4]
    return StudyResult(
        study_uid=ct_series[0].StudyInstanceUID, series_uid=ct_series[0].SeriesInstanceUID, n_slices=len(ct_series),
        score=0.83, abnormal=True, key_slice_index=2, key_sop_uid=ct_series[2].SOPInstanceUID,
        answer="Yes: a hypodense lesion is visible.", slice_indices=indices, slice_scores=[0.1, 0.83, 0.4],
        heatmaps=heatmaps_for(len(indices)),
    )
