"""The study's heatmap as a Parametric Map: one float frame per scored slice, on that slice's plane.

A Parametric Map rather than a fractional SEG because the heatmap is a quantity (the model's anomaly
evidence in [0, 1]), not a probability of belonging to a segment, and a PM stores it as 32-bit
floats without quantising. Each frame is resampled (bilinear) to its source slice's matrix, so the
frame takes that slice's position, orientation and pixel spacing, and its derivation references the
slice's SOP instance; the object's ReferencedSeriesSequence names the source series.

A series that is one multi-frame file (an enhanced CT or MR) is the source image itself: each frame
of the map takes its source frame's plane position (from the file's per-frame functional groups),
and its derivation references the file's SOP instance with that frame's ReferencedFrameNumber. A
multi-frame file that does not state each frame's position cannot be mapped (the writer says so).
"""

from __future__ import annotations

from typing import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from medic_ad.dicom_out.common import Algorithm, check_sources, object_identity, series_description
from medic_ad.serve.overlay import resize_map
from medic_ad.studies.result import StudyResult

__all__ = ["HEATMAP_LABEL", "build_heatmap_object", "frame_positions", "heatmap_frames"]

HEATMAP_LABEL = "MEDICAD_HEATMAP"  # CS, 16 characters at most


def heatmap_frames(result: StudyResult, sources: Sequence[pydicom.Dataset]) -> tuple[np.ndarray, list[pydicom.Dataset]]:
    """The heatmaps resampled to their slices' matrices, (n, Rows, Columns) float32, and those slices."""
    heat = result.heatmaps
    if heat is None:
        raise ValueError(f"study {result.study_uid} has no heatmaps")
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 3 or heat.shape[0] != len(result.slice_indices):
        raise ValueError(f"heatmaps of shape {heat.shape} do not match {len(result.slice_indices)} scored slices")
    if not np.isfinite(heat).all():
        raise ValueError("heatmaps hold NaN or infinite values")
    slices = []
    for i in result.slice_indices:
        if not 0 <= i < len(sources):
            raise ValueError(f"scored slice index {i} is outside the series' {len(sources)} slices")
        slices.append(sources[i])
    frames = np.stack([np.clip(resize_map(h, (int(ds.Rows), int(ds.Columns))), 0.0, 1.0)
                       for h, ds in zip(heat, slices)]).astype(np.float32)
    return frames, slices


def _plane_position(ds: pydicom.Dataset, frame: int) -> hd.PlanePositionSequence | None:
    """Frame ``frame`` (1-based)'s ImagePositionPatient from the per-frame (else shared) functional groups."""
    for keyword, index in (("PerFrameFunctionalGroupsSequence", frame - 1), ("SharedFunctionalGroupsSequence", 0)):
        groups = ds.get(keyword)
        if groups and index < len(groups) and groups[index].get("PlanePositionSequence"):
            position = groups[index].PlanePositionSequence[0].get("ImagePositionPatient")
            if position is not None and len(position) == 3:
                return hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, [float(v) for v in position])
    return None


def frame_positions(sources: Sequence[pydicom.Dataset], frames: Sequence[int | None]) -> list[hd.PlanePositionSequence]:
    """The plane position of each frame of a series that is one multi-frame file; ``ValueError`` (naming
    frames, never values) when the series is not one such file or a frame's position is not stated."""
    if len(frames) != len(sources) or any(f is None for f in frames) or \
            len({str(ds.SOPInstanceUID) for ds in sources}) != 1:
        raise ValueError("the series is not one multi-frame file (a map over frames of several files, or "
                         "frames and single images, is not written)")
    positions = [_plane_position(sources[0], int(f)) for f in frames]
    missing = [int(f) for f, pos in zip(frames, positions) if pos is None]
    if missing:
        raise ValueError(f"the multi-frame file states no plane position for frame {missing[0]} (no per-frame "
                         "PlanePositionSequence)")
    return positions


def build_heatmap_object(result: StudyResult, sources: Sequence[pydicom.Dataset], algorithm: Algorithm, *,
                         frames: Sequence[int | None] | None = None) -> hd.pm.ParametricMap:
    """The Parametric Map of ``result.heatmaps`` over the scored slices of ``sources``.

    ``frames``: per slice position, its frame number (1-based) in a multi-frame source, else None.
    """
    check_sources(sources, result.study_uid, result.series_uid)
    if "FrameOfReferenceUID" not in sources[0]:
        # the Parametric Map IOD requires one; projection radiographs often have none
        raise ValueError(f"series {result.series_uid} has no Frame of Reference UID: no Parametric Map can "
                         "reference it (write its SR and overlay without heatmaps)")
    pixels, slices = heatmap_frames(result, sources)
    geometry: dict = {"source_images": slices}
    if frames is not None and any(f is not None for f in frames):
        if len(frames) != len(sources):
            raise ValueError(f"{len(frames)} frame numbers for a series of {len(sources)} slices")
        scored = [frames[i] for i in result.slice_indices]
        # highdicom matches each map frame to its source frame by these positions
        geometry = {"source_images": [slices[0]], "plane_positions": frame_positions(slices, scored)}
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="anomaly",
        lut_explanation=f"{algorithm.label} anomaly heatmap",
        unit=codes.UCUM.NoUnits,
        value_range=(0.0, 1.0),
        slope=1.0,
        intercept=0.0,
    )
    return hd.pm.ParametricMap(
        **geometry,
        pixel_array=pixels,
        **object_identity(algorithm, result.series_uid, "heatmap"),
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        content_label=HEATMAP_LABEL,
        content_description=f"{algorithm.label} heatmap",
        series_description=series_description("heatmap"),
    )
