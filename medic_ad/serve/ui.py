"""Web UI (Gradio Blocks): one image -> answer, score, heatmap overlay; prior + current -> change map;
a series (several files or a zip) -> the study's answer and a slice scroller of overlays.

The handlers are plain functions of a :class:`~medic_ad.serve.service.Service` (``detect_study``,
``compare_studies``, ``analyse_series``, ``redraw_*``, ``show_slice``), so tests call exactly what the
browser triggers. A refusal is
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

__all__ = ["analyse_series", "build_ui", "compare_studies", "detect_study", "redraw_comparison", "redraw_overlay",
           "show_slice"]

INTRO = (
    "# MEDIC-AD\n"
    "Upload one study for an answer to *Is there any abnormality in this image?*, a score P(abnormal) and a "
    "heatmap; or a prior and a current study of one patient for *worsened / improved / no change* and a change "
    "map; or a whole series (its DICOM files, or a zip of them) for the study's answer and every slice's "
    "heatmap. PNG, JPEG, TIFF, DICOM and NIfTI are read from their content. **Research use only — not a medical "
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


def analyse_series(service: Service, uploads: list[bytes] | bytes | None, slices: Any = "all",
                   window: str | None = None, alpha: float = 0.5) -> tuple[str, Any, np.ndarray | None, str, Any]:
    """(answer markdown, slider update, key slice's overlay, slice caption, state for the scroller).

    The slider runs over the scored slices (0 ... count - 1) and starts at the key slice.
    """
    import gradio as gr

    hidden = gr.update(visible=False, value=0, minimum=0, maximum=1)
    if not uploads:
        uploads = None
    try:
        if uploads is None:
            raise SanityError("empty_file", "no files uploaded yet", name="study")
        study = service.study(uploads, slices=slices or "all", window=window or None)
    except SanityError as exc:
        return _refusal(exc), hidden, None, "", None
    except ValueError as exc:
        return f"### Could not process this study\n{str(exc).splitlines()[0][:300]}", hidden, None, "", None
    r = study.result
    row = study.to_dict()  # the API's answer: the same fields, the same values
    lines = [f"### Answer: {study.verdict}",
             f"**Study score** P(abnormal) = **{r.score:.3f}** ({study.score_rule} over {len(r.slice_indices)} "
             f"of {r.n_slices} slices)",
             # which series was read matters when the study had several; UIDs carry no patient field
             f"**Series UID** `{row['series_uid']}` · **Study UID** `{row['study_uid']}` · **score** "
             f"`{row['score']}`",
             f"**Key slice**: {r.key_slice_index} (slices are numbered 0\u2013{r.n_slices - 1} along the slice "
             "normal, inferior first for axial CT)",
             f"Model's words on the key slice: `{(r.answer or '').strip() or '(empty)'}`"]
    if study.modality:
        lines.append(f"Series: {study.modality}, {r.n_slices} slices")
    lines += [f"- {note}" for note in study.notes]
    last = len(r.slice_indices) - 1
    slider = gr.update(visible=last > 0, minimum=0, maximum=max(last, 1), value=study.key, step=1)
    picture, caption = show_slice(study, study.key, alpha)
    return "\n\n".join(lines), slider, picture, caption, study


def show_slice(state: Any, k: Any, alpha: float) -> tuple[np.ndarray | None, str]:
    """Scored slice ``k``'s overlay at opacity ``alpha`` and its caption (no model call)."""
    if not state:
        return None, ""
    k = int(np.clip(int(round(float(k or 0))), 0, len(state.images) - 1))
    return _png_to_array(state.overlay_png(k, alpha=float(alpha))), f"**{state.slice_title(k)}**"


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

        with gr.Tab("Study (series)", elem_id="tab-series"):
            with gr.Row():
                with gr.Column(scale=1):
                    series_files = gr.File(label="A series: its DICOM files, a multi-frame DICOM, a NIfTI volume, "
                                                 "or a zip of them", type="binary", file_count="multiple",
                                           elem_id="series-files")
                    with gr.Accordion("Slices and window", open=False):
                        series_slices = gr.Textbox(label="slices: all, or N evenly spaced", value="all", max_lines=1)
                        series_window = gr.Textbox(label="CT window: a name (brain, lung, ...) or centre/width",
                                                   placeholder="the files' own", max_lines=1)
                    series_button = gr.Button("Analyse the study", variant="primary", elem_id="series-button")
                with gr.Column(scale=2):
                    series_answer = gr.Markdown("Upload a series and press **Analyse the study**.",
                                                elem_id="series-answer")
                    series_slider = gr.Slider(0, 1, value=0, step=1, label="scored slice", visible=False,
                                              elem_id="series-slider")
                    series_caption = gr.Markdown("", elem_id="series-caption")
                    series_opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="heatmap opacity",
                                               elem_id="series-opacity")
                    series_overlay = gr.Image(label="slice with heatmap", type="numpy", interactive=False,
                                              elem_id="series-overlay", format="png")
            series_state = gr.State(None)
            series_button.click(lambda u, n, w, a: analyse_series(service, u, n, w, a),
                                [series_files, series_slices, series_window, series_opacity],
                                [series_answer, series_slider, series_overlay, series_caption, series_state],
                                api_name="study")
            for control in (series_slider, series_opacity):
                control.change(show_slice, [series_state, series_slider, series_opacity],
                               [series_overlay, series_caption], api_name=False)
    demo.queue(max_size=max(1, max_waiting), default_concurrency_limit=1)
    return demo
