"""Run MEDIC-AD's CPU benchmarks (GitHub issue 7) and write one JSON per benchmark + the README table.

    python benchmarks/run.py                      # full run at the small config (≈ 10 min on 2 quiet cores)
    python benchmarks/run.py --quick              # tiny config, seconds: checks the code, numbers meaningless
    python benchmarks/run.py --only overhead,train_step --out benchmarks/results

Run on a quiet machine (``uptime`` load well under the core count) and run one benchmark process at a
time: every number is a ratio or rate from interleaved repeats in one process, but a busy machine still
widens the spreads. The GPU benchmark is separate: ``python benchmarks/gpu_7b.py`` (needs CUDA).
"""

from __future__ import annotations

import argparse
import gc
import inspect
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `medic_ad` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from benchmarks import common  # noqa: E402

BENCHMARKS = ("overhead", "prefill_vs_generate", "data_path", "train_step", "one_pass", "predict_throughput")


def _module(name: str):
    import importlib

    return importlib.import_module(f"benchmarks.{name}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="tiny config and 1-2 repeats: exercises every benchmark in seconds (numbers meaningless)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for <name>.json (default: benchmarks/results; with --quick a temporary folder)")
    p.add_argument("--only", default=",".join(BENCHMARKS),
                   help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: torch's own; 1 with --quick)")
    p.add_argument("--repeats", type=int, default=None, help="override the interleaved rounds per benchmark")
    p.add_argument("--readme", type=Path, default=None,
                   help="README whose results table to rewrite (default: benchmarks/README.md, never with --quick)")
    p.add_argument("--no-readme", action="store_true", help="do not touch any README")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    args.names = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads or args.quick:
        # quick: 1 thread — with other processes on the cores, OpenMP threads that wait on each other
        # make a tiny forward ~50× slower (measured: 780 ms at 2 threads vs 12 ms at 1 under load 6)
        torch.set_num_threads(args.threads or 1)
    torch.manual_seed(0)
    out = args.out or (Path(tempfile.mkdtemp(prefix="medic-ad-bench-quick-")) if args.quick else common.DEFAULT_RESULTS)
    readme = None if args.no_readme else (args.readme or (None if args.quick else common.DEFAULT_README))
    failures = []
    for name in args.names:
        log = common.Logger(prefix=name)
        machine = common.machine_info()
        started = common.utc_now()
        t0 = time.perf_counter()
        log(f"start ({'quick' if args.quick else 'full'}; load {machine['load_avg_1_5_15']}, "
            f"{machine['torch_num_threads']} torch threads)")
        try:
            fn = _module(name).run
            extra = {"results_dir": out} if "results_dir" in inspect.signature(fn).parameters else {}
            payload = fn(quick=args.quick, log=log, repeats=args.repeats, **extra)
        except Exception:  # noqa: BLE001 - report, go on with the others, exit non-zero
            traceback.print_exc()
            failures.append(name)
            continue
        payload = {"benchmark": name, "schema_version": common.SCHEMA_VERSION, "quick": args.quick,
                   "machine": machine, "machine_after": {"load_avg_1_5_15": common.machine_info()["load_avg_1_5_15"]},
                   "started_utc": started, "wall_s": round(time.perf_counter() - t0, 2), **payload}
        path = common.write_result(out, payload)
        for row in payload["summary"]:
            met = {True: "  [target met]", False: "  [target MISSED]", None: ""}[row["met"]]
            value = common._fmt(row["value"])
            print(f"  {row['metric']}: {value} {row['unit']}{met}", flush=True)
        log(f"wrote {path} ({payload['wall_s']} s)")
        gc.collect()
    if readme is not None:
        common.update_readme(readme, out)
        print(f"updated {readme}")
    print(f"results in {out}")
    if failures:
        print(f"FAILED: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
