"""``medic-ad predict``: the archive job, one row per study in ``DIR/studies.jsonl``.

    medic-ad predict INPUT... --out DIR [--manifest CSV] [--slices all|N] [--window NAME|C/W]
                     [--score max|topk_mean:K] [--explain [--overlay]] [--compare | --prior UID --current UID]
                     [--dicomweb URL [--study-uid UID]... [--date-from D] [--date-to D] [--modality M] [--store]]
                     [--batch-size N] [--num-workers N]

Inputs are files, folders (walked recursively), manifest CSVs (a ``path`` column) and the studies a
DICOMweb search finds (retrieved into ``DIR/dicomweb/``). DICOM files are grouped into series by
their UIDs; NIfTI volumes and raster images are series of their own. DICOM results (SR, heatmap
Parametric Map, overlay, comparison SR) go to ``DIR/dicom/`` and, with ``--store``, back to the PACS.
The job resumes (a rerun skips the studies already written) and shards under ``accelerate launch``
(each rank takes a disjoint share; rank 0 merges). See ``docs/studies.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["add_parser", "run_predict"]

log = logging.getLogger("medic_ad.studies")

#: the folder under ``--out`` that holds the studies retrieved with ``--dicomweb``
DICOMWEB_CACHE = "dicomweb"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="archive job: studies (DICOM series, volumes) in, studies.jsonl out",
                       description="Group DICOM files into studies and series by UID, order their slices, run "
                                   "the model on the chosen slices in batches and write one row per study to "
                                   "DIR/studies.jsonl (resumable; sharded under accelerate launch).")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="DICOM/NIfTI/image files, folders or manifest CSVs")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (studies.jsonl, dicom/)")
    p.add_argument("--manifest", action="append", default=[], metavar="CSV",
                   help="a CSV with a 'path' column (other columns ignored); may be repeated")
    p.add_argument("--slices", default="all", metavar="all|N", help="every slice, or N evenly spaced (default: all)")
    p.add_argument("--window", metavar="NAME|C/W",
                   help="CT window for CT series and NIfTI volumes: brain, subdural, stroke, lung, mediastinum, "
                        "abdomen, liver, bone, or centre/width such as 40/80 (default: each file's own)")
    p.add_argument("--score", default="max", metavar="max|topk_mean:K",
                   help="study score from the slice scores (default: max)")
    p.add_argument("--explain", action="store_true", help="heatmaps for every scored slice (to the DICOM writers)")
    p.add_argument("--overlay", action="store_true",
                   help="with --explain: also a Secondary Capture of the key slice's heatmap over the slice")
    web = p.add_argument_group("PACS (DICOMweb)")
    web.add_argument("--dicomweb", metavar="URL", help="DICOMweb root (e.g. http://pacs:8042/dicom-web): the "
                                                       "studies found by the filters below are inputs too")
    web.add_argument("--study-uid", action="append", default=[], metavar="UID",
                     help="a StudyInstanceUID to fetch (may be repeated)")
    web.add_argument("--date-from", metavar="DATE", help="StudyDate on or after DATE (YYYYMMDD or YYYY-MM-DD)")
    web.add_argument("--date-to", metavar="DATE", help="StudyDate on or before DATE")
    web.add_argument("--modality", metavar="M", help="studies with a series of this modality (e.g. CT)")
    web.add_argument("--store", action="store_true",
                     help="send each study's DICOM objects back with STOW-RS; a study is done only once stored")
    p.add_argument("--compare", action="store_true",
                   help="also compare each patient's studies with the one before (by StudyDate): comparisons.jsonl")
    p.add_argument("--prior", metavar="STUDY_UID", help="compare this prior study ...")
    p.add_argument("--current", metavar="STUDY_UID", help="... with this current study (both among the inputs)")
    p.add_argument("--batch-size", type=int, default=8, help="slices per model batch (default: 8)")
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader decoding processes (default: 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--model", metavar="DIR", help="MEDIC-AD checkpoint folder (default: $MEDIC_AD_MODEL or the "
                                                  "demo's runs/demo/checkpoint)")
    p.add_argument("--model-type", default="medic_ad", help="registered model name (default: medic_ad; 'dummy' "
                                                            "needs no checkpoint)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)  # tests: stop as if killed after N studies
    p.set_defaults(func=run_predict)


def _config(args: argparse.Namespace):
    from medic_ad.data.io.transforms import parse_window
    from medic_ad.studies.job import PredictConfig
    from medic_ad.studies.scoring import ScoreRule, parse_slices

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.num_workers < 0:
        raise ValueError(f"--num-workers must be 0 or more, got {args.num_workers}")
    if (args.prior is None) != (args.current is None):
        raise ValueError("--prior and --current name a pair: give both")
    if args.overlay and not args.explain:
        raise ValueError("--overlay draws the heatmap: give --explain too")
    if args.store and not args.dicomweb:
        raise ValueError("--store sends the objects to the --dicomweb URL: give it")
    if not args.dicomweb and (args.study_uid or args.date_from or args.date_to or args.modality):
        raise ValueError("--study-uid, --date-from, --date-to and --modality filter a --dicomweb search: give the URL")
    return PredictConfig(slices=parse_slices(args.slices), window=parse_window(args.window) if args.window else None,
                         score=ScoreRule.parse(args.score), explain=args.explain, batch_size=args.batch_size,
                         num_workers=args.num_workers, progress=not args.no_progress, stop_after=args.stop_after)


def _model(args: argparse.Namespace):
    """(model, checkpoint folder or None, name, version)."""
    from medic_ad.models.interface import get_model

    if args.model_type == "medic_ad":
        from medic_ad.serve.service import load_model, resolve_checkpoint

        path = resolve_checkpoint(args.model)
        return load_model(path, device=args.device), path
    cls = get_model(args.model_type)
    path = Path(args.model) if args.model else None
    return cls.load(path or "", device=args.device).for_inference(), path


def _check_named(files: list[Path]) -> None:
    """A file named on the command line that the scan cannot read stops the job with one line."""
    from medic_ad.studies.series import group_files

    _, failed = group_files(files)
    if failed:
        raise ValueError(failed[0].reason)


def run_predict(args: argparse.Namespace) -> int:
    from medic_ad import __version__
    from medic_ad.studies.dicom_objects import DicomOutput
    from medic_ad.studies.inputs import expand_inputs
    from medic_ad.studies.job import predict_studies
    from medic_ad.studies.series import group_files
    from medic_ad.studies.shard import Ranks

    config = _config(args)
    # pydicom logs invalid element values verbatim; a patient field may be one of them
    logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)
    if not args.inputs and not args.manifest and not args.dicomweb:
        raise ValueError("no inputs: give files, folders, --manifest CSV or --dicomweb URL")
    if args.out.exists() and not args.out.is_dir():
        raise NotADirectoryError(f"{args.out}: exists and is not a folder")
    named, found = expand_inputs(args.inputs, args.manifest)
    _check_named(named)
    client, fetched, unfetched = _fetch(args) if args.dicomweb else (None, [], 0)
    series, failed = group_files([*named, *found, *fetched])
    if not series and not failed:
        raise ValueError("no image files among the inputs")
    pairs = _pairs(args, series)
    ranks = Ranks.detect()
    model, checkpoint = _model(args)
    dicom = DicomOutput.create(args.out / "dicom", model_name=getattr(model, "name", "") or args.model_type,
                               model_version=__version__, checkpoint=checkpoint, heatmaps=args.explain,
                               overlay=args.overlay, store=client.store if args.store else None)
    if args.store and dicom is None:
        raise ValueError("--store needs the DICOM writers (medic_ad.dicom_out), which are not installed")
    summary = predict_studies(model, series, failed, args.out, config, ranks=ranks, dicom=dicom)
    if summary.stopped:
        print(f"stopped after {summary.written} studies (--stop-after); rerun to finish", file=sys.stderr)
        return 0
    not_stored = summary.not_stored
    if pairs is not None:
        not_stored += _run_compare(model, pairs, series, args.out, config, ranks, dicom)
    if ranks.main:
        rate = summary.written / summary.seconds if summary.seconds > 0 else 0.0
        print(f"{summary.written} studies written ({summary.failed} failed), {summary.skipped} already done; "
              f"{rate:.2f} studies/s on rank 0 of {ranks.world}; results in {args.out / 'studies.jsonl'}",
              file=sys.stderr)
    if not_stored or unfetched:
        print(f"{unfetched} studies not retrieved, {not_stored} results not stored: rerun to retry them",
              file=sys.stderr)
        return 1
    return 0


def _fetch(args: argparse.Namespace):
    """(client, retrieved study folders, how many could not be retrieved): QIDO-RS search, then WADO-RS into
    ``DIR/dicomweb/`` (a study already there complete is reused). A failed search stops the job with its
    one line; a failed retrieval is logged and the rest go on (a rerun retries it)."""
    from medic_ad.pacs import DicomWebClient, DicomWebError

    client = DicomWebClient(args.dicomweb)
    filters = dict(date_from=args.date_from, date_to=args.date_to, modality=args.modality)
    try:
        if args.study_uid:
            refs = [r for uid in dict.fromkeys(args.study_uid) for r in client.search_studies(study_uid=uid, **filters)]
        else:
            refs = client.search_studies(**filters)
    except DicomWebError as err:
        raise ValueError(str(err)) from None
    cache = args.out / DICOMWEB_CACHE
    folders, missing = [], 0
    for ref in refs:
        try:
            folders.append(client.retrieve_study(ref.study_uid, cache))
        except DicomWebError as err:
            log.warning("study %s not retrieved, a rerun retries it: %s", ref.study_uid, err)
            missing += 1
    log.info("%d of %d studies found on the DICOMweb server are in %s", len(folders), len(refs), cache)
    files = [p for folder in folders for p in sorted(folder.rglob("*.dcm"))]
    return client, files, missing


def _pairs(args: argparse.Namespace, series):
    from medic_ad.studies.longitudinal import pair_by_date, pair_named

    if args.prior is not None:
        return [pair_named(series, args.prior, args.current)]
    return pair_by_date(series) if args.compare else None


def _run_compare(model, pairs, series, out: Path, config, ranks, dicom) -> int:
    """Compare this rank's pairs not yet done; with DICOM output each ``ok`` row's SR is written (and
    stored) before the row. Returns how many rows were held back because their SR could not be stored."""
    from medic_ad.studies import records
    from medic_ad.studies.job import STUDIES, study_key
    from medic_ad.studies.longitudinal import COMPARISONS, compare_pairs, comparison_key

    done = records.done_keys(out, COMPARISONS, comparison_key)
    rows = {study_key(r): r for r in records.read_rows(out / f"{STUDIES}.jsonl")}
    # a pair whose current study has no row yet (its store failed) waits for the rerun that finishes it
    mine = [p for p in pairs if ranks.mine(p.current.study_uid) and p.key not in done and p.current.key in rows]
    key_slices = {k: r["key_slice_index"] for k, r in rows.items() if r.get("key_slice_index") is not None}
    by_key = {p.key: p for p in mine}
    not_stored = 0
    with records.PartWriter(records.part_path(out, COMPARISONS, ranks.rank, ranks.world)) as part:
        for row in compare_pairs(model, mine, key_slices, window=config.window, batch_size=config.batch_size):
            if dicom is not None and not _comparison_dicom(dicom, row, by_key[comparison_key(row)]):
                not_stored += 1
                continue
            part.append(row)
    ranks.wait()
    if ranks.main:
        records.merge_parts(out, COMPARISONS, comparison_key)
        log.info("%d comparison(s) in %s", len(pairs), out / f"{COMPARISONS}.jsonl")
    ranks.wait()
    return not_stored


def _comparison_dicom(dicom, row: dict, pair) -> bool:
    """Write (and store) the row's comparison SR; False when the store failed (the row waits for a rerun)."""
    from medic_ad.studies.dicom_objects import StoreError

    try:
        dicom.write_comparison(row, pair.current, pair.prior)
    except StoreError as err:
        log.warning("comparison of study %s not stored, a rerun retries it: %s", pair.current.study_uid, err)
        return False
    except Exception as exc:  # the writer's own messages may quote header values: only its type goes out
        log.warning("comparison SR failed for study %s (%s)", pair.current.study_uid, type(exc).__name__)
        row.update(status="failed", reason=f"comparison SR failed ({type(exc).__name__})")
    return True
