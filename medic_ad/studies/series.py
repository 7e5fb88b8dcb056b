"""Input files to ordered series: grouping by UID from the headers, ordering by position along the slice normal.

A DICOM file's header is read with the pixel data left unread; files are grouped by
StudyInstanceUID / SeriesInstanceUID, never by their names or the order they were found in. Slices
are ordered by ImagePositionPatient projected on the slice normal (the cross product of
ImageOrientationPatient's row and column directions); where a slice lacks position or orientation
the series falls back to InstanceNumber and the series records why. A multi-frame DICOM adds one
slice per frame (ordered by its per-frame positions when the file has them). A 3-D NIfTI file is a
series of its own: its axial slices in canonical (RAS+) order, its UIDs derived from the file's
content hash so that a rerun finds it again. A PNG/JPEG/TIFF file is a one-slice series likewise.

The patient's identity is kept only as a hash, in memory, to pair a patient's studies by date;
it is never written, printed or logged.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from medic_ad.data.io import sniff_format
from medic_ad.studies.result import StudyResult

__all__ = ["Series", "SliceRef", "group_files", "uid_from_digest"]

log = logging.getLogger("medic_ad.studies")

#: the header elements a scan reads (pixel data and every other patient field stay unread)
_HEADER_TAGS = [
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality", "StudyDate", "PatientID",
    "ImagePositionPatient", "ImageOrientationPatient", "InstanceNumber", "NumberOfFrames", "Rows", "Columns",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "Manufacturer",
]
#: the Manufacturer of the objects medic-ad writes (``dicom_out``): a study fetched back from a PACS holds
#: them, and a heatmap Parametric Map has pixels, but they are results, never inputs
OWN_MANUFACTURER = "medic-ad"
#: |cos| below which two slice orientations count as the same plane
_SAME_PLANE = 1e-3


@dataclass(frozen=True)
class SliceRef:
    """One 2-D slice: ``index`` is the frame of a multi-frame DICOM or the canonical axial slice of
    a NIfTI volume (None: the file's only image); ``position``: mm along the slice normal."""

    path: Path
    index: int | None = None
    sop_uid: str | None = None
    position: float | None = None
    instance_number: int | None = None


@dataclass
class Series:
    """One series, its slices in anatomical order. ``kind``: dicom, nifti or image."""

    study_uid: str
    series_uid: str
    kind: str
    slices: list[SliceRef]
    modality: str | None = None
    study_date: str | None = None
    order_reason: str | None = None
    # a hash of PatientID, only to pair one patient's studies in memory; never written
    patient_key: str | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.study_uid, self.series_uid)

    @property
    def n_slices(self) -> int:
        return len(self.slices)

    def files(self) -> list[Path]:
        """The series' files in slice order, each once."""
        return list(dict.fromkeys(s.path for s in self.slices))


def uid_from_digest(digest: str, role: str) -> str:
    """A DICOM UID (the 2.25 UUID-derived form) from a content digest: the same file gets the same UID."""
    value = int(hashlib.sha256(f"{role}:{digest}".encode()).hexdigest()[:32], 16)
    return f"2.25.{value}"


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    except OSError:  # unreadable: its name is all there is to identify it by
        h.update(str(path).encode())
    return h.hexdigest()


def _failed(path: Path, problem: str) -> StudyResult:
    digest = _file_digest(path)
    return StudyResult(study_uid=uid_from_digest(digest, "study"), series_uid=uid_from_digest(digest, "series"),
                       n_slices=0, status="failed", reason=f"{path}: {problem}")


def _patient_key(value: Any) -> str | None:
    text = str(value or "").strip()
    return hashlib.sha256(text.encode()).hexdigest() if text else None


def _floats(value: Any, n: int) -> np.ndarray | None:
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.isfinite(out).all() else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------------------------------ DICOM


@dataclass
class _DicomSlice:
    ref: SliceRef
    ipp: np.ndarray | None
    iop: np.ndarray | None


def _frame_geometry(ds: Any, frame: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Position and orientation of one frame of an enhanced multi-frame file, where it states them."""
    ipp = iop = None
    for groups in (ds.get("PerFrameFunctionalGroupsSequence"), ds.get("SharedFunctionalGroupsSequence")):
        if not groups:
            continue
        item = groups[frame] if len(groups) > 1 and frame < len(groups) else groups[0]
        if ipp is None and item.get("PlanePositionSequence"):
            ipp = _floats(item.PlanePositionSequence[0].get("ImagePositionPatient"), 3)
        if iop is None and item.get("PlaneOrientationSequence"):
            iop = _floats(item.PlaneOrientationSequence[0].get("ImageOrientationPatient"), 6)
    return ipp, iop


def _read_dicom_header(path: Path) -> Any:
    import pydicom
    from pydicom import config

    # pydicom's validation warnings (and its log lines) quote element values, patient fields among them
    mode = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS, force=True)
    finally:
        config.settings.reading_validation_mode = mode


def _dicom_slices(path: Path, ds: Any) -> list[_DicomSlice]:
    sop = str(ds.get("SOPInstanceUID", "")).strip() or None
    number = _int(ds.get("InstanceNumber"))
    n_frames = max(1, _int(ds.get("NumberOfFrames")) or 1)
    if n_frames == 1:
        return [_DicomSlice(SliceRef(path, None, sop, None, number), _floats(ds.get("ImagePositionPatient"), 3),
                            _floats(ds.get("ImageOrientationPatient"), 6))]
    out = []
    for k in range(n_frames):
        ipp, iop = _frame_geometry(ds, k)
        out.append(_DicomSlice(SliceRef(path, k, sop, None, number), ipp, iop))
    return out


def _normal(iop: np.ndarray) -> np.ndarray:
    n = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else n


def _order(slices: list[_DicomSlice]) -> tuple[list[SliceRef], str | None]:
    """Slices sorted along the normal; else by InstanceNumber (then frame), saying why."""
    located = [s for s in slices if s.ipp is not None and s.iop is not None]
    if len(located) == len(slices):
        normal = _normal(located[0].iop)
        same_plane = all(abs(1.0 - abs(float(_normal(s.iop) @ normal))) < _SAME_PLANE for s in slices)
        if same_plane and np.linalg.norm(normal) > 0:
            refs = [SliceRef(s.ref.path, s.ref.index, s.ref.sop_uid, float(s.ipp @ normal), s.ref.instance_number)
                    for s in slices]
            refs.sort(key=lambda r: (r.position, r.instance_number or 0, str(r.path), r.index or 0))
            return refs, None
        reason = "ordered by InstanceNumber: slices lie in different planes (ImageOrientationPatient differs)"
    else:
        missing = len(slices) - len(located)
        reason = (f"ordered by InstanceNumber: {missing} of {len(slices)} slice(s) lack ImagePositionPatient "
                  "or ImageOrientationPatient")
    refs = sorted((s.ref for s in slices),
                  key=lambda r: (r.instance_number is None, r.instance_number or 0, r.index or 0, r.sop_uid or "",
                                 str(r.path)))
    return refs, (reason if len(refs) > 1 else None)


# ------------------------------------------------------------------------------------------ NIfTI


def _nifti_series(path: Path) -> Series:
    import nibabel as nib

    img = nib.load(str(path))
    if not 2 <= len(img.shape) <= 4:
        raise ValueError(f"unsupported {len(img.shape)}-D NIfTI (expected 2-D, 3-D or 4-D)")
    ornt = nib.io_orientation(img.affine)
    shape = tuple(img.shape) + (1,) * (3 - len(img.shape)) if len(img.shape) < 3 else tuple(img.shape)
    in_axis = int(np.flatnonzero(ornt[:, 0] == 2)[0])
    n = int(shape[in_axis])
    # canonical slice k sits at voxel n-1-k when the stored axis runs inferior-wards
    flip = ornt[in_axis, 1] < 0
    centre = np.array([(s - 1) / 2.0 for s in shape[:3]] + [1.0])
    refs = []
    for k in range(n):
        voxel = centre.copy()
        voxel[in_axis] = n - 1 - k if flip else k
        z = float((img.affine @ voxel)[2])
        refs.append(SliceRef(path, k, None, z, None))
    digest = _file_digest(path)
    return Series(uid_from_digest(digest, "study"), uid_from_digest(digest, "series"), "nifti", refs)


def _image_series(path: Path) -> Series:
    digest = _file_digest(path)
    return Series(uid_from_digest(digest, "study"), uid_from_digest(digest, "series"), "image",
                  [SliceRef(path)])


# ------------------------------------------------------------------------------------------ grouping


def group_files(paths: Iterable[Path]) -> tuple[list[Series], list[StudyResult]]:
    """Series (sorted by study and series UID, slices in order) and a failed row per unreadable file.

    A DICOM object without an image (no Rows/Columns: a structured report, a presentation state) is
    not a slice, nor is an object medic-ad wrote: they are skipped, logged by count only.
    """
    dicom: dict[tuple[str, str], list[_DicomSlice]] = defaultdict(list)
    info: dict[tuple[str, str], dict[str, Any]] = {}
    series: list[Series] = []
    failed: list[StudyResult] = []
    skipped = 0
    for path in paths:
        path = Path(path)
        try:
            fmt = sniff_format(path)
        except OSError as exc:
            failed.append(_failed(path, f"cannot read the file ({type(exc).__name__})"))
            continue
        if fmt == "dicom":
            try:
                ds = _read_dicom_header(path)
            except Exception as exc:  # any parser failure is one failed row, never a traceback
                failed.append(_failed(path, f"corrupt DICOM header ({type(exc).__name__})"))
                continue
            study, ser = (str(ds.get(k, "")).strip() for k in ("StudyInstanceUID", "SeriesInstanceUID"))
            has_image = bool(_int(ds.get("Rows")) and _int(ds.get("Columns")))
            if not has_image and not (study and ser):
                failed.append(_failed(path, "corrupt DICOM header (no image and no study/series UIDs)"))
                continue
            if not has_image or str(ds.get("Manufacturer", "")).strip() == OWN_MANUFACTURER:
                skipped += 1
                continue
            if not study or not ser:
                failed.append(_failed(path, "DICOM header lacks StudyInstanceUID or SeriesInstanceUID"))
                continue
            dicom[(study, ser)] += _dicom_slices(path, ds)
            info.setdefault((study, ser), {
                "modality": str(ds.get("Modality", "")).strip() or None,
                "study_date": str(ds.get("StudyDate", "")).strip() or None,
                "patient_key": _patient_key(ds.get("PatientID")),
            })
        elif fmt == "nifti":
            try:
                series.append(_nifti_series(path))
            except Exception as exc:  # nibabel raises many types on a bad header
                problem = str(exc) if isinstance(exc, ValueError) and "NIfTI" in str(exc) else \
                    f"corrupt NIfTI header ({type(exc).__name__})"
                failed.append(_failed(path, problem))
        elif fmt is not None:
            series.append(_image_series(path))
        else:
            failed.append(_failed(path, "not a DICOM, NIfTI or image file"))
    if skipped:
        log.info("skipped %d DICOM object(s) without an image or written by medic-ad", skipped)
    for key, slices in dicom.items():
        refs, reason = _order(slices)
        series.append(Series(key[0], key[1], "dicom", refs, order_reason=reason, **info[key]))
    series.sort(key=lambda s: s.key)
    failed.sort(key=lambda r: (r.study_uid, r.series_uid))
    return series, failed
