"""One path from an input to a result, shared by the CLI, the REST API and the web UI.

    load (file or upload bytes) -> sanity checks -> model -> plain results (+ pictures on request)
    study (several files or a zip) -> private folder -> series by UID -> slices in batches -> study answer

:class:`Service` owns the model (loaded lazily, so bad inputs are refused before a checkpoint is
read) and one lock around it: the model is not re-entrant, so the API's worker threads and the UI's
handlers take turns. Uploaded bytes go to a private temp file that is deleted as soon as it is
decoded; results carry only safe image metadata (:class:`~medic_ad.data.io.ImageMeta`), never
a file name or a DICOM header field.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from medic_ad.data.io import MedicalImage
from medic_ad.models.results import Comparison, Detection, Explanation
from medic_ad.serve.sanity import Limits, SanityError, check_image, check_pair, load_checked, probe
from medic_ad.serve.study import ServedStudy

if TYPE_CHECKING:
    from medic_ad.models.interface import MedicalVLM
    from medic_ad.models.medic_ad import MedicAD

__all__ = [
    "NO_MODEL_MESSAGE",
    "Service",
    "clean_region",
    "image_info",
    "load_model",
    "resolve_checkpoint",
]

log = logging.getLogger("medic_ad.serve")

NO_MODEL_MESSAGE = "no model given and no demo checkpoint found; run `medic-ad demo` or pass --model DIR"
MAX_REGION_CHARS = 120


# ------------------------------------------------------------------------------------------ model


def resolve_checkpoint(model: str | Path | None) -> Path:
    """``model``, else ``$MEDIC_AD_MODEL`` or the demo checkpoint; checks the folder is a checkpoint."""
    from medic_ad.models.checkpoint import read_checkpoint_meta
    from medic_ad.paths import default_checkpoint

    path = Path(model) if model is not None else default_checkpoint()
    if path is None:
        raise ValueError(NO_MODEL_MESSAGE)
    read_checkpoint_meta(path)  # one clear error for a missing or broken folder, before any input is read
    return path


_MODELS: dict[tuple[str, str, float], "MedicAD"] = {}
_MODELS_LOCK = threading.Lock()


def load_model(path: str | Path, *, device: str = "cpu") -> "MedicAD":
    """A checkpoint loaded once per process (keyed by folder, device and the config's mtime), LoRA merged:
    serving never trains it."""
    from medic_ad.models.checkpoint import CONFIG_FILE
    from medic_ad.models.medic_ad import MedicAD

    path = Path(path).resolve()
    key = (str(path), device, (path / CONFIG_FILE).stat().st_mtime)
    with _MODELS_LOCK:
        if key not in _MODELS:
            started = time.perf_counter()
            _MODELS[key] = MedicAD.from_pretrained(path, device=device, merge_lora=True)
            log.info("model loaded in %.1f s", time.perf_counter() - started)
        return _MODELS[key]


# ------------------------------------------------------------------------------------------ results


def image_info(image: MedicalImage) -> dict[str, Any]:
    """The safe facts about an input that results report (no names, no patient fields)."""
    meta = image.meta
    return {
        "format": meta.source_format,
        "modality": meta.modality,
        "height": int(image.pixels.shape[0]),
        "width": int(image.pixels.shape[1]),
        "spacing_mm": list(meta.spacing) if meta.spacing else None,
        "photometric": meta.photometric,
        "n_frames": meta.n_frames,
        "orientation": meta.orientation,
    }


def clean_region(region: str | None) -> str | None:
    """The ``--region`` text of a comparison question: one short printable line, or None."""
    if region is None:
        return None
    text = " ".join(str(region).split())
    if not text:
        return None
    if len(text) > MAX_REGION_CHARS or not text.isprintable():
        raise SanityError("bad_option", f"region must be one printable line of at most {MAX_REGION_CHARS} "
                                        "characters", name="region")
    return text


# ------------------------------------------------------------------------------------------ service


class Service:
    """Inputs to results. ``model`` is a model of the interface (:class:`MedicalVLM`, e.g. MEDIC-AD) or a
    zero-argument callable that loads one. Each request runs the model once: its results carry the maps
    their one forward pass computed."""

    def __init__(
        self,
        model: "MedicalVLM | Callable[[], MedicalVLM]",
        *,
        limits: Limits = Limits(),
        batch_size: int = 8,
        tmp_dir: str | Path | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self._model = None if callable(model) and not hasattr(model, "detect") else model
        self._loader = model if self._model is None else None
        self.limits = limits
        self.batch_size = batch_size
        self.tmp_dir = Path(tmp_dir) if tmp_dir is not None else None
        self._lock = threading.RLock()

    @classmethod
    def from_checkpoint(cls, model: str | Path | None = None, *, device: str = "cpu", lazy: bool = False,
                        **kwargs: Any) -> "Service":
        path = resolve_checkpoint(model)
        service = cls(lambda: load_model(path, device=device), **kwargs)
        if not lazy:
            _ = service.model
        return service

    def with_limits(self, limits: Limits) -> "Service":
        """A service with other limits that shares this one's model and its lock."""
        other = Service.__new__(Service)
        other.__dict__.update(self.__dict__)
        other.limits = limits
        return other

    @property
    def model(self) -> "MedicalVLM":
        with self._lock:
            if self._model is None:
                self._model = self._loader()  # type: ignore[misc]
            return self._model

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    # -------------------------------------------------------------------------------- inputs
    def load(self, source: str | Path | bytes, *, name: str, frame: int | None = None,
             slice_index: int | None = None, axis: int = 2) -> MedicalImage:
        """Sanity-check and decode a file or uploaded bytes; raises :class:`SanityError` on refusal.

        ``name`` is how messages refer to the input (a path on the CLI, a form field in the API).
        """
        for option, value in (("frame", frame), ("slice", slice_index)):
            if value is not None and value < 0:
                raise SanityError("bad_option", f"{option} must be 0 or more, got {value}", name=name)
        if axis not in (0, 1, 2):
            raise SanityError("bad_option", f"axis must be 0, 1 or 2, got {axis}", name=name)
        if not isinstance(source, (bytes, bytearray, memoryview)):
            return load_checked(source, limits=self.limits, name=name, frame=frame, slice_index=slice_index,
                                axis=axis)
        data = bytes(source)
        if len(data) > self.limits.max_bytes:
            raise SanityError("too_large", f"{len(data)} bytes is over the {self.limits.max_bytes}-byte upload limit",
                              name=name)
        if self.tmp_dir is not None:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
        # a random name: the uploader's file name is never used (it may carry a patient's name)
        fd, tmp = tempfile.mkstemp(prefix="medic-ad-upload-", dir=self.tmp_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return load_checked(tmp, limits=self.limits, name=name, frame=frame, slice_index=slice_index, axis=axis)
        finally:
            os.unlink(tmp)

    def check(self, image: MedicalImage, *, name: str) -> MedicalImage:
        """The pixel checks alone, for images that arrive already decoded (arrays, PIL)."""
        return check_image(image, limits=self.limits, name=name)

    # -------------------------------------------------------------------------------- model calls
    def detect(self, images: Sequence[MedicalImage], *, batch_size: int | None = None) -> list[Detection]:
        """Answer, abnormal flag, score P(abnormal) and the anomaly map for each image, in batches."""
        if not images:
            return []
        started = time.perf_counter()
        with self._lock:
            results = self.model.detect(list(images), batch_size=batch_size or self.batch_size)
        log.info("detect: %d image(s) in %.2f s", len(images), time.perf_counter() - started)
        for r, im in zip(results, images):
            _finish(r, im)
        return results

    def explain(self, image: MedicalImage) -> Explanation:
        """Detection plus the heatmap at the input's size, from one forward pass."""
        started = time.perf_counter()
        with self._lock:
            result = self.model.explain(image)
        result = _finish(result, image)
        result.heatmap = _checked_map(result.heatmap, image)
        log.info("explain: heatmap %dx%d in %.2f s", image.pixels.shape[1], image.pixels.shape[0],
                 time.perf_counter() - started)
        return result

    def compare(self, prior: MedicalImage, current: MedicalImage, *, region: str | None = None) -> Comparison:
        """Worsened / improved / no change, both anomaly maps and the change map (current - prior)."""
        check_pair(prior, current)
        region = clean_region(region)
        started = time.perf_counter()
        with self._lock:
            result = self.model.compare(prior, current, region=region)
        log.info("compare: %s in %.2f s", result.label, time.perf_counter() - started)
        result.answer = _printable(result.answer)
        result.prior, result.current = image_info(prior), image_info(current)
        result.prior_map = _checked_map(result.prior_map, prior)
        result.current_map = _checked_map(result.current_map, current)
        return result

    def study(self, uploads: bytes | Sequence[bytes], *, slices: str | int = "all", window: str | None = None,
              score: str = "max", series_uid: str | None = None, heatmaps: bool = True,
              name: str = "study") -> ServedStudy:
        """One study from several files or a zip of them: the study's answer, score, key slice and scored slices.

        The files go to a private temp folder under numbered names (:class:`~medic_ad.serve.uploads.StudyFolder`),
        are grouped by Study/Series Instance UID from their headers and ordered along the slice normal
        (:mod:`medic_ad.studies.series`). An upload holding more than one study is refused
        (``mixed_studies``, naming how many): answering for one of them would silently drop the rest.
        Of several series of the study the largest is read, or the one ``series_uid`` names. Files that
        are not images (a DICOMDIR, a text file) or cannot be read are skipped and counted; a file over
        the limits refuses the upload. Slices are scored in batches of ``batch_size``, one model call
        (one vision pass) per batch, with heatmaps when ``heatmaps`` (the overlays need them). The folder
        is deleted before this returns.
        """
        from medic_ad.serve.uploads import StudyFolder
        from medic_ad.studies.job import score_series
        from medic_ad.studies.series import group_files

        config = _study_config(slices, window, score, heatmaps, self.batch_size, name)
        items = [uploads] if isinstance(uploads, (bytes, bytearray, memoryview)) else list(uploads)
        if not items:
            raise SanityError("empty_file", "no files uploaded", name=name)
        sent = sum(len(x) for x in items)
        if sent > self.limits.max_study_upload_bytes:  # the API refuses it sooner; the UI hands it over whole
            raise SanityError("too_large", f"the study upload of {sent} bytes is over the "
                                           f"{self.limits.max_study_upload_bytes}-byte study upload limit", name=name)
        started = time.perf_counter()
        kept: dict[int, MedicalImage] = {}
        with StudyFolder(self.limits, tmp_dir=self.tmp_dir, name=name) as folder:
            for data in items:
                folder.add(data)
            images = self._study_images(folder.files, name)
            series, failed = group_files(images)
            skipped = folder.left_out + len(folder.files) - len(images) + len(failed)
            if not images:
                raise SanityError("not_an_image", f"none of the {len(folder.files)} uploaded file(s) is an image "
                                                  "(PNG, JPEG, TIFF, DICOM, NIfTI)", name=name)
            if not series:
                raise SanityError("unreadable", f"none of the {len(images)} uploaded image file(s) can be read",
                                  name=name)
            studies = {s.study_uid for s in series}
            if len(studies) > 1:
                raise SanityError("mixed_studies", f"the upload holds {len(studies)} studies ({len(series)} series); "
                                                   "send one study at a time", name=name)
            chosen, notes = _choose_series(series, series_uid, name)
            with self._lock:
                result = score_series(self.model, chosen, config, on_slice=kept.__setitem__)
        if result.status != "ok":
            where = str(result.reason or "").split(":", 1)[0]  # "slice N"; the rest may quote a temp path
            raise SanityError("unreadable", f"{where or 'a slice'} of the series cannot be decoded", name=name)
        if skipped:
            notes.append(f"{skipped} uploaded file(s) skipped: not images of this study, or unreadable")
        if result.reason:
            notes.append(result.reason)  # how the slices were ordered, when not by position
        result.answer = _printable(result.answer or "")
        shown = [kept[p] for p in result.slice_indices]
        maps = None
        if heatmaps and result.heatmaps is not None:
            maps = [_checked_map(m, im) for m, im in zip(result.heatmaps, shown)]
        result.heatmaps = None  # the per-slice maps above, at each slice's own size, replace the volume
        log.info("study: %d of %d slice(s) of 1 of %d series in %.2f s", len(shown), result.n_slices, len(series),
                 time.perf_counter() - started)
        return ServedStudy(result=result, score_rule=str(config.score), modality=chosen.modality,
                           images=[_display(im) for im in shown], heatmaps=maps, series_found=len(series),
                           files_read=len(images) - len(failed), files_skipped=skipped, notes=notes)

    def _study_images(self, files: list[Path], name: str) -> list[Path]:
        """The files that are images by their header; over-limit files refuse the upload, non-images are left out."""
        out = []
        for k, path in enumerate(files, 1):
            try:
                probe(path, limits=self.limits, name=f"{name} file {k}")
            except SanityError as exc:
                if exc.reason in ("not_an_image", "empty_file"):
                    continue
                raise
            out.append(path)
        return out


def _study_config(slices: str | int, window: str | None, score: str, heatmaps: bool, batch_size: int, name: str):
    """The archive job's options from the request's words; a bad one is a ``bad_option`` refusal."""
    from medic_ad.data.io.transforms import parse_window
    from medic_ad.studies.job import PredictConfig
    from medic_ad.studies.scoring import ScoreRule, parse_slices

    try:
        return PredictConfig(slices=parse_slices(slices if slices not in (None, "") else "all"),
                             window=parse_window(window) if window else None, score=ScoreRule.parse(score or "max"),
                             explain=heatmaps, batch_size=batch_size, num_workers=0, progress=False)
    except ValueError as exc:
        raise SanityError("bad_option", str(exc).replace("--", ""), name=name) from None


def _display(image: MedicalImage) -> np.ndarray:
    """8-bit pixels to draw a slice from: a quarter of the float image's memory, kept while the study is shown."""
    from medic_ad.serve.overlay import grey_rgb

    u8 = grey_rgb(image)
    return u8[:, :, 0] if image.pixels.ndim == 2 else u8


def _choose_series(series: list, series_uid: str | None, name: str):
    """(the series to read, notes): the one named, else the largest (the first by UID among equals)."""
    if series_uid:
        named = [s for s in series if s.series_uid == series_uid.strip()]
        if not named:
            raise SanityError("bad_option", f"no series with that SeriesInstanceUID among the {len(series)} series "
                                            "of the upload", name=name)
        return named[0], []
    chosen = max(series, key=lambda s: s.n_slices)  # max keeps the first of equals: series are sorted by UID
    notes = []
    if len(series) > 1:
        notes.append(f"the study holds {len(series)} series; the largest ({chosen.n_slices} slices) was read "
                     "(name another with series_uid)")
    return chosen, notes


def _finish(result: Detection, image: MedicalImage) -> Detection:
    """The service's additions to a model's detection: printable text, the input's safe facts, a clean map."""
    result.answer = _printable(result.answer)
    result.abnormal = bool(result.abnormal)
    result.score = float(result.score)
    result.image = image_info(image)
    result.anomaly_map = _checked_map(result.anomaly_map, image)
    return result


def _printable(text: str) -> str:
    """The model's words without control characters (a barely trained model emits them)."""
    return "".join(ch if ch.isprintable() else " " for ch in str(text)).strip()


def _checked_map(values: np.ndarray | None, image: MedicalImage) -> np.ndarray | None:
    """A map at the image's size, finite and in [0, 1] (None stays None: a model without maps)."""
    if values is None:
        return None
    values = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    from medic_ad.serve.overlay import resize_map

    return np.clip(resize_map(values, image.pixels.shape[:2]), 0, 1)
