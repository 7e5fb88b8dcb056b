"""``medic-ad detect | compare | explain``: answers, scores and heatmaps for studies on disk.

    medic-ad detect FILE|DIR ... [--out results.csv|.jsonl] [--batch-size N] [--json]
    medic-ad compare PRIOR CURRENT [--region TEXT] [-o sidebyside.png] [--json]
    medic-ad explain FILE -o overlay.png [--alpha A] [--json]

Every input passes the sanity checks (``medic_ad.serve.sanity``) before the model is loaded: a file
named on the command line that is refused stops the command with one line on stderr and exit
status 2, and nothing is written. Files found inside a folder are processed in batches instead; a
refused one becomes a ``refused`` row naming its reason, and the batch goes on. Outputs are written
atomically (temp file + rename).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from medic_ad.studies.inputs import walk_folder

#: files skipped when walking a folder: the metadata that sits beside images in dataset folders (any
#: other file is tried, and a refused one becomes a row naming its reason)
SIDECAR_SUFFIXES = {".csv", ".tsv", ".json", ".jsonl", ".md", ".yaml", ".yml"}

__all__ = ["add_parser", "run_compare", "run_detect", "run_explain"]

CSV_FIELDS = ["path", "status", "reason", "answer", "abnormal", "score", "format", "modality", "height", "width",
              "error"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="DIR", help="MEDIC-AD checkpoint folder (default: $MEDIC_AD_MODEL or the "
                                                  "demo's runs/demo/checkpoint)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--frame", type=int, help="frame of a multi-frame DICOM / volume of a 4-D NIfTI (default: middle)")
    p.add_argument("--slice", dest="slice_index", type=int, help="NIfTI slice along --axis (default: middle)")
    p.add_argument("--axis", type=int, default=2, choices=(0, 1, 2),
                   help="NIfTI slicing axis: 0 sagittal, 1 coronal, 2 axial (default: 2)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("detect", help="is there any abnormality? answer + score per image or folder",
                       description="Answer 'Is there any abnormality in this image?' with a score P(abnormal) for "
                                   "each FILE, and for every file inside each DIR (recursively; batches, a "
                                   "progress bar, refused files become rows naming the reason).")
    d.add_argument("inputs", nargs="+", metavar="FILE|DIR", help="PNG/JPEG/TIFF/DICOM/NIfTI files or folders")
    d.add_argument("--out", type=Path, metavar="results.csv|.jsonl", help="write one row per file (atomically)")
    d.add_argument("--batch-size", type=int, default=8, help="images per model batch (default: 8)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(d)
    d.set_defaults(func=run_detect)

    c = sub.add_parser("compare", help="worsened / improved / no change between a prior and a current study",
                       description="Compare a prior and a current study of one patient (MMXU-style question) and "
                                   "optionally draw both anomaly maps and the change map side by side.")
    c.add_argument("prior", type=Path, metavar="PRIOR")
    c.add_argument("current", type=Path, metavar="CURRENT")
    c.add_argument("--region", help="region named in the question, e.g. 'left lower lung zone'")
    c.add_argument("-o", "--out", type=Path, metavar="sidebyside.png", help="write the side-by-side PNG")
    c.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity in the picture (default: 0.5)")
    _common(c)
    c.set_defaults(func=run_compare)

    e = sub.add_parser("explain", help="heatmap of where the model sees an abnormality, over the image",
                       description="Detect, then draw the heatmap over the image with a colour bar.")
    e.add_argument("input", type=Path, metavar="FILE")
    e.add_argument("-o", "--out", type=Path, required=True, metavar="overlay.png", help="the overlay PNG to write")
    e.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity, 0-1 (default: 0.5)")
    e.add_argument("--heatmap", type=Path, metavar="heatmap.png", help="also write the raw heatmap (8-bit grey)")
    _common(e)
    e.set_defaults(func=run_explain)


# ------------------------------------------------------------------------------------------ helpers


def _service(args: argparse.Namespace):
    from medic_ad.serve.service import Service, load_model, resolve_checkpoint

    path = resolve_checkpoint(args.model)  # a missing model is reported before any input is read
    return Service(lambda: load_model(path, device=args.device), batch_size=getattr(args, "batch_size", 8))


def _load(service, path: Path, args: argparse.Namespace):
    return service.load(path, name=str(path), frame=args.frame, slice_index=args.slice_index, axis=args.axis)


def _check_png_target(out: Path | None) -> None:
    if out is not None and out.suffix.lower() != ".png":
        raise ValueError(f"{out}: the picture is written as PNG; name it *.png")
    if out is not None and out.is_dir():
        raise ValueError(f"{out}: is a folder; give a file name ending in .png")


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"--alpha must be between 0 and 1, got {alpha}")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2))


# ------------------------------------------------------------------------------------------ detect


def run_detect(args: argparse.Namespace) -> int:
    from medic_ad.serve.sanity import SanityError

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.out is not None and args.out.suffix.lower() not in (".csv", ".jsonl"):
        raise ValueError(f"{args.out}: results are written as .csv or .jsonl")
    if args.out is not None and args.out.is_dir():
        raise ValueError(f"{args.out}: is a folder; give a file name ending in .csv or .jsonl")
    service = _service(args)

    # Named files are checked (and decoded) up front: one refused file stops the command before
    # the model loads or anything is written. Folder contents are checked batch by batch.
    jobs: list[tuple[Path, Any]] = []  # (path, MedicalImage | None: decode later)
    for item in map(Path, args.inputs):
        if item.is_dir():
            found = walk_folder(item, skip=SIDECAR_SUFFIXES)
            if not found:
                raise ValueError(f"{item}: no files in this folder")
            jobs += [(p, None) for p in found]
        elif not item.exists():
            raise FileNotFoundError(f"{item}: no such file or folder")
        else:
            jobs.append((item, _load(service, item, args)))

    rows: list[dict[str, Any]] = []
    progress = None
    if any(image is None for _, image in jobs) and not (args.json or args.no_progress):
        from tqdm import tqdm

        progress = tqdm(total=len(jobs), unit="img", desc="detect", file=sys.stderr, dynamic_ncols=True)
    try:
        for start in range(0, len(jobs), args.batch_size):
            chunk = jobs[start:start + args.batch_size]
            ready: list[tuple[int, Any]] = []
            chunk_rows: list[dict[str, Any]] = []
            for path, image in chunk:
                row: dict[str, Any] = {"path": str(path)}
                if image is None:
                    try:
                        image = _load(service, path, args)
                    except SanityError as exc:
                        row.update(status="refused", reason=exc.reason, error=exc.message)
                    except OSError as exc:
                        row.update(status="refused", reason="unreadable",
                                   error=f"cannot read the file ({type(exc).__name__})")
                if image is not None:
                    ready.append((len(chunk_rows), image))
                chunk_rows.append(row)
            for (i, image), result in zip(ready, service.detect([im for _, im in ready])):
                chunk_rows[i].update(status="ok", **result.to_dict())
            rows += chunk_rows
            if progress is not None:
                progress.update(len(chunk))
    finally:
        if progress is not None:
            progress.close()

    if args.out is not None:
        _write_rows(args.out, rows)
    n_ok = sum(r["status"] == "ok" for r in rows)
    if args.json:
        _print_json(rows[0] if len(rows) == 1 and len(args.inputs) == 1 and not Path(args.inputs[0]).is_dir()
                    else rows)
    else:
        for r in rows:
            if r["status"] == "ok":
                verdict = "abnormal" if r["abnormal"] else "normal"
                print(f"{r['path']}\t{verdict}\tscore={r['score']:.3f}\t{r['answer']!r}")
            else:
                print(f"{r['path']}\trefused ({r['reason']})\t{r['error']}")
        summary = f"{n_ok} of {len(rows)} image(s) answered, {len(rows) - n_ok} refused"
        print(summary + (f"; results in {args.out}" if args.out else ""), file=sys.stderr)
    return 0


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    image = row.get("image") or {}
    return {
        "path": row["path"], "status": row["status"], "reason": row.get("reason", ""),
        "answer": row.get("answer", ""), "abnormal": row.get("abnormal", ""),
        "score": "" if row.get("score") is None else f"{row['score']:.6f}",
        "format": image.get("format", ""), "modality": image.get("modality") or "",
        "height": image.get("height", ""), "width": image.get("width", ""), "error": row.get("error", ""),
    }


def _write_rows(out: Path, rows: list[dict[str, Any]]) -> None:
    from medic_ad.serve.files import atomic_write_text

    if out.suffix.lower() == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(_flat(r) for r in rows)
        text = buf.getvalue()
    atomic_write_text(out, text)


# ------------------------------------------------------------------------------------------ compare


def run_compare(args: argparse.Namespace) -> int:
    from medic_ad.serve.overlay import comparison_png
    from medic_ad.serve.sanity import check_pair
    from medic_ad.serve.service import clean_region

    _check_png_target(args.out)
    _check_alpha(args.alpha)
    region = clean_region(args.region)
    service = _service(args)
    prior = _load(service, args.prior, args)
    current = _load(service, args.current, args)
    check_pair(prior, current, names=(str(args.prior), str(args.current)))
    result = service.compare(prior, current, region=region)
    payload = result.to_dict()
    if args.out is not None:
        from medic_ad.serve.files import atomic_write_bytes

        title = f"{result.label} (p = {result.probs[result.label]:.2f})"
        atomic_write_bytes(args.out, comparison_png(prior, current, result.prior_map, result.current_map,
                                                    change=result.change, alpha=args.alpha, title=title))
        payload["sidebyside"] = str(args.out)
    if args.json:
        _print_json(payload)
    else:
        probs = ", ".join(f"{k} {v:.3f}" for k, v in result.probs.items())
        print(f"{result.label}\t({probs})\t{result.answer!r}")
        if args.out is not None:
            print(f"side-by-side with change map: {args.out}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------ explain


def run_explain(args: argparse.Namespace) -> int:
    from medic_ad.serve.files import atomic_write_bytes
    from medic_ad.serve.overlay import heatmap_png, overlay_png

    _check_png_target(args.out)
    _check_png_target(args.heatmap)
    _check_alpha(args.alpha)
    service = _service(args)
    image = _load(service, args.input, args)
    result = service.explain(image)
    d = result
    title = f"{'abnormal' if d.abnormal else 'normal'} (score {d.score:.2f})"
    atomic_write_bytes(args.out, overlay_png(image, result.heatmap, alpha=args.alpha, title=title))
    if args.heatmap is not None:
        atomic_write_bytes(args.heatmap, heatmap_png(result.heatmap))
    payload = {**result.to_dict(), "overlay": str(args.out)}
    if args.heatmap is not None:
        payload["heatmap_png"] = str(args.heatmap)
    if args.json:
        _print_json(payload)
    else:
        print(f"{'abnormal' if d.abnormal else 'normal'}\tscore={d.score:.3f}\t{d.answer!r}")
        print(f"overlay: {args.out}", file=sys.stderr)
    return 0
