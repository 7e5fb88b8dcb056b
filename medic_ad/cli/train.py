"""``medic-ad train --config FILE [key=value …] [--resume]``: run one training stage."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="run one training stage from a YAML config",
                       description="Run one stage (0 pretrain, 1 anomaly, 2 difference, 3 heatmap) from a YAML "
                                   "config; key=value arguments override config keys (dotted, e.g. optim.lr=1e-4).")
    p.add_argument("--config", required=True, help="YAML config (see recipes/configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medic_ad.training import load_config, train
    from medic_ad.training.checkpoint import CheckpointError

    cfg = load_config(args.config, args.overrides)
    try:
        result = train(cfg, resume=args.resume)
    except CheckpointError as exc:
        raise ValueError(str(exc)) from None
    print(f"stage {cfg.stage}: {result.steps} steps in {result.seconds:.0f} s, final loss {result.final_loss:.4f} "
          f"→ {result.output}")
    return 0
