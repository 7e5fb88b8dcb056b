"""Shared benchmark plumbing: sizes, model builders, inputs, interleaved timing, memory, machine, output.

Timing rules (every benchmark): warm-up calls first, then ``repeats`` rounds in which every variant
runs once, the order rotated each round (interleaving, so load drift hits all variants alike); we
report medians with the inter-quartile range, and ratios as the median of the per-round ratios.
Nothing here asserts a time: speed targets are reported as measured ratios, never tested.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from medic_ad.machine import cpu_model

SCHEMA_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = REPO_ROOT / "benchmarks" / "results"
DEFAULT_README = REPO_ROOT / "benchmarks" / "README.md"
README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"
REQUIRED_KEYS = ("benchmark", "schema_version", "quick", "machine", "started_utc", "wall_s", "config", "input",
                 "results", "summary")
SUMMARY_KEYS = ("metric", "value", "unit", "target", "met")


# ---------------------------------------------------------------------------------------------- sizes
@dataclass
class BenchSize:
    """A backbone size, the MEDIC-AD module sizes for it and the square input side in pixels."""

    name: str
    backbone: dict[str, Any]
    modules: dict[str, Any]
    image_size: int

    @property
    def image_tokens(self) -> int:
        return (self.image_size // 28) ** 2


def bench_size(quick: bool) -> BenchSize:
    """``small``: the configuration issue 7 measures at (≥ 448×448 → 256 image tokens, design doc §5).
    ``quick``: the tiny test backbone at 112×112 (16 image tokens), only to exercise the code."""
    if quick:
        return BenchSize(
            name="quick-tiny",
            backbone=dict(min_pixels=112 * 112, max_pixels=112 * 112),
            modules=dict(anomaly_dim=64, qformer_dim=64, qformer_layers=1, heatmap_dim=32, lora_r=8, lora_alpha=16),
            image_size=112,
        )
    return BenchSize(
        name="small",
        backbone=dict(
            text_hidden_size=512, text_intermediate_size=2688, text_layers=4, text_heads=8, text_kv_heads=4,
            mrope_section=[8, 12, 12],  # head_dim 64 → sums to 32
            vision_depth=8, vision_hidden_size=256, vision_intermediate_size=684, vision_heads=4,
            fullatt_block_indexes=[1, 3, 5, 7], window_size=112,
            min_pixels=448 * 448, max_pixels=448 * 448,
        ),
        # MedicADConfig defaults (anomaly/qformer dim 256, 2 Q-Former layers, 16 <Ano>, 16 <Diff>, LoRA r 16)
        modules=dict(),
        image_size=448,
    )


def build_backbone(size: BenchSize, *, seed: int = 0):
    """The bare Qwen2.5-VL (no LoRA, no hooks) and its processor; same weights for the same seed."""
    from medic_ad.models.qwen2_5_vl.tiny import TinyBackboneConfig, build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(TinyBackboneConfig(**size.backbone), seed=seed)


def build_medic(size: BenchSize, *, seed: int = 0, **overrides: Any):
    """MEDIC-AD on :func:`build_backbone` ``(size, seed)`` — exactly ``MedicAD.tiny``'s recipe with our sizes."""
    import torch

    from medic_ad.models.builders import build_medic_ad
    from medic_ad.models.config import MedicADConfig
    from medic_ad.models.qwen2_5_vl.backbone import Backbone

    model, processor = build_backbone(size, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        return build_medic_ad(Backbone(model=model, processor=processor, source="benchmark"),
                              MedicADConfig(**{**size.modules, **overrides}))


def bare_processor(processor):
    """The same tokenizer and image processor with no ``<Ano>``/``<Diff>`` slots: stock Qwen2.5-VL inputs."""
    from medic_ad.models.qwen2_5_vl.processing import MedicADProcessor

    return MedicADProcessor(tokenizer=processor.tokenizer, image_processor=processor.image_processor,
                            num_ano_tokens=0, num_diff_tokens=0)


def shared_data_dir() -> Path:
    return Path(os.environ.get("MEDIC_AD_DATA", REPO_ROOT.parent / "shared" / "data"))


def png_files(limit: int) -> list[Path]:
    """Real brain-MRI PNGs from the shared data (alternating tumour / no tumour), if present."""
    root = shared_data_dir() / "br35h"
    yes = sorted((root / "yes").glob("*.png"))
    no = sorted((root / "no").glob("*.png"))
    out: list[Path] = []
    for a, b in zip(yes, no):
        out += [a, b]
    out += yes[len(no):] + no[len(yes):]
    return out[:limit]


def load_images(n: int, size: int, *, seed: int = 0):
    """``n`` RGB PIL images of ``size``×``size``: shared PNGs when available, else seeded synthetic ones."""
    import numpy as np
    from PIL import Image

    files = png_files(n)
    images = []
    if len(files) == n:
        from medic_ad.data.io import read_image

        for path in files:
            images.append(read_image(path).to_pil().resize((size, size), Image.BILINEAR))
        return images
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        base = 0.3 + 0.1 * rng.standard_normal((size, size))
        if i % 2 == 0:  # a bright blob: "abnormal"
            cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
            base += 0.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 12) ** 2))
        images.append(Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8)).convert("RGB"))
    return images


# ---------------------------------------------------------------------------------------------- timing
def measure(
    fns: dict[str, Callable[[], Any]],
    *,
    warmup: int,
    repeats: int,
    sync: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds per call of every function, interleaved: round r runs the variants rotated by r.

    ``clock``: wall time by default; ``time.process_time`` (this process's CPU seconds) is steadier on a
    shared machine with one torch thread, but counts spin-waiting threads when there are several.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    if sync:
        sync()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t0 = clock()
            fns[name]()
            if sync:
                sync()
            samples[name].append(clock() - t0)
    return samples


def _quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


def stats(samples: Sequence[float]) -> dict[str, Any]:
    """Median, quartiles, IQR, min/max and n of a list of seconds."""
    q1, med, q3 = _quartiles(samples)
    return {"median_s": med, "q1_s": q1, "q3_s": q3, "iqr_s": q3 - q1, "min_s": min(samples),
            "max_s": max(samples), "n": len(samples), "samples_s": [round(x, 6) for x in samples]}


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float]:
    """Median and quartiles of the per-round ratios a_r / b_r (rounds are interleaved, so paired)."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    q1, med, q3 = _quartiles(ratios)
    return {"median": med, "q1": q1, "q3": q3}


def all_stats(samples: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    return {name: stats(xs) for name, xs in samples.items()}


# ---------------------------------------------------------------------------------------------- memory
def proc_status_kib(field_name: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (VmRSS: resident now, VmHWM: resident high-water mark)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field_name}:\s+(\d+)\s+kB", text, re.M)
    return int(m.group(1)) if m else None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- machine
def _cgroup_cpus() -> float | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _mem_total_gib() -> float | None:
    try:
        m = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    except OSError:
        return None
    return round(int(m.group(1)) / 2**20, 1) if m else None


def machine_info() -> dict[str, Any]:
    """What the numbers were taken on: CPU, cores, load, memory, library versions, threads, GPU."""
    import torch
    import transformers

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "cgroup_cpu_limit": _cgroup_cpus(),
        "mem_total_gib": _mem_total_gib(),
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_num_threads": torch.get_num_threads(),
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                       "cuda": torch.version.cuda, "capability": f"{props.major}.{props.minor}"}
    return info


def machine_label(m: dict[str, Any]) -> str:
    """One short line for the README table."""
    if m.get("gpu"):
        return f"{m['gpu']['name']} (torch {m['torch']})"
    return (f"{m['cpu_model']}, {m['usable_cpus']} cores ({m['logical_cpus']} logical), "
            f"{m.get('mem_total_gib')} GiB, torch {m['torch']}, {m['torch_num_threads']} torch threads")


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------- output
def summary_row(metric: str, value: float | None, unit: str, *, target: str | None = None,
                met: bool | None = None, note: str | None = None) -> dict[str, Any]:
    """One line of a benchmark's headline table; ``met`` is None where there is no target."""
    if value is not None and (math.isnan(value) or math.isinf(value)):
        value = None
    return {"metric": metric, "value": value, "unit": unit, "target": target, "met": met, "note": note}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if hasattr(x, "__dataclass_fields__"):
        return _jsonable(asdict(x))
    if hasattr(x, "item") and callable(x.item):  # numpy / torch scalars
        return _jsonable(x.item())
    return x


def write_result(out_dir: Path, payload: dict[str, Any]) -> Path:
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise ValueError(f"benchmark result lacks {missing}")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{payload['benchmark']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable(payload), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        a = abs(value)
        if a == 0:
            return "0"
        if a >= 100:
            return f"{value:.0f}"
        if a >= 10:
            return f"{value:.1f}"
        if a >= 0.1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def results_table(results_dir: Path, readme_dir: Path | None = None) -> str:
    """Markdown table of every ``*.json`` summary in ``results_dir``, each row with its machine and time."""
    rows = []
    machines: dict[str, int] = {}
    for path in sorted(results_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict) or "summary" not in data:
            continue
        label = machine_label(data["machine"])
        ref = machines.setdefault(label, len(machines) + 1)
        link = os.path.relpath(path, readme_dir) if readme_dir else path.name
        mode = "quick" if data.get("quick") else ("dry-run" if data.get("dry_run") else "full")
        load = (data["machine"].get("load_avg_1_5_15") or [None])[0]
        for row in data["summary"]:
            met = {True: "✅", False: "❌", None: ""}[row.get("met")]
            rows.append(f"| [{data['benchmark']}]({link}) | {row['metric']} | {_fmt(row['value'])} {row['unit']} "
                        f"| {row.get('target') or ''} {met} | M{ref} | {_fmt(load)} | {data['started_utc']} | {mode} |")
    if not rows:
        return "_No results yet: run `python benchmarks/run.py`._"
    head = ["| benchmark | metric | value | target | machine | load 1 min at start | taken (UTC) | mode |",
            "|---|---|---|---|---|---|---|---|"]
    legend = [""] + [f"- **M{ref}**: {label}" for label, ref in machines.items()]
    return "\n".join(head + rows + legend)


def update_readme(readme: Path, results_dir: Path) -> None:
    """Rewrite the part of ``readme`` between the results markers (appended when the markers are absent)."""
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    block = f"{README_START}\n{results_table(results_dir, readme.parent)}\n{README_END}"
    if README_START in text and README_END in text:
        head, rest = text.split(README_START, 1)
        _, tail = rest.split(README_END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Results\n\n" + block + "\n"
    readme.write_text(text)


@dataclass
class Logger:
    """Progress lines, prefixed with the benchmark's name."""

    prefix: str = ""

    def __call__(self, msg: str) -> None:
        print(f"[{self.prefix}] {msg}", flush=True)
