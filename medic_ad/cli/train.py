"""``medic-ad train --config FILE [key=value …] [--resume | --dry-run]``: run one training stage."""

from __future__ import annotations

import argparse

ENGINES = ("single", "ddp", "zero2", "zero3", "fsdp")  # training.dry_run.ENGINES, without importing torch here


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="run one training stage from a YAML config",
                       description="Run one stage (0 pretrain, 1 anomaly, 2 difference, 3 heatmap) from a YAML "
                                   "config; key=value arguments override config keys (dotted, e.g. optim.lr=1e-4).")
    p.add_argument("--config", required=True, help="YAML config (see recipes/configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    dry = p.add_argument_group("dry run (reads only the backbone's config.json; builds on the meta device)")
    dry.add_argument("--dry-run", action="store_true",
                     help="print parameters, trainable parameters, tokens per sample and estimated memory per GPU")
    dry.add_argument("--engine", choices=ENGINES, default=None, help="engine to estimate for (default single)")
    dry.add_argument("--num-gpus", type=int, default=None, help="GPUs of the run (default 1)")
    dry.add_argument("--accelerate-config", default=None,
                     help="read engine and GPU count from an accelerate config (recipes/accelerate/*.yaml)")
    dry.add_argument("--json", action="store_true", help="with --dry-run: print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medic_ad.training import load_config, train
    from medic_ad.training.checkpoint import CheckpointError

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        return _dry_run(cfg, args)
    if args.engine or args.num_gpus or args.accelerate_config or args.json:
        raise ValueError("--engine, --num-gpus, --accelerate-config and --json go with --dry-run "
                         "(a real run takes its engine from accelerate launch)")
    try:
        result = train(cfg, resume=args.resume)
    except CheckpointError as exc:
        raise ValueError(str(exc)) from None
    print(f"stage {cfg.stage}: {result.steps} steps in {result.seconds:.0f} s, final loss {result.final_loss:.4f} "
          f"→ {result.output}")
    return 0


def _dry_run(cfg, args: argparse.Namespace) -> int:
    import json

    from medic_ad.training.dry_run import dry_run, engine_from_accelerate_config

    if args.resume:
        raise ValueError("--dry-run and --resume do not go together")
    engine, gpus = "single", 1
    if args.accelerate_config:
        engine, gpus = engine_from_accelerate_config(args.accelerate_config)
    engine = args.engine or engine
    gpus = args.num_gpus or gpus
    if args.engine and args.engine != "single" and not args.num_gpus and not args.accelerate_config:
        raise ValueError(f"--engine {args.engine} needs --num-gpus N (or --accelerate-config)")
    if gpus < 1:
        raise ValueError("--num-gpus must be ≥ 1")
    report, _ = dry_run(cfg, engine=engine, num_gpus=gpus)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.table())
    return 0
