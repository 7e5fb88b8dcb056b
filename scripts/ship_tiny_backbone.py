"""Copy a finished stage-0 run's backbone into the package (``medic_ad/assets/tiny_backbone``) with its
manifest: the command that rebuilds it, the commit, the data, the steps, the wall time, every file's
SHA-256. Maintainers run it after ``medic-ad train --config recipes/configs/tiny/stage0_pretrain.yaml``::

    python scripts/ship_tiny_backbone.py RUN_DIR --commit HASH --wall-s SECONDS \\
        --command "medic-ad train --config recipes/configs/tiny/stage0_pretrain.yaml output_dir=RUN_DIR"
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medic_ad.models.qwen2_5_vl.shipped import MANIFEST_FILE, file_sha256, verify_tiny_backbone  # noqa: E402
from medic_ad.machine import cpu_model  # noqa: E402
from medic_ad.paths import shared_data_dir, tiny_backbone_dir  # noqa: E402
from medic_ad.training.config import load_config  # noqa: E402

MAX_BYTES = 30 * 1024 * 1024
DATA_SUMMARY = "data_summary.json"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="the stage-0 run's output_dir (holds final/, metrics.jsonl)")
    p.add_argument("--command", required=True, help="the command that produced the run")
    p.add_argument("--commit", required=True, help="the commit the run's code was at")
    p.add_argument("--wall-s", type=float, required=True, help="the run's wall time in seconds")
    p.add_argument("--config", type=Path, default=Path("recipes/configs/tiny/stage0_pretrain.yaml"))
    p.add_argument("--note", default=None, help="anything else a reader of the manifest must know")
    args = p.parse_args()

    final = args.run_dir / "final"
    weights = final / "model.safetensors"
    if not weights.is_file():
        raise SystemExit(f"{final}: no model.safetensors; is the run finished?")
    files = sorted(f for f in final.iterdir() if f.is_file())
    size = sum(f.stat().st_size for f in files)
    if size > MAX_BYTES:
        raise SystemExit(f"{final}: {size} bytes, above the {MAX_BYTES}-byte budget for a shipped backbone")
    records = [json.loads(line) for line in (args.run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = records[-50:]
    cfg = load_config(args.config)
    # the training ids (for leakage audits) with the machine's data folder written as ${data}
    data_summary = (args.run_dir / "data_summary.json").read_text().replace(str(shared_data_dir()), "${data}")
    manifest = {
        "what": "the tiny analogue of Lingshu: a Qwen2.5-VL trained from random by the stage-0 recipe "
                "(modality questions, masked-patch reconstruction, CutPaste localisation; no abnormality label)",
        "command": args.command,
        "commit": args.commit,
        "config": str(args.config),
        "model": cfg.model,
        "optim": {"steps": records[-1]["step"], "batch_size": cfg.optim.batch_size, "lr": cfg.optim.lr,
                  "warmup_steps": cfg.optim.warmup_steps},
        "seed": cfg.seed,
        "steps": records[-1]["step"],
        "wall_s": args.wall_s,
        "final_losses_mean_of_last_50_steps": {k: round(sum(r[k] for r in last) / len(last), 5)
                                               for k in ("loss", "lm", "recon", "paste") if k in last[0]},
        "data": [{"name": s.name, "root": s.root.replace(str(shared_data_dir()), "${data}") if s.root else None,
                  "split": s.split, "weight": s.weight, "options": s.options} for s in cfg.data],
        "data_summary": DATA_SUMMARY,
        "machine": {"cpu": cpu_model(), "torch": torch.__version__, "transformers": transformers.__version__,
                    "python": platform.python_version()},
        "weights_sha256": file_sha256(weights),
        "files": {},
    }
    if args.note:
        manifest["note"] = args.note
    dest = tiny_backbone_dir()
    # written beside the destination and swapped in whole: a failed copy never leaves a mixed folder
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny_backbone.", dir=dest.parent))
    for f in files:
        shutil.copy2(f, staging / f.name)
    (staging / DATA_SUMMARY).write_text(data_summary)
    manifest["files"] = {f.name: file_sha256(f) for f in sorted(staging.iterdir())}
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    verify_tiny_backbone(staging)
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    print(f"{dest}: {len(files)} files, {size} bytes, weights {manifest['weights_sha256'][:16]}…")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
