"""One request, one vision pass (issue 19; target: ``explain`` / ``detect`` time per image ≤ 1.3).

``explain`` answers like ``detect`` and adds the heatmap decoder over the *same* forward pass: the
model API returns everything its one forward computed, so the service never runs the vision tower
twice for one request. Measured, interleaved in one process on the same images (batch 1, as the
service runs a request):

* ``detect``: one vision pass + one ``generate`` (answer and score, the anomaly map);
* ``explain``: the same + the heatmap decoder;
* ``detect_then_explain``: the two-call path a service without the one-pass API takes (detect, then
  explain again) — the cost the one-pass result avoids;
* ``compare`` (one pair): the result carries both anomaly maps, against ``compare`` + a second
  detection pass over the two studies for their maps.

The counted vision passes per call are recorded next to the times (``encode_images`` calls).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from benchmarks import common

TARGET_RATIO = 1.3


def _count_vision(model) -> dict[str, int]:
    counter = {"vision": 0}
    encode = model.encode_images

    def counting(*args, **kwargs):
        counter["vision"] += 1
        return encode(*args, **kwargs)

    model.encode_images = counting
    return counter


def run(*, quick: bool, log: Callable[[str], None], repeats: int | None = None) -> dict[str, Any]:
    size = common.bench_size(quick)
    warmup, repeats = (1, repeats or 2) if quick else (1, repeats or 9)
    log(f"building MEDIC-AD ({size.name}, {size.image_size}×{size.image_size}, LoRA merged as served)")
    model = common.build_medic(size).merge_lora()
    images = common.load_images(2, size.image_size)
    image, prior, current = images[0], images[0], images[1]
    fns = {
        "detect": lambda: model.detect(image),
        "explain": lambda: model.explain(image),
        "detect_then_explain": lambda: (model.detect(image), model.explain(image)),
        "compare": lambda: model.compare(prior, current),
        "compare_then_maps": lambda: (model.compare(prior, current), model.detect([prior, current])),
    }
    counter = _count_vision(model)
    passes = {}
    with torch.inference_mode():
        for name, fn in fns.items():
            counter["vision"] = 0
            fn()
            passes[name] = counter["vision"]
        log(f"{warmup} warm-up + {repeats} interleaved rounds of {', '.join(fns)}")
        samples = common.measure(fns, warmup=warmup, repeats=repeats)
    ratio = common.paired_ratio(samples["explain"], samples["detect"])
    two_call = common.paired_ratio(samples["detect_then_explain"], samples["explain"])
    compare_two = common.paired_ratio(samples["compare_then_maps"], samples["compare"])
    summary = [
        common.summary_row("explain / detect time per image", ratio["median"], "×",
                           target=f"≤ {TARGET_RATIO}", met=ratio["median"] <= TARGET_RATIO),
        common.summary_row("detect then explain (two calls) / explain (one pass)", two_call["median"], "×"),
        common.summary_row("compare + a detection pass for the maps / compare (maps in the result)",
                           compare_two["median"], "×"),
        common.summary_row("vision passes: explain", passes["explain"], "calls"),
        common.summary_row("vision passes: compare (two studies)", passes["compare"], "calls"),
    ]
    return {"config": {"size": size.name, "warmup": warmup, "repeats": repeats},
            "input": {"image_size": [size.image_size, size.image_size], "batch": 1, "images": 1, "pairs": 1},
            "results": {"vision_passes": passes, "timing": common.all_stats(samples),
                        "ratios": {"explain_over_detect": ratio, "two_calls_over_explain": two_call,
                                   "compare_then_maps_over_compare": compare_two}},
            "summary": summary}
