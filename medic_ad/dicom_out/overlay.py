"""The key slice with its heatmap blended over it, as a Secondary Capture image (written on request).

The picture is the one the web UI draws (``serve.overlay.blend``: inferno over grey): pixels only,
no burned-in text, so BurnedInAnnotation is NO. The grey image is the slice's modality values
through its first VOI window, or min-max when it has none.
"""

from __future__ import annotations

from typing import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

from medic_ad.data.io.transforms import min_max, voi_window
from medic_ad.dicom_out.common import (MANUFACTURER, SERIES_NUMBERS, Algorithm, check_sources, derived_uid,
                                       referenced_frames, series_description)
from medic_ad.serve.overlay import blend
from medic_ad.studies.result import StudyResult

__all__ = ["build_overlay_capture", "windowed"]


def _first(value) -> float:
    return float(value[0]) if isinstance(value, pydicom.multival.MultiValue) else float(value)


def windowed(ds: pydicom.Dataset, frame: int | None = None) -> np.ndarray:
    """The slice (frame ``frame``, 1-based, of a multi-frame file) as float32 in [0, 1]."""
    pixels = ds.pixel_array
    if frame is not None and int(ds.get("NumberOfFrames") or 1) > 1:
        pixels = pixels[int(frame) - 1]
    values = apply_modality_lut(pixels, ds)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        return voi_window(values, _first(ds.WindowCenter), _first(ds.WindowWidth))
    return min_max(values)


def build_overlay_capture(result: StudyResult, sources: Sequence[pydicom.Dataset],
                          algorithm: Algorithm, *, alpha: float = 0.5,
                          frames: Sequence[int | None] | None = None) -> hd.sc.SCImage:
    """The Secondary Capture of the key slice's heatmap over the key slice (``frames`` as for the SR)."""
    check_sources(sources, result.study_uid, result.series_uid)
    if result.heatmaps is None or result.key_slice_index not in result.slice_indices:
        raise ValueError(f"study {result.study_uid} has no heatmap of its key slice")
    key = sources[result.key_slice_index]
    key_frame = frames[result.key_slice_index] if frames is not None else None
    heat = np.asarray(result.heatmaps[result.slice_indices.index(result.key_slice_index)], dtype=np.float32)
    rgb = blend(windowed(key, key_frame), heat, alpha=alpha)
    spacing = tuple(float(v) for v in key.PixelSpacing) if "PixelSpacing" in key else None
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=key,
        pixel_array=rgb,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=derived_uid(algorithm, result.series_uid, "overlay-series"),
        series_number=SERIES_NUMBERS["overlay"],
        sop_instance_uid=derived_uid(algorithm, result.series_uid, "overlay"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        pixel_spacing=spacing,
        patient_orientation=("L", "P"),
        manufacturer_model_name=algorithm.label,
        software_versions=algorithm.version,
        series_description=series_description("overlay"),
    )
    # from_ref_dataset takes a few patient and study fields; the rest of those modules come as for the SR
    sc.copy_patient_and_study_information(key)
    sc.BurnedInAnnotation = "NO"
    sc.ImageComments = f"{algorithm.label}: heatmap over the key slice"
    # the derivation names the key slice, so a viewer can go from the picture to the image it shows
    ref = pydicom.Dataset()
    ref.ReferencedSOPClassUID = key.SOPClassUID
    ref.ReferencedSOPInstanceUID = key.SOPInstanceUID
    frame_ref = referenced_frames(key, key_frame)
    if frame_ref is not None:
        ref.ReferencedFrameNumber = frame_ref[0]
    sc.SourceImageSequence = [ref]
    return sc
