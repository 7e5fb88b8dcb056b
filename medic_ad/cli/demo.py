"""``medic-ad demo [--out DIR] [--quick]``: the main job on the embedded tiny default."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="train stages 1-3 from the shipped tiny backbone, evaluate, write a report",
        description="From the pretrained tiny Qwen2.5-VL shipped with the package (medic_ad/assets/tiny_backbone, "
                    "built by the stage-0 recipe; its MANIFEST.json says how), run stages 1 → 2 → 3 on "
                    "../shared/data and the synthetic control, evaluate held-back splits and write "
                    "DIR/report.md, DIR/metrics.json, DIR/overlays/ and DIR/checkpoint/.")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--compare-start", type=int, default=0, metavar="STEPS",
                   help="also train stage 1 for STEPS steps from a random and from the pretrained backbone and "
                        "compare them on Br35H val (what stage 0 buys; adds minutes)")
    p.add_argument("--quick", action="store_true", help="a few steps per stage (about 2-3 minutes): what tests run")
    p.add_argument("--data", default=None, help="shared data folder (default: $MEDIC_AD_DATA or ../shared/data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default=None, metavar="DIR",
                   help="another Qwen2.5-VL folder to start from, e.g. one rebuilt with "
                        "recipes/configs/tiny/stage0_pretrain.yaml (default: the shipped tiny backbone)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medic_ad.demo import run_demo

    run_demo(args.out, quick=args.quick, data_dir=args.data, seed=args.seed, compare_start=args.compare_start,
             backbone=args.backbone)
    return 0
