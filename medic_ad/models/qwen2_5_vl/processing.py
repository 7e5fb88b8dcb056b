"""Image-only processor for Qwen2.5-VL-architecture backbones, with MEDIC-AD's token layout.

The stock ``Qwen2_5_VLProcessor`` needs a video processor (and so torchvision); MEDIC-AD only reads
images, so this processor pairs the tokenizer with ``Qwen2VLImageProcessorPil`` and lays out the
sequence of Eq. 2 / Eq. 3 of the paper:

    one image:   <|vision_start|> <|image_pad|>*n <|vision_end|> <Ano>*k  question
    two studies: <|vision_start|> ... <Ano>*k <|vision_start|> ... <Ano>*k  question <Diff>*m

``<Ano>``/``<Diff>`` are ordinary (special) text tokens: M-RoPE positions still derive from
``input_ids`` and ``mm_token_type_ids`` marks image tokens only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.image_utils import SizeDict
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from medic_ad.data.templates import ChatExample

ANO_TOKEN = "<Ano>"
DIFF_TOKEN = "<Diff>"
IMAGE_PAD = "<|image_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IM_END = "<|im_end|>"
IMAGE_PLACEHOLDER = VISION_START + IMAGE_PAD + VISION_END

PROCESSOR_CONFIG = "medic_ad_processor.json"
PixelCap = tuple[int, int]  # (min_pixels, max_pixels) of one image after the processor's resize
IGNORE_INDEX = -100

# Qwen-style chat template (the default system prompt of Qwen2.5-VL; images as vision placeholders).
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class MedicADProcessor:
    """Tokenizer + Qwen2-VL image processor, producing MEDIC-AD model inputs.

    Args:
        tokenizer: a Qwen-style tokenizer holding the ``<Ano>`` and ``<Diff>`` special tokens.
        image_processor: ``Qwen2VLImageProcessorPil`` (its pixel values and grids are used unchanged).
        num_ano_tokens: ``<Ano>`` tokens after each image (pooling size squared).
        num_diff_tokens: ``<Diff>`` tokens after the question of a two-study input.
    """

    def __init__(
        self,
        *,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Qwen2VLImageProcessorPil,
        num_ano_tokens: int = 16,
        num_diff_tokens: int = 16,
    ) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.num_ano_tokens = num_ano_tokens
        self.num_diff_tokens = num_diff_tokens
        ensure_medic_tokens(tokenizer)
        if tokenizer.chat_template is None:
            tokenizer.chat_template = QWEN_CHAT_TEMPLATE
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        self.ano_token_id = tokenizer.convert_tokens_to_ids(ANO_TOKEN)
        self.diff_token_id = tokenizer.convert_tokens_to_ids(DIFF_TOKEN)
        self.merge_size = int(image_processor.merge_size)
        self.patch_size = int(image_processor.patch_size)

    # ----------------------------------------------------------------- persistence
    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)
        (directory / PROCESSOR_CONFIG).write_text(
            json.dumps({"num_ano_tokens": self.num_ano_tokens, "num_diff_tokens": self.num_diff_tokens}, indent=2)
        )

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, num_ano_tokens: int | None = None, num_diff_tokens: int | None = None
    ) -> "MedicADProcessor":
        directory = Path(directory)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        tokenizer.model_input_names = ["input_ids", "attention_mask"]
        if tokenizer.chat_template is None:
            template_file = directory / "chat_template.json"
            if template_file.is_file():
                tokenizer.chat_template = json.loads(template_file.read_text())["chat_template"]
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(directory, local_files_only=True)
        saved = {}
        if (directory / PROCESSOR_CONFIG).is_file():
            saved = json.loads((directory / PROCESSOR_CONFIG).read_text())
        return cls(
            tokenizer=tokenizer,
            image_processor=image_processor,
            num_ano_tokens=num_ano_tokens or saved.get("num_ano_tokens", 16),
            num_diff_tokens=num_diff_tokens or saved.get("num_diff_tokens", 16),
        )

    # ----------------------------------------------------------------- images
    @property
    def pixel_cap(self) -> PixelCap:
        """(min_pixels, max_pixels): the image processor resizes every image to a pixel count in this range
        (a multiple of 28 on each side), so ``max_pixels / 784`` bounds the image tokens of one image."""
        size = self.image_processor.size
        return int(size.shortest_edge), int(size.longest_edge)

    def set_pixel_cap(self, min_pixels: int | None = None, max_pixels: int | None = None) -> None:
        """Change the default cap (None keeps that bound); saved with the image processor's settings."""
        low, high = self.pixel_cap
        low = low if min_pixels is None else int(min_pixels)
        high = high if max_pixels is None else int(max_pixels)
        check_pixel_cap(low, high, unit=(self.patch_size * self.merge_size) ** 2)
        self.image_processor.size = SizeDict(shortest_edge=low, longest_edge=high)

    def max_image_tokens(self, cap: PixelCap | None = None) -> int:
        """The most LLM tokens one image can take under ``cap`` (default: the processor's own)."""
        return (cap or self.pixel_cap)[1] // (self.patch_size * self.merge_size) ** 2

    def preprocess_images(self, images: Sequence[Image.Image],
                          caps: Sequence[PixelCap | None] | None = None) -> dict[str, torch.Tensor]:
        """Pixel values and ``image_grid_thw`` exactly as transformers' Qwen2-VL image processor gives.

        ``caps``: one (min_pixels, max_pixels) per image, None for the default cap. Images that share a
        cap are processed together; the packed patch rows come back in image order.
        """
        images = list(images)
        caps = [None] * len(images) if caps is None else list(caps)
        if len(caps) != len(images):
            raise ValueError(f"{len(caps)} pixel caps for {len(images)} images")
        default = self.pixel_cap
        caps = [default if c is None else (int(c[0]), int(c[1])) for c in caps]
        groups: dict[PixelCap, list[int]] = {}
        for i, cap in enumerate(caps):
            groups.setdefault(cap, []).append(i)
        rows: list[torch.Tensor | None] = [None] * len(images)
        grids: list[torch.Tensor | None] = [None] * len(images)
        for cap, members in groups.items():
            size = None if cap == default else {"shortest_edge": cap[0], "longest_edge": cap[1]}
            out = self.image_processor(images=[images[i] for i in members], return_tensors="pt",
                                       **({} if size is None else {"size": size}))
            if len(groups) == 1:
                return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}
            counts = out["image_grid_thw"].prod(-1).tolist()
            for i, part, grid in zip(members, torch.split(out["pixel_values"], counts), out["image_grid_thw"]):
                rows[i], grids[i] = part, grid
        return {"pixel_values": torch.cat(rows), "image_grid_thw": torch.stack(grids)}

    def image_token_count(self, grid_thw: torch.Tensor) -> int:
        return int(grid_thw.prod().item()) // (self.merge_size**2)

    # ----------------------------------------------------------------- text
    def render_prompt(self, question: str, num_images: int, *, use_diff: bool = True) -> str:
        """Chat-template text of one user turn (generation prompt included), placeholders unexpanded."""
        content: list[dict[str, Any]] = [{"type": "image"} for _ in range(num_images)]
        content.append({"type": "text", "text": question})
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        if text.count(IMAGE_PLACEHOLDER) != num_images:
            raise ValueError(
                f"chat template produced {text.count(IMAGE_PLACEHOLDER)} image placeholders for {num_images} images"
            )
        if num_images == 2 and use_diff and self.num_diff_tokens > 0:
            # <Diff> goes right after the question, i.e. before the user turn's end (Eq. 3).
            cut = text.rfind(question) + len(question)
            text = text[:cut] + DIFF_TOKEN * self.num_diff_tokens + text[cut:]
        return text

    def expand_placeholders(self, text: str, grids: Sequence[torch.Tensor]) -> str:
        parts = text.split(IMAGE_PLACEHOLDER)
        if len(parts) - 1 != len(grids):
            raise ValueError(f"image token count mismatch: text has {len(parts) - 1} images, got {len(grids)}")
        out = [parts[0]]
        for grid, rest in zip(grids, parts[1:]):
            out.append(
                VISION_START
                + IMAGE_PAD * self.image_token_count(grid)
                + VISION_END
                + ANO_TOKEN * self.num_ano_tokens
                + rest
            )
        return "".join(out)

    def __call__(
        self,
        examples: Sequence[ChatExample],
        *,
        use_diff: bool = True,
        with_answers: bool = False,
        pixel_caps: Sequence[PixelCap | None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Batch of model inputs (left-padded) from examples whose images are PIL images. With
        ``with_answers`` the answer tokens (+ end of turn) are appended and ``labels`` masks everything
        but them. ``pixel_caps``: one (min_pixels, max_pixels) per example (None: the default cap)."""
        all_images: list[Image.Image] = []
        image_caps: list[PixelCap | None] = []
        if pixel_caps is not None and len(pixel_caps) != len(examples):
            raise ValueError(f"{len(pixel_caps)} pixel caps for {len(examples)} examples")
        for i, ex in enumerate(examples):
            if len(ex.images) not in (1, 2):
                raise ValueError(f"a sample takes 1 or 2 images, got {len(ex.images)}")
            all_images.extend(ex.images)
            image_caps.extend([None if pixel_caps is None else pixel_caps[i]] * len(ex.images))
        vision = self.preprocess_images(all_images, image_caps)
        grids = list(vision["image_grid_thw"])
        sequences: list[list[int]] = []
        label_rows: list[list[int]] = []
        cursor = 0
        for ex in examples:
            n = len(ex.images)
            text = self.expand_placeholders(self.render_prompt(ex.question, n, use_diff=use_diff), grids[cursor : cursor + n])
            cursor += n
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            labels = [IGNORE_INDEX] * len(ids)
            if with_answers:
                if ex.answer is None:
                    raise ValueError("with_answers=True needs an answer for every example")
                answer_ids = self.tokenizer(ex.answer + IM_END, add_special_tokens=False)["input_ids"]
                ids = ids + answer_ids
                labels = labels + answer_ids
            sequences.append(ids)
            label_rows.append(labels)
        batch = self._pad(sequences, label_rows if with_answers else None)
        batch.update(vision)
        batch["mm_token_type_ids"] = (batch["input_ids"] == self.image_token_id).long()
        batch["images_per_sample"] = torch.tensor([len(ex.images) for ex in examples])
        return batch

    def _pad(self, sequences: list[list[int]], labels: list[list[int]] | None) -> dict[str, torch.Tensor]:
        pad_id = self.tokenizer.pad_token_id
        length = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
        attention = torch.zeros((len(sequences), length), dtype=torch.long)
        label_t = torch.full((len(sequences), length), IGNORE_INDEX, dtype=torch.long)
        for i, seq in enumerate(sequences):
            input_ids[i, length - len(seq) :] = torch.tensor(seq)
            attention[i, length - len(seq) :] = 1
            if labels is not None:
                label_t[i, length - len(seq) :] = torch.tensor(labels[i])
        out = {"input_ids": input_ids, "attention_mask": attention}
        if labels is not None:
            out["labels"] = label_t
        return out

    def answer_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` as an answer (right after the assistant turn starts), end token excluded."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"{text!r} tokenises to nothing")
        return list(ids)

    def first_token_id(self, text: str) -> int:
        """Id of the first token of ``text`` as an answer would start (scoring by prefill)."""
        return self.answer_token_ids(text)[0]

    @property
    def end_token_id(self) -> int:
        """The token that closes an answer (``<|im_end|>``), as the training targets end."""
        return int(self.tokenizer.convert_tokens_to_ids(IM_END))

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


def check_pixel_cap(min_pixels: int, max_pixels: int, *, unit: int = 28 * 28) -> None:
    """A cap the image processor can meet: at least one merged patch, min ≤ max."""
    if min_pixels < unit or max_pixels < unit:
        raise ValueError(f"pixel cap ({min_pixels}, {max_pixels}): both bounds must be ≥ {unit} (one 28×28 token)")
    if min_pixels > max_pixels:
        raise ValueError(f"pixel cap: min_pixels {min_pixels} is above max_pixels {max_pixels}")


def ensure_medic_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    """Add ``<Ano>``/``<Diff>`` as special tokens when a backbone's tokenizer lacks them."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in (ANO_TOKEN, DIFF_TOKEN) if t not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)


def image_to_pil(image: Image.Image | np.ndarray) -> Image.Image:
    """RGB PIL image from a PIL image or an array (grey or RGB; uint8, uint16 or float in [0, 1])."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32)
        if arr.max(initial=0.0) > 1.0:
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / max(hi - lo, 1e-6)
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return Image.fromarray(arr).convert("RGB")
