"""Data path throughput per core (issue 7 §3): is the CPU side fast enough that a GPU never waits?

Per file: ``read_image`` (sniff + decode + windowing → float [0, 1]) → ``MedicalImage.to_pil`` →
the processor's image preprocessing (resize, normalise, patchify → ``pixel_values``), in one thread
(``torch.set_num_threads(1)`` and BLAS/OpenMP pools limited to 1 by threadpoolctl), so the rate is
images/s **per core**. Two preprocessing settings: the clinical input of the overhead benchmark
(min = max pixels = 448², ≈ 256 image tokens, aspect ratio kept) and Qwen2.5-VL's own defaults (native size rounded to 28, ≤ 12.8 MP as in Qwen2.5-VL-7B's
preprocessor_config.json).

Files: real brain-MRI PNGs from the shared data, and DICOM test files from pydicom's own data and the
pydicom-data package (CT 128², MR 64², RLE MR, a 512² CT, a 600×800 RGB ultrasound).

What a 7B forward needs: images/s one H100 prefills at 50 % of its bf16 peak for a one-image
detection prompt at 448² (FLOPs from ``benchmarks/flops.py``), divided by the per-core rate =
cores needed to keep it fed. ``gpu_7b.json`` in the same results folder, when present, replaces the
estimate with the measured GPU rate.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks import common, flops

DICOM_FILES = {  # name in pydicom's test data → what it is
    "CT_small.dcm": "CT 128×128, 16-bit",
    "MR_small.dcm": "MR 64×64, 16-bit",
    "MR_small_RLE.dcm": "MR 64×64, RLE lossless",
    "693_UNCI.dcm": "CT 512×512, 16-bit (pydicom-data)",
    "OBXXXX1A.dcm": "US 600×800 RGB (pydicom-data)",
}
H100_PREFILL_SHARE = 0.5


def dicom_files() -> dict[str, Path]:
    out = {}
    try:
        from pydicom.data import get_testdata_file
    except ImportError:
        return out
    for name in DICOM_FILES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = get_testdata_file(name)
        except Exception:  # noqa: BLE001 - a missing optional data package just drops the file
            path = None
        if path:
            out[name] = Path(path)
    return out


def processors():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    common_kw = dict(patch_size=14, temporal_patch_size=2, merge_size=2)
    return {
        "clinical_448": Qwen2VLImageProcessorPil(min_pixels=448 * 448, max_pixels=448 * 448, **common_kw),
        "qwen_default": Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=28 * 28 * 16384, **common_kw),
    }


def seven_b_need(results_dir: Path | None) -> dict[str, Any]:
    """Images/s one GPU can take for 448² detection (measured if gpu_7b.json is there, else estimated)."""
    from medic_ad.data.templates import DETECTION_PROMPT
    from medic_ad.data.templates import ChatExample

    if results_dir is not None and (results_dir / "gpu_7b.json").is_file():
        try:
            g = json.loads((results_dir / "gpu_7b.json").read_text())
            if not g.get("dry_run"):
                best = g["results"]["detection"]["best_images_per_s"]
                return {"source": f"measured ({g['machine']['gpu']['name']}, gpu_7b.json)", "images_per_s": best}
        except (KeyError, TypeError, json.JSONDecodeError):
            pass
    # count the chat text around the image with the project's processor (tiny tokenizer ≈ Qwen's for this prompt)
    from PIL import Image

    from medic_ad.models.qwen2_5_vl.processing import MedicADProcessor
    from medic_ad.models.qwen2_5_vl.tiny import build_tiny_tokenizer

    proc = MedicADProcessor(tokenizer=build_tiny_tokenizer(), image_processor=processors()["clinical_448"])
    batch = proc([ChatExample([Image.new("RGB", (448, 448))], DETECTION_PROMPT)])
    tokens = int(batch["input_ids"].shape[1])
    text = flops.QWEN2_5_VL_7B_TEXT
    per_image = flops.prefill_flops(tokens=tokens, grids=[(32, 32)], text=text, vision=flops.QWEN2_5_VL_7B_VISION,
                                    prompts=10, lora_r=16)["total"]
    rate = H100_PREFILL_SHARE * 989e12 / per_image
    return {"source": f"estimate: H100 SXM at {H100_PREFILL_SHARE:.0%} of 989 TFLOP/s bf16, "
                      f"{per_image / 1e12:.2f} TFLOP per 448² detection prefill ({tokens} tokens)",
            "images_per_s": rate, "flops_per_image": per_image, "tokens": tokens}


def run(*, quick: bool, log: Callable[[str], None], repeats: int | None = None,
        results_dir: Path | None = None) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from medic_ad.data.io import read_image

    repeats = repeats or (1 if quick else 5)
    groups: dict[str, list[Path]] = {"png_br35h": common.png_files(4 if quick else 32)}
    for name, path in dicom_files().items():
        groups[f"dicom_{name}"] = [path]
    groups = {k: v for k, v in groups.items() if v}
    procs = processors()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    try:
        with threadpool_limits(limits=1), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for group, files in groups.items():
                decoded = [read_image(p) for p in files]  # warm the readers (lazy pydicom import, caches)
                pils = [m.to_pil() for m in decoded]
                fns: dict[str, Callable[[], Any]] = {
                    "read_image": lambda files=files: [read_image(p) for p in files],
                    "to_pil": lambda decoded=decoded: [m.to_pil() for m in decoded],
                }
                for pname, p in procs.items():
                    fns[f"preprocess_{pname}"] = lambda p=p, pils=pils: [p(images=[im], return_tensors="pt")
                                                                          for im in pils]
                samples = common.measure(fns, warmup=1, repeats=repeats)
                st = common.all_stats(samples)
                per_image = {k: v["median_s"] / len(files) for k, v in st.items()}
                grids = {pname: [int(x) for x in p(images=[pils[0]], return_tensors="pt")["image_grid_thw"][0]]
                         for pname, p in procs.items()}
                out[group] = {
                    "files": len(files),
                    "source_shape": list(decoded[0].shape),
                    "what": DICOM_FILES.get(group.removeprefix("dicom_"), "brain MRI PNG, shared data"),
                    "grid_thw": grids,
                    "per_image_s": per_image,
                    "end_to_end_images_per_s_per_core": {
                        pname: 1.0 / (per_image["read_image"] + per_image["to_pil"] + per_image[f"preprocess_{pname}"])
                        for pname in procs
                    },
                    "timing": st,
                }
                log(f"{group}: {out[group]['end_to_end_images_per_s_per_core']['clinical_448']:.0f} images/s/core "
                    f"(448²)")
    finally:
        torch.set_num_threads(prev_threads)
    need = seven_b_need(results_dir)
    summary = []
    for group, r in out.items():
        rate = r["end_to_end_images_per_s_per_core"]["clinical_448"]
        r["cores_to_feed_one_7b_gpu"] = need["images_per_s"] / rate
        summary.append(common.summary_row(f"{group} → 448² pixel_values", rate, "images/s/core",
                                          note=f"{r['cores_to_feed_one_7b_gpu']:.1f} cores feed one 7B GPU"))
    slowest = min(out, key=lambda g: out[g]["end_to_end_images_per_s_per_core"]["clinical_448"])
    summary.append(common.summary_row("7B detection prefill needs (one GPU)", need["images_per_s"], "images/s",
                                      note=need["source"]))
    summary.append(common.summary_row(f"cores to feed one 7B GPU (slowest: {slowest})",
                                      out[slowest]["cores_to_feed_one_7b_gpu"], "cores"))
    return {
        "config": {"threads": 1, "repeats": repeats, "processors": {k: {"min_pixels": v.size.shortest_edge,
                                                                       "max_pixels": v.size.longest_edge}
                                                                   for k, v in procs.items()},
                   "pipeline": "read_image → MedicalImage.to_pil → Qwen2VLImageProcessorPil"},
        "input": {"image_size": [448, 448], "groups": {g: r["source_shape"] for g, r in out.items()}},
        "results": {"groups": out, "seven_b_need": need},
        "summary": summary,
    }
