"""Qwen2.5-VL backbone adapter: loading, saving and the vision-tower taps MEDIC-AD needs.

Composition only: the HF model is used as it is. Soft prompts enter the chosen full-attention
vision blocks through a forward pre-hook (prompt rows appended inside each image's ``cu_seqlens``
segment, with cos = 1 / sin = 0 so they are not rotated) and leave through a forward hook, so f_p
and the image-token count are unchanged and no checkpoint key moves (design doc §5–6).
"""

from __future__ import annotations

import importlib.util
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import torch
from transformers import Qwen2_5_VLForConditionalGeneration
from transformers.utils import logging as hf_logging
from transformers.vision_utils import get_vision_window_index

from medic_ad.models.qwen2_5_vl.processing import MedicADProcessor

SUPPORTED_MODEL_TYPES = ("qwen2_5_vl",)
hf_logging.disable_progress_bar()  # per-shard bars would drown our own progress output
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


ATTN_IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "eager")


def check_attn_implementation(name: str) -> str:
    """``name`` if transformers can run it here; else one error that says what to do."""
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)}, got {name!r}")
    if name == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ValueError("attn_implementation flash_attention_2 needs the flash-attn package, which is not installed "
                         "(pip install flash-attn --no-build-isolation, on a CUDA machine); or use sdpa")
    return name


class BackboneLoadError(ValueError):
    """A backbone folder that is missing, incomplete or not Qwen2.5-VL."""


@dataclass
class Backbone:
    """A Qwen2.5-VL-architecture model with its image-only processor."""

    model: Qwen2_5_VLForConditionalGeneration
    processor: MedicADProcessor
    source: str

    @property
    def visual(self) -> torch.nn.Module:
        return self.model.model.visual

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.model.save_pretrained(directory, safe_serialization=True)
        self.processor.save_pretrained(directory)


def backbone_fingerprint(model: Qwen2_5_VLForConditionalGeneration, *, sample: int = 4096) -> str:
    """A short digest of the backbone's weights, to tell whether a checkpoint meets the backbone it was
    trained on. It covers the first ``sample`` values of the input and output embeddings (rows appended
    by a tokenizer resize are left out) and the first and last ``sample`` values of every vision-tower
    tensor, rounded to bfloat16, so loading in float32 or bfloat16 gives the same digest. LoRA never
    touches these tensors, so merging or unmerging it does not change it either."""
    import hashlib

    digest = hashlib.sha256()

    def add(name: str, values: torch.Tensor) -> None:
        digest.update(name.encode())
        digest.update(values.detach().to("cpu", torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes())

    for name, module in (("embed", model.get_input_embeddings()), ("head", model.get_output_embeddings())):
        add(name, module.weight.reshape(-1)[:sample])
    for name, param in model.model.visual.named_parameters():
        flat = param.reshape(-1)
        digest.update(str(tuple(param.shape)).encode())
        add(name, flat[:sample] if flat.numel() <= 2 * sample else torch.cat([flat[:sample], flat[-sample:]]))
    return digest.hexdigest()[:32]


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return None
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)} or 'auto'") from None


def check_backbone_folder(path: str | Path) -> Path:
    """Raise one readable ``BackboneLoadError`` if ``path`` is not a complete Qwen2.5-VL folder."""
    folder = Path(path)
    if not folder.exists():
        raise BackboneLoadError(f"{folder}: backbone folder does not exist")
    if not folder.is_dir():
        raise BackboneLoadError(f"{folder}: backbone path is not a folder")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise BackboneLoadError(f"{folder}: no config.json (not a Hugging Face model folder)")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BackboneLoadError(f"{config_file}: unreadable JSON ({exc.__class__.__name__})") from None
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise BackboneLoadError(
            f"{folder}: model_type {model_type!r} is not a Qwen2.5-VL architecture (expected 'qwen2_5_vl')"
        )
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            raise BackboneLoadError(f"{folder}: incomplete weights, missing shard(s) {', '.join(missing[:3])}")
    elif not (folder / "model.safetensors").is_file():
        raise BackboneLoadError(f"{folder}: no safetensors weights (model.safetensors or its index)")
    if not any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
        raise BackboneLoadError(f"{folder}: no tokenizer files")
    if not (folder / "preprocessor_config.json").is_file():
        raise BackboneLoadError(f"{folder}: no preprocessor_config.json (image processor settings)")
    return folder


def load_backbone(
    path: str | Path,
    *,
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device = "cpu",
    attn_implementation: str = "sdpa",
    num_ano_tokens: int | None = None,
    num_diff_tokens: int | None = None,
) -> Backbone:
    """Load a Qwen2.5-VL-architecture folder (Lingshu-7B, Qwen2.5-VL-3B/7B/32B, a tiny saved one).

    Offline and safetensors-only. ``<Ano>``/``<Diff>`` are added to the tokenizer if missing; they use
    the spare embedding rows Qwen's vocabulary has above the tokenizer (resized only when there are none).
    """
    check_attn_implementation(attn_implementation)
    folder = check_backbone_folder(path)
    try:
        processor = MedicADProcessor.from_pretrained(
            folder, num_ano_tokens=num_ano_tokens, num_diff_tokens=num_diff_tokens
        )
    except (OSError, ValueError) as exc:
        raise BackboneLoadError(f"{folder}: tokenizer or image processor could not be read ({exc})") from None
    torch_dtype = resolve_dtype(dtype)
    try:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            folder,
            dtype=torch_dtype if torch_dtype is not None else "auto",
            local_files_only=True,
            use_safetensors=True,
            attn_implementation=attn_implementation,
        )
    except Exception as exc:  # noqa: BLE001 - any failure here is "these weights are unusable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise BackboneLoadError(f"{folder}: weights could not be loaded ({first[:300]})") from None
    if len(processor.tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(processor.tokenizer))
    model.to(device)
    model.eval()
    return Backbone(model=model, processor=processor, source=str(folder))


@dataclass
class VisionFeatures:
    """Vision-tower outputs for a packed batch of images, all in image (raster) order.

    ``projected[i]``: f_p(V*) of image i, (n_tokens_i, llm_dim) on the merged grid (h/2, w/2).
    ``layers[i]``: a list over the tapped blocks of (h_i, w_i, vision_dim) patch features.
    ``grids[i]``: the patch grid (h_i, w_i).
    """

    projected: list[torch.Tensor]
    layers: list[list[torch.Tensor]]
    grids: list[tuple[int, int]]


class VisionTap:
    """Runs the frozen vision tower with soft prompts in chosen blocks and taps block outputs."""

    def __init__(self, visual: torch.nn.Module) -> None:
        self.visual = visual
        cfg = visual.config
        self.merge = int(cfg.spatial_merge_size)
        self.patch_size = int(cfg.patch_size)
        self.window_size = int(cfg.window_size)
        self.depth = int(cfg.depth)
        self.fullatt_blocks = list(cfg.fullatt_block_indexes)

    @contextmanager
    def _hooks(
        self, prompts: Mapping[int, torch.Tensor], capture: list[int], store: dict[int, torch.Tensor]
    ) -> Iterator[None]:
        handles = []
        for idx in sorted(set(prompts) | set(capture)):
            block = self.visual.blocks[idx]
            keep_rows: dict[str, torch.Tensor] = {}
            prompt = prompts.get(idx)
            if prompt is not None:
                handles.append(block.register_forward_pre_hook(_prompt_pre_hook(prompt, keep_rows), with_kwargs=True))
            handles.append(block.register_forward_hook(_strip_and_store(idx, keep_rows, store, idx in capture)))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def __call__(
        self,
        pixel_values: torch.Tensor,
        grid_thw: torch.Tensor,
        *,
        prompts: Mapping[int, torch.Tensor] | None = None,
        capture: list[int],
    ) -> VisionFeatures:
        prompts = dict(prompts or {})
        for idx in prompts:
            if idx not in self.fullatt_blocks:
                raise ValueError(f"soft prompts go into full-attention blocks {self.fullatt_blocks}, not block {idx}")
        store: dict[int, torch.Tensor] = {}
        with self._hooks(prompts, capture, store):
            out = self.visual(pixel_values.to(self.visual.dtype), grid_thw=grid_thw)
        window_index, _ = get_vision_window_index(
            grid_thw, spatial_merge_size=self.merge, window_size=self.window_size, patch_size=self.patch_size
        )
        reverse = torch.argsort(window_index.to(pixel_values.device))
        sizes = (grid_thw.prod(-1)).tolist()
        grids = [(int(h), int(w)) for _, h, w in grid_thw.tolist()]
        per_layer = []
        for idx in capture:
            h = store[idx]
            unit = self.merge**2
            h = h.view(-1, unit, h.shape[-1])[reverse].reshape(-1, h.shape[-1])
            per_layer.append([self._raster(x, g) for x, g in zip(torch.split(h, sizes), grids)])
        layers = [list(feats) for feats in zip(*per_layer)]
        projected = list(torch.split(out.pooler_output, [s // self.merge**2 for s in sizes]))
        return VisionFeatures(projected=projected, layers=layers, grids=grids)

    def _raster(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Merge-unit order (h/m, w/m, m, m) → raster (h, w); drops the temporal axis (images have t = 1)."""
        h, w = grid
        m = self.merge
        x = x[: h * w]
        return x.view(h // m, w // m, m, m, -1).permute(0, 2, 1, 3, 4).reshape(h, w, -1)


def _prompt_pre_hook(prompt: torch.Tensor, keep_rows: dict[str, torch.Tensor]):
    """Append ``prompt`` rows to every image segment of a full-attention block's packed input."""

    def hook(module, args, kwargs):
        if args:
            hidden, args = args[0], args[1:]
        else:
            hidden = kwargs.pop("hidden_states")
        cu = kwargs["cu_seqlens"]
        n_prompt = prompt.shape[0]
        bounds = cu.tolist()
        pieces, keep = [], []
        cos, sin = kwargs["position_embeddings"]
        cos_pieces, sin_pieces = [], []
        offset = 0
        p = prompt.to(hidden.dtype)
        ones = torch.ones(n_prompt, cos.shape[-1], dtype=cos.dtype, device=cos.device)
        zeros = torch.zeros(n_prompt, sin.shape[-1], dtype=sin.dtype, device=sin.device)
        for start, end in zip(bounds[:-1], bounds[1:]):
            pieces += [hidden[start:end], p]
            cos_pieces += [cos[start:end], ones]
            sin_pieces += [sin[start:end], zeros]
            keep.append(torch.arange(offset, offset + end - start, device=hidden.device))
            offset += end - start + n_prompt
        keep_rows["rows"] = torch.cat(keep)
        kwargs["cu_seqlens"] = cu + n_prompt * torch.arange(len(bounds), device=cu.device, dtype=cu.dtype)
        if kwargs.get("max_seqlen") is not None:
            kwargs["max_seqlen"] = kwargs["max_seqlen"] + n_prompt
        kwargs["position_embeddings"] = (torch.cat(cos_pieces), torch.cat(sin_pieces))
        return (torch.cat(pieces), *args), kwargs

    return hook


def _strip_and_store(idx: int, keep_rows: dict[str, torch.Tensor], store: dict[int, torch.Tensor], record: bool):
    def hook(module, args, output):
        if "rows" in keep_rows:
            output = output[keep_rows.pop("rows")]
        if record:
            store[idx] = output
        return output

    return hook
