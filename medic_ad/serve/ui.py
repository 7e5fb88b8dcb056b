"""Web UI (Gradio Blocks): one study -> answer, score, heatmap overlay; prior + current -> change map.

The handlers are plain functions of a :class:`~medic_ad.serve.service.Service` (``detect_study``,
``compare_studies``, ``redraw_*``), so tests call exactly what the browser triggers. A refusal is
shown as a readable message in the answer box, with its reason code, never as a stack trace.

Uploads arrive as bytes (``gr.File(type="binary")``) and go through the same sanity checks as the
CLI and the API; the uploaded file's name is never shown. Gradio itself keeps a copy of each upload
in its cache folder (``$GRADIO_TEMP_DIR``); ``delete_cache`` clears it every 10 minutes.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from medic_ad.serve.overlay import comparison_png, overlay_png
from medic_ad.serve.sanity import SanityError
from medic_ad.serve.service import Service

__all__ = ["build_ui", "compare_studies", "detect_study", "redraw_comparison", "redraw_overlay"]

INTRO = (
    "# MEDIC-AD\n"
    "Upload one study for an answer to *Is there any abnormality in this image?*, a score P(abnormal) and a "
    "heatmap; or a prior and a current study of one patient for *worsened / improved / no change* and a change "
    "map. PNG, JPEG, TIFF, DICOM and NIfTI are read from their content. **Research use only — not a medical "
    "device.**"
)


def _png_to_array(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"))


def _refusal(exc: SanityError) -> str:
    return f"### Refused\n{exc.message}\n\nreason: `{exc.reason}`"


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    return int(value)


def _read(service: Service, data: bytes | None, name: str, frame: Any, slice_index: Any):
    if data is None:
        raise SanityError("empty_file", "no file uploaded yet", name=name)
    return service.load(data, name=name, frame=_int_or_none(frame), slice_index=_int_or_none(slice_index))


def detect_study(service: Service, data: bytes | None, frame: Any = None, slice_index: Any = None,
                 alpha: float = 0.5) -> tuple[str, dict[str, float] | None, np.ndarray | None, Any]:
    """(answer markdown, score label, overlay picture, state for redraws)."""
    try:
        image = _read(service, data, "study", frame, slice_index)
        result = service.explain(image)
    except SanityError as exc:
        return _refusal(exc), None, None, None
    except ValueError as exc:
        return f"### Could not process this study\n{str(exc).splitlines()[0][:300]}", None, None, None
    d = result
    verdict = "abnormal" if d.abnormal else "normal"
    info = result.image
    markdown = (f"### Answer: {verdict}\n**Score** P(abnormal) = **{d.score:.3f}**\n\n"
                f"Model's words: `{d.answer.strip() or '(empty)'}`\n\n"
                f"Input: {info['format'].upper()}{' ' + info['modality'] if info['modality'] else ''}, "
                f"{info['width']} x {info['height']} px")
    state = (image, result.heatmap, verdict, d.score)
    return markdown, {"abnormal": d.score, "normal": 1.0 - d.score}, redraw_overlay(state, alpha), state


def redraw_overlay(state: Any, alpha: float) -> np.ndarray | None:
    """The overlay again at another opacity (no model call)."""
    if not state:
        return None
    image, heat, verdict, score = state
    return _png_to_array(overlay_png(image, heat, alpha=float(alpha), title=f"{verdict} (score {score:.2f})"))


def compare_studies(service: Service, prior_data: bytes | None, current_data: bytes | None, region: str | None = None,
                    frame: Any = None, slice_index: Any = None,
                    alpha: float = 0.5) -> tuple[str, dict[str, float] | None, np.ndarray | None, Any]:
    """(answer markdown, class probabilities, side-by-side picture with change map, state for redraws)."""
    try:
        prior = _read(service, prior_data, "prior", frame, slice_index)
        current = _read(service, current_data, "current", frame, slice_index)
        result = service.compare(prior, current, region=region or None)
    except SanityError as exc:
        return _refusal(exc), None, None, None
    except ValueError as exc:
        return f"### Could not process this pair\n{str(exc).splitlines()[0][:300]}", None, None, None
    c = result.to_dict()["change_map"]
    markdown = (f"### Answer: {result.label}\n**P({result.label})** = **{result.probs[result.label]:.3f}**\n\n"
                f"Model's words: `{result.answer.strip() or '(empty)'}`\n\n"
                f"Change map (current − prior): {100 * c['worse_fraction']:.1f}% of pixels worse, "
                f"{100 * c['better_fraction']:.1f}% better")
    state = (prior, current, result.prior_map, result.current_map, result.change,
             f"{result.label} (p = {result.probs[result.label]:.2f})")
    return markdown, dict(result.probs), redraw_comparison(state, alpha), state


def redraw_comparison(state: Any, alpha: float) -> np.ndarray | None:
    if not state:
        return None
    prior, current, prior_map, current_map, change, title = state
    return _png_to_array(comparison_png(prior, current, prior_map, current_map, change=change, alpha=float(alpha),
                                        title=title))


def build_ui(service: Service, *, max_waiting: int = 8):
    """The Blocks app; mount it with ``gr.mount_gradio_app`` (``medic_ad.serve.api.create_app(ui=True)``)."""
    import gradio as gr

    with gr.Blocks(title="MEDIC-AD", analytics_enabled=False, delete_cache=(600, 600)) as demo:
        gr.Markdown(INTRO)
        with gr.Tab("One study", elem_id="tab-study"):
            with gr.Row():
                with gr.Column(scale=1):
                    study = gr.File(label="Study (PNG, JPEG, TIFF, DICOM, NIfTI)", type="binary", elem_id="study-file")
                    with gr.Accordion("Multi-frame DICOM / NIfTI", open=False):
                        frame = gr.Number(label="frame (default: middle)", precision=0, value=None)
                        slice_index = gr.Number(label="NIfTI slice (default: middle)", precision=0, value=None)
                    run = gr.Button("Detect and explain", variant="primary", elem_id="detect-button")
                with gr.Column(scale=2):
                    answer = gr.Markdown("Upload a study and press **Detect and explain**.", elem_id="detect-answer")
                    score = gr.Label(label="score", num_top_classes=2, elem_id="detect-score")
                    opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="heatmap opacity", elem_id="opacity")
                    overlay = gr.Image(label="heatmap overlay", type="numpy", interactive=False, elem_id="overlay",
                                       format="png")
            state = gr.State(None)
            run.click(lambda d, f, s, a: detect_study(service, d, f, s, a), [study, frame, slice_index, opacity],
                      [answer, score, overlay, state], api_name="detect")
            opacity.change(redraw_overlay, [state, opacity], [overlay], api_name=False)

        with gr.Tab("Prior / current", elem_id="tab-compare"):
            with gr.Row():
                with gr.Column(scale=1):
                    prior = gr.File(label="Prior study", type="binary", elem_id="prior-file")
                    current = gr.File(label="Current study", type="binary", elem_id="current-file")
                    region = gr.Textbox(label="region (optional)", placeholder="e.g. left lower lung zone",
                                        max_lines=1)
                    with gr.Accordion("Multi-frame DICOM / NIfTI", open=False):
                        pframe = gr.Number(label="frame (default: middle)", precision=0, value=None)
                        pslice = gr.Number(label="NIfTI slice (default: middle)", precision=0, value=None)
                    cmp_button = gr.Button("Compare", variant="primary", elem_id="compare-button")
                with gr.Column(scale=2):
                    cmp_answer = gr.Markdown("Upload a prior and a current study and press **Compare**.",
                                             elem_id="compare-answer")
                    probs = gr.Label(label="probabilities", elem_id="compare-probs")
                    cmp_opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="map opacity",
                                            elem_id="compare-opacity")
                    sidebyside = gr.Image(label="prior | current | change map (worse ↔ better)", type="numpy",
                                          interactive=False, elem_id="sidebyside", format="png")
            cmp_state = gr.State(None)
            cmp_button.click(lambda a, b, r, f, s, al: compare_studies(service, a, b, r, f, s, al),
                             [prior, current, region, pframe, pslice, cmp_opacity],
                             [cmp_answer, probs, sidebyside, cmp_state], api_name="compare")
            cmp_opacity.change(redraw_comparison, [cmp_state, cmp_opacity], [sidebyside], api_name=False)
    demo.queue(max_size=max(1, max_waiting), default_concurrency_limit=1)
    return demo
