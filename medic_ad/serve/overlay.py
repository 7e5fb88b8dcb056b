"""Pictures of the model's maps: a heatmap over its image, and prior | current | change side by side.

Drawn with PIL (matplotlib supplies only the colour maps and the DejaVu font): cheap per picture
(``docs/serve.md``) and no global figure state, so the API's worker threads and the UI can draw at
once. Nothing but pixels, fixed titles and numbers goes into a picture: no file name and no DICOM
field.

Colour conventions:
- heatmaps: ``inferno`` from 0 (normal) to 1 (abnormal), blended over the grey image with an
  adjustable opacity, with a colour bar; a reference lesion mask, when given, is outlined in green
  on the image in a panel of its own (the demo's report: image | heatmap | mask);
- change map (current - prior anomaly map): diverging ``RdBu_r``, red = the current study is more
  anomalous there (worse), blue = less anomalous (better), white = no change; symmetric range.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from medic_ad.data.io import MedicalImage
from medic_ad.models.results import change_map

__all__ = ["HEAT_CMAP", "CHANGE_CMAP", "MASK_COLOUR", "blend", "change_map", "comparison_png", "grey_rgb",
           "heatmap_png", "outline", "overlay_png", "resize_map"]

HEAT_CMAP = "inferno"
CHANGE_CMAP = "RdBu_r"
MIN_CHANGE_RANGE = 0.05  # colour range floor, so tiny differences are not blown up to full red/blue
MASK_COLOUR = (0, 255, 0)  # green: apart from every colour of inferno and from grey


def grey_rgb(image: MedicalImage | np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 view of an image (grey replicated); arrays: uint8 as is, floats in [0, 1]."""
    px = image.pixels if isinstance(image, MedicalImage) else np.asarray(image)
    if px.dtype == np.uint8:
        u8 = px
    else:
        u8 = np.round(np.clip(px.astype(np.float32), 0, 1) * 255).astype(np.uint8)
    return np.repeat(u8[:, :, None], 3, axis=2) if u8.ndim == 2 else u8


def resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map to (height, width)."""
    values = np.asarray(values, dtype=np.float32)
    if values.shape == tuple(size):
        return values
    im = Image.fromarray(values, mode="F").resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(im, dtype=np.float32)


def blend(image: MedicalImage | np.ndarray, heat: np.ndarray, *, alpha: float = 0.5,
          cmap: str = HEAT_CMAP) -> np.ndarray:
    """uint8 RGB: the heatmap's colours over the grey image at opacity ``alpha`` (0 image only, 1 map only)."""
    from matplotlib import colormaps

    base = grey_rgb(image).astype(np.float32)
    heat = resize_map(np.clip(heat, 0, 1), base.shape[:2])
    colour = colormaps[cmap](heat)[..., :3].astype(np.float32) * 255.0
    alpha = float(np.clip(alpha, 0.0, 1.0))
    return np.round((1 - alpha) * base + alpha * colour).astype(np.uint8)


def _font(size: int):
    """DejaVu Sans from matplotlib's data (has the arrows the legends use); PIL's default otherwise."""
    from PIL import ImageFont

    try:
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        return ImageFont.load_default()


def _scaled(rgb: np.ndarray, height: int) -> Image.Image:
    im = Image.fromarray(rgb)
    width = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
    return im.resize((width, height), Image.BILINEAR if height >= rgb.shape[0] else Image.LANCZOS)


def _panel_height(*shapes: tuple[int, ...]) -> int:
    """Display height: the images' own, kept between 256 and 512 px."""
    return int(np.clip(max(s[0] for s in shapes), 256, 512))


def _colour_bar(cmap: str, height: int, ticks: list[tuple[float, str]], *, label: str | None = None,
                width: int = 16) -> Image.Image:
    """A vertical colour bar (top = 1, bottom = 0 of ``ticks``' scale) with tick labels to its right."""
    from matplotlib import colormaps
    from PIL import ImageDraw

    font, small = _font(12), _font(11)
    strip = colormaps[cmap](np.linspace(1, 0, height))[:, :3]
    strip = np.round(np.repeat(strip[:, None, :], width, axis=1) * 255).astype(np.uint8)
    text_w = max(int(font.getlength(t.split("\n")[0])) for _, t in ticks) + 8
    margin = 16  # room for two-line labels at the ends
    canvas = Image.new("RGB", (width + 6 + text_w + (22 if label else 0), height + 2 * margin), "white")
    canvas.paste(Image.fromarray(strip), (0, margin))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([0, margin, width - 1, margin + height - 1], outline=(60, 60, 60))
    for pos, text in ticks:
        y = margin + round((1 - pos) * (height - 1))
        draw.line([width, y, width + 4, y], fill=(60, 60, 60))
        lines = text.split("\n")
        top = y - 7 * len(lines)
        for i, line in enumerate(lines):
            draw.text((width + 6, top + 14 * i), line, fill="black", font=font)
    if label:
        rotated = Image.new("RGB", (height, 18), "white")
        ImageDraw.Draw(rotated).text((height // 2, 9), label, fill="black", font=small, anchor="mm")
        canvas.paste(rotated.rotate(-90, expand=True), (width + 6 + text_w, margin))
    return canvas


def _compose(panels: list[tuple[Image.Image, str | None]], title: str | None) -> bytes:
    """Panels side by side (titles above the image ones), an optional title on top; PNG bytes."""
    from PIL import ImageDraw

    font, big = _font(13), _font(15)
    pad, head = 10, 22
    top = pad + (28 if title else 0)
    width = pad + sum(p.width + pad for p, _ in panels)
    height = top + head + max(p.height for p, _ in panels) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((width // 2, pad + 10), title, fill="black", font=big, anchor="mm")
    x = pad
    for panel, caption in panels:
        if caption:
            draw.text((x + panel.width // 2, top + head // 2), caption, fill="black", font=font, anchor="mm")
        canvas.paste(panel, (x, top + head))
        x += panel.width + pad
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")  # PIL writes no text chunks unless asked: nothing rides along
    return buf.getvalue()


HEAT_TICKS = [(1.0, "1 abnormal"), (0.5, "0.5"), (0.0, "0 normal")]


def outline(rgb: np.ndarray, mask: np.ndarray, *, colour: tuple[int, int, int] = MASK_COLOUR,
            width: int = 2) -> np.ndarray:
    """uint8 RGB: ``rgb`` with the border of ``mask`` (nonzero = inside; resized to ``rgb``) drawn
    ``width`` pixels wide, just inside the mask, in ``colour``."""
    from PIL import ImageFilter

    inside = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255, mode="L")
    if inside.size != (rgb.shape[1], rgb.shape[0]):
        inside = inside.resize((rgb.shape[1], rgb.shape[0]), Image.NEAREST)
    eroded = inside.filter(ImageFilter.MinFilter(2 * width + 1))
    edge = (np.asarray(inside) > 0) & ~(np.asarray(eroded) > 0)
    out = np.array(rgb, dtype=np.uint8, copy=True)
    out[edge] = colour
    return out


def overlay_png(image: MedicalImage | np.ndarray, heat: np.ndarray, *, alpha: float = 0.5,
                title: str | None = "anomaly heatmap", mask: np.ndarray | None = None) -> bytes:
    """PNG: the heatmap over the image with a colour bar (0 normal ... 1 abnormal).

    With ``mask`` (a reference lesion mask) three panels: the image, the heatmap over it, and the
    mask's outline on the image, so the map can be judged against where the lesion is.
    """
    base = grey_rgb(image)
    height = _panel_height(base.shape)
    panel = _scaled(blend(base, heat, alpha=alpha), height)
    bar = _colour_bar(HEAT_CMAP, height - 32, HEAT_TICKS)
    if mask is None:
        return _compose([(panel, None), (bar, None)], title)
    shown = np.asarray(_scaled(base, height))  # outlined at display size: a crisp line on any image size
    return _compose([(_scaled(base, height), "image"), (panel, "heatmap"), (bar, None),
                     (Image.fromarray(outline(shown, mask)), "lesion mask (green)")], title)


def heatmap_png(heat: np.ndarray) -> bytes:
    """PNG: the raw heatmap as 8-bit grey (0 = 0.0, 255 = 1.0), at the map's own size."""
    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(heat, 0, 1) * 255).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def comparison_png(
    prior: MedicalImage | np.ndarray,
    current: MedicalImage | np.ndarray,
    prior_map: np.ndarray,
    current_map: np.ndarray,
    *,
    change: np.ndarray | None = None,
    alpha: float = 0.5,
    title: str | None = None,
) -> bytes:
    """PNG: prior and current with their anomaly maps, and the change map (current - prior).

    The change map's colour bar reads from "worse" (red, top) to "better" (blue, bottom).
    """
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    prior_rgb, current_rgb = grey_rgb(prior), grey_rgb(current)
    if change is None:
        change = change_map(prior_map, current_map)
    height = _panel_height(prior_rgb.shape, current_rgb.shape)

    span = max(float(np.abs(change).max()), MIN_CHANGE_RANGE)
    colours = colormaps[CHANGE_CMAP](Normalize(-span, span)(change))[..., :3] * 255.0
    weight = np.clip(np.abs(change) / span * float(np.clip(alpha, 0, 1)) * 2, 0, 1)[..., None]
    mixed = np.round((1 - weight) * current_rgb.astype(np.float32) + weight * colours).astype(np.uint8)

    bar_h = height - 32
    heat_bar = _colour_bar(HEAT_CMAP, bar_h, HEAT_TICKS)
    change_bar = _colour_bar(CHANGE_CMAP, bar_h, [(1.0, f"worse\n+{span:.2f}"), (0.5, "0"),
                                                  (0.0, f"better\n-{span:.2f}")], label="worse \u2194 better")
    return _compose([
        (_scaled(blend(prior_rgb, prior_map, alpha=alpha), height), "prior + anomaly map"),
        (_scaled(blend(current_rgb, current_map, alpha=alpha), height), "current + anomaly map"),
        (heat_bar, None),
        (_scaled(mixed, height), "change map (current \u2212 prior)"),
        (change_bar, None),
    ], title)
