"""``medic-ad predict`` throughput against the model alone on the same decoded slices (issue 19).

Both variants score every slice of the same synthetic CT studies (DICOM series written from pydicom's
``CT_small.dcm`` header, 128 × 128, a bright region on some slices) with the tiny MEDIC-AD in batches
of the same size:

* ``model_alone``: the slices decoded and windowed beforehand (not timed), then ``model.detect`` on
  them batch by batch;
* ``predict_job``: the whole job as ``medic-ad predict`` runs it (``predict_studies``): headers already
  scanned, then decoding and windowing in DataLoader workers, the model, the study scores, the
  ``studies.jsonl`` part file appended and merged.

The ratio of their studies/s (target ≥ 0.9) says how much of the decoding the job hides behind the
model. Rounds are interleaved (``common.measure``); each predict round writes to a fresh folder, removed
only after the last round (removing it is not the job's work). The model-alone side gets the slices
exactly as the job's workers hand them over (``MedicalImage``), so both model calls do the same
preprocessing (RGB conversion, resizing, normalisation inside ``detect``) and the ratio counts only
what the job adds: decoding not hidden, the workers' start and end, rows, merge.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks import common

SIDE = 128
TARGET = 0.9


def write_studies(folder: Path, n_studies: int, n_slices: int) -> None:
    """``n_studies`` CT series of ``n_slices`` slices, 5 mm apart, a 1000 HU half on every third slice."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    template = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    rng = np.random.default_rng(0)
    for s in range(n_studies):
        study, series = generate_uid(), generate_uid()
        for k in range(n_slices):
            ds = template.copy()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.Rows = ds.Columns = SIDE
            ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
            ds.WindowCenter, ds.WindowWidth = 40, 400
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [0.0, 0.0, 5.0 * k]
            ds.InstanceNumber = k + 1
            hu = rng.normal(0.0, 20.0, (SIDE, SIDE))
            if k % 3 == s % 3:
                hu[:, : SIDE // 2] = 1000
            ds.PixelData = (hu + 1024).astype(np.int16).tobytes()
            ds.save_as(folder / f"{s:03d}_{k:03d}.dcm", enforce_file_format=True)


def _measure(model, n_studies: int, n_slices: int, *, batch_size: int, workers: int, repeats: int,
             log: Callable[[str], None]) -> dict[str, Any]:
    """Both sides on one job of ``n_studies`` × ``n_slices``: studies/s, their paired ratio and timings."""
    import torch

    from medic_ad.studies.dataset import decode_slice
    from medic_ad.studies.job import PredictConfig, predict_studies
    from medic_ad.studies.series import group_files

    tmp = Path(tempfile.mkdtemp(prefix="medic-ad-bench-predict-"))
    try:
        (tmp / "in").mkdir()
        write_studies(tmp / "in", n_studies, n_slices)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            series, failed = group_files(sorted((tmp / "in").iterdir()))
        decoded = [decode_slice(s, ref, None) for s in series for ref in s.slices]
        config = PredictConfig(batch_size=batch_size, num_workers=workers, progress=False)
        rounds = iter(range(10 ** 6))

        def model_alone() -> None:
            for start in range(0, len(decoded), batch_size):
                model.detect(decoded[start:start + batch_size], batch_size=batch_size)

        def predict_job() -> None:
            # each round's folder stays until the end: deleting it is the benchmark's chore, not the job's
            predict_studies(model, series, failed, tmp / f"out{next(rounds)}", config)

        with torch.inference_mode():
            samples = common.measure({"model_alone": model_alone, "predict_job": predict_job}, warmup=1,
                                     repeats=repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    st = common.all_stats(samples)
    rates = {k: n_studies / v["median_s"] for k, v in st.items()}
    ratio = common.paired_ratio(samples["model_alone"], samples["predict_job"])  # time ratio = rate ratio
    log(f"{n_studies} studies × {n_slices} slices: predict {rates['predict_job']:.2f} studies/s, model alone "
        f"{rates['model_alone']:.2f} studies/s, ratio {ratio['median']:.3f}")
    return {"studies": n_studies, "slices_per_study": n_slices, "studies_per_s": rates,
            "ratio_predict_over_model": ratio, "timing": st}


def run(*, quick: bool, log: Callable[[str], None], repeats: int | None = None) -> dict[str, Any]:
    from medic_ad import MedicAD

    repeats = repeats or (1 if quick else 5)
    # Two job sizes: a job pays a fixed cost to start and stop its decoding workers and to merge its part
    # files, which a 6-study job shows and an archive job spreads over its studies; the target is read on
    # the larger job, the steady state an archive run is in, and the small job's ratio is reported beside it.
    jobs = [(3, 4)] if quick else [(6, 12), (24, 12)]
    batch_size, workers = 4, 1
    model = MedicAD.tiny(seed=0).for_inference()
    measured = [_measure(model, n, k, batch_size=batch_size, workers=workers, repeats=repeats, log=log)
                for n, k in jobs]
    steady = measured[-1]
    ratio, rates = steady["ratio_predict_over_model"], steady["studies_per_s"]
    summary = [common.summary_row(f"predict / model alone (studies/s), {steady['studies']}-study job", ratio["median"],
                                  "×", target=f"≥ {TARGET}", met=ratio["median"] >= TARGET)]
    summary += [common.summary_row(f"predict / model alone (studies/s), {m['studies']}-study job",
                                   m["ratio_predict_over_model"]["median"], "×") for m in measured[:-1]]
    summary += [common.summary_row("medic-ad predict", rates["predict_job"], "studies/s"),
                common.summary_row("model alone, pre-decoded slices", rates["model_alone"], "studies/s")]
    return {
        "config": {"model": "MedicAD.tiny(seed=0), LoRA merged", "batch_size": batch_size, "num_workers": workers,
                   "repeats": repeats, "window": "the files' own (40/400)"},
        "input": {"image_size": [SIDE, SIDE], "jobs": [{"studies": n, "slices_per_study": k} for n, k in jobs],
                  "format": "DICOM CT series, explicit VR little endian"},
        "results": {"jobs": measured, "studies_per_s": rates, "ratio_predict_over_model": ratio},
        "summary": summary,
    }
