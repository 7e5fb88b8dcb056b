"""A tiny, randomly initialised Qwen2.5-VL built entirely offline.

Used by the tests and the demo in place of Lingshu-7B: the same architecture classes from
transformers with tiny text and vision configs, a byte-level BPE tokenizer trained in code that holds
Qwen's special tokens plus ``<Ano>``/``<Diff>``, a Qwen-style chat template, and transformers' own
``Qwen2VLImageProcessorPil``. It saves to an ordinary Qwen2.5-VL folder that ``load_backbone`` reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from medic_ad.models.qwen2_5_vl.processing import ANO_TOKEN, DIFF_TOKEN, QWEN_CHAT_TEMPLATE, MedicADProcessor

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    ANO_TOKEN,
    DIFF_TOKEN,
]

# What the tiny tokenizer learns its merges from: the prompts, answers and captions the project uses.
_CORPUS = """
You are a helpful assistant.
Yes.
No.
Yes, there is an abnormality.
No abnormality is seen.
A: No significant change
B: Improved
C: Worsened
Is there any abnormality in this image? Yes. No. Yes, there is an abnormality. No abnormality is seen.
There is a lesion in the image. The image looks normal. The study is normal.
What is the condition of the left lower lung zone across the two chest CXR images?
A: No significant change, B: Improved, C: Worsened. A B C
The finding has worsened. The finding has improved. There is no change. no change worsened improved
Compared with the prior study, the lesion is larger. The lesion is smaller. The lesion is unchanged.
What modality is this image? What organ is shown? brain MRI, head CT, chest X-ray, abdomen CT, pathology.
This is a brain MRI. This is a head CT scan. This is a chest X-ray. axial coronal sagittal slice.
tumour tumor hemorrhage pneumonia opacity consolidation effusion nodule mass edema fracture
left right upper middle lower lung zone lobe ventricle hemisphere frontal parietal temporal occipital
Where is the abnormality? The abnormality is in the left upper region. center right lower
Describe the image. Which image is brighter? image one image two prior current
0 1 2 3 4 5 6 7 8 9 the a an is are of in on at to with and or no not this that there
"""


@dataclass
class TinyBackboneConfig:
    """Sizes of the tiny offline backbone (by default the tiny Qwen2.5-VL of ``../shared/design/STACK.md``)."""

    text_hidden_size: int = 64
    text_intermediate_size: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    mrope_section: list[int] = field(default_factory=lambda: [2, 3, 3])
    vision_depth: int = 4
    vision_hidden_size: int = 64
    vision_intermediate_size: int = 128
    vision_heads: int = 4
    fullatt_block_indexes: list[int] = field(default_factory=lambda: [1, 3])
    window_size: int = 56
    min_pixels: int = 56 * 56
    max_pixels: int = 112 * 112
    vocab_size: int = 512

    def __post_init__(self) -> None:
        head_dim = self.text_hidden_size // self.text_heads
        if sum(self.mrope_section) * 2 != head_dim:
            raise ValueError(f"mrope_section {self.mrope_section} must sum to head_dim/2 = {head_dim // 2}")


def build_tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the project's prompts, with Qwen's special tokens and the chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=QWEN_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([line for line in _CORPUS.strip().splitlines() if line.strip()], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=QWEN_SPECIAL_TOKENS[1:],
        model_input_names=["input_ids", "attention_mask"],
        padding_side="left",
    )
    fast.chat_template = QWEN_CHAT_TEMPLATE
    return fast


def build_tiny_image_processor(cfg: TinyBackboneConfig) -> Qwen2VLImageProcessorPil:
    return Qwen2VLImageProcessorPil(
        min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels, patch_size=14, temporal_patch_size=2, merge_size=2
    )


def build_tiny_qwen2_5_vl(
    cfg: TinyBackboneConfig | None = None, *, seed: int = 0
) -> tuple[Qwen2_5_VLForConditionalGeneration, MedicADProcessor]:
    """Random tiny Qwen2.5-VL and its processor; deterministic for a given ``seed``."""
    cfg = cfg or TinyBackboneConfig()
    tokenizer = build_tiny_tokenizer(cfg.vocab_size)
    vocab = ((len(tokenizer) + 64) // 64) * 64  # spare rows above the tokenizer, as Qwen's vocab has
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab,
            hidden_size=cfg.text_hidden_size,
            intermediate_size=cfg.text_intermediate_size,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads,
            num_key_value_heads=cfg.text_kv_heads,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": list(cfg.mrope_section)},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            depth=cfg.vision_depth,
            hidden_size=cfg.vision_hidden_size,
            intermediate_size=cfg.vision_intermediate_size,
            num_heads=cfg.vision_heads,
            out_hidden_size=cfg.text_hidden_size,
            fullatt_block_indexes=list(cfg.fullatt_block_indexes),
            patch_size=14,
            temporal_patch_size=2,
            spatial_merge_size=2,
            window_size=cfg.window_size,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.eval()
    processor = MedicADProcessor(tokenizer=tokenizer, image_processor=build_tiny_image_processor(cfg))
    return model, processor
