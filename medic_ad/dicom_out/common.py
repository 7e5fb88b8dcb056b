"""What every object medic-ad writes shares: who made it, how its UIDs are chosen, what a source must hold.

UIDs are derived from the source series, the checkpoint digest and the object's kind, so writing a
study twice with one checkpoint gives the same SOP Instance UIDs: a rerun replaces its objects in a
PACS instead of adding copies.

Error messages here name a position in the series or an attribute keyword, never an attribute value
(the sources carry patient fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pydicom
from pydicom.uid import generate_uid

__all__ = ["MANUFACTURER", "RESEARCH_ONLY", "SERIES_NUMBERS", "Algorithm", "check_sources", "derived_uid",
           "object_identity", "referenced_frames", "series_description"]

MANUFACTURER = "medic-ad"
RESEARCH_ONLY = "research use only"
#: series numbers of the objects in their study, far above any scanner's so they sort after the images
SERIES_NUMBERS = {"sr": 9901, "heatmap": 9902, "overlay": 9903, "comparison": 9904}

# attributes a writer reads from every source slice
_REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality")


@dataclass(frozen=True)
class Algorithm:
    """The model that produced a result, as every object names it."""

    name: str
    version: str
    checkpoint_digest: str

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


def derived_uid(algorithm: Algorithm, series_uid: str, kind: str) -> str:
    """A UID fixed by the source series, the checkpoint and the kind of object (``sr``, ``heatmap``, ...)."""
    return generate_uid(entropy_srcs=["medic-ad", algorithm.checkpoint_digest, series_uid, kind])


def object_identity(algorithm: Algorithm, key: str, kind: str) -> dict[str, object]:
    """The arguments every highdicom object takes alike: its series and SOP Instance UIDs (derived from
    ``key``, the source series or pair, and ``kind``), its series number, and the device that made it."""
    return {"series_instance_uid": derived_uid(algorithm, key, f"{kind}-series"),
            "series_number": SERIES_NUMBERS[kind],
            "sop_instance_uid": derived_uid(algorithm, key, kind),
            "instance_number": 1,
            "manufacturer": MANUFACTURER,
            "manufacturer_model_name": algorithm.label,
            "software_versions": algorithm.version,
            # DeviceSerialNumber is LO (64 characters); the whole digest is in the SR's algorithm context
            "device_serial_number": algorithm.checkpoint_digest[:64]}


def referenced_frames(ds: pydicom.Dataset, frame: int | None) -> list[int] | None:
    """``[frame]`` (1-based) to reference one frame of ``ds``, or None to reference the whole instance.

    Only an IOD that has frames (enhanced CT / MR, ...) can have one referenced: a file that carries
    NumberOfFrames under a single-frame IOD (a legacy CT Image Storage, say) is referenced as a
    whole. highdicom refuses frame numbers by this same test, so its own helper decides.
    """
    from highdicom._standard_utils import is_multiframe_image

    return None if frame is None or not is_multiframe_image(ds) else [int(frame)]


def series_description(kind: str) -> str:
    """SeriesDescription (LO, 64 characters at most): what the object is and that it is for research only."""
    return f"MEDIC-AD {kind} - {RESEARCH_ONLY}"


def check_sources(sources: Sequence[pydicom.Dataset], study_uid: str, series_uid: str) -> None:
    """Raise ``ValueError`` unless ``sources`` is one non-empty series of the result's study."""
    if not sources:
        raise ValueError("no source slices were given")
    for i, ds in enumerate(sources):
        for keyword in _REQUIRED:
            if keyword not in ds:
                raise ValueError(f"source slice {i} has no {keyword}")
        if ds.StudyInstanceUID != study_uid or ds.SeriesInstanceUID != series_uid:
            raise ValueError(f"source slice {i} is not in the result's study {study_uid} / series {series_uid}")
