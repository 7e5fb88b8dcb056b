"""Decoding for multiple-choice questions: score the options at the first answer position, then answer.

Shared by every model built on a Qwen2.5-VL ``generate`` (MEDIC-AD and the bare backbone): the model
supplies a function that runs its ``generate`` with extra logits processors, the head whose first
call is the prefill, and its processor; :func:`generate_choice` does the rest in one pass.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from transformers import LogitsProcessor, LogitsProcessorList

__all__ = ["ChoiceAnswers", "ConstrainedChoice", "generate_choice", "option_tokens"]


@dataclass
class ChoiceAnswers:
    """What :func:`generate_choice` gives per row.

    probs: (B, k) softmax over the k choice tokens' first-answer logits (float32, CPU).
    chosen: (B,) index into the choices of the token the answer starts with (the argmax).
    answers: the decoded answers.
    """

    probs: torch.Tensor
    chosen: torch.Tensor
    answers: list[str]


class ConstrainedChoice(LogitsProcessor):
    """Multiple-choice decoding: score the choices at the first answer position, then answer with one.

    At the first generated position: softmax over the choice tokens' logits, and their argmax is forced.
    The probabilities come from the logits the LM head produced (captured by :meth:`watch`), not from
    the scores ``generate`` hands over: processors of the checkpoint's generation config (e.g. a
    ``repetition_penalty``) run before custom ones and would otherwise change them. The forcing runs
    last, so it wins. With ``completions`` (each choice's whole answer, first token included, then
    ``end``) the later positions are forced to the chosen answer too, so the text cannot contradict the
    decision; without, they are left to the model. ``force=False`` only scores: the answer is the
    model's own greedy text (free decoding). One instance serves one ``generate`` call.
    """

    def __init__(self, choices: Sequence[int], completions: Sequence[Sequence[int]] | None = None,
                 end: int | None = None, *, force: bool = True, bias: Sequence[float] | None = None) -> None:
        self.choices = [int(c) for c in choices]
        self.force = force
        if bias is not None and len(bias) != len(self.choices):
            raise ValueError(f"{len(bias)} choice offsets for {len(self.choices)} choices")
        self.bias = None if bias is None else torch.tensor([float(b) for b in bias])
        if completions is not None:
            if len(completions) != len(self.choices) or any(
                    not seq or int(seq[0]) != c for seq, c in zip(completions, self.choices)):
                raise ValueError("each completion must start with its choice token, one completion per choice")
            if end is None:
                raise ValueError("completions need the end token that closes an answer")
            completions = [[int(t) for t in seq] + [int(end)] for seq in completions]
        self.completions = completions
        self.probs: torch.Tensor | None = None
        self.chosen: torch.Tensor | None = None
        self._raw: torch.Tensor | None = None
        self._start = 0

    @contextmanager
    def watch(self, head: nn.Module) -> Iterator["ConstrainedChoice"]:
        """Keep the last-position logits of ``head``'s first call (the prefill) while inside."""

        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if self._raw is None:
                self._raw = output[:, -1].float()

        handle = head.register_forward_hook(hook)
        try:
            yield self
        finally:
            handle.remove()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.chosen is None:
            logits = scores if self._raw is None else self._raw.to(scores.device)
            picked = logits[:, self.choices]
            if self.bias is not None:  # calibration offsets: the decision and its probabilities move together
                picked = picked + self.bias.to(picked.device, picked.dtype)
            self.probs = torch.softmax(picked, -1)
            self.chosen = self.probs.argmax(-1)  # ties: the first choice, so P(first) >= 0.5 <=> chosen == 0
            self._start = input_ids.shape[1]
            if not self.force:
                return scores
            token = torch.tensor(self.choices, device=scores.device)[self.chosen]
        elif self.completions is None or not self.force:
            return scores
        else:
            step = input_ids.shape[1] - self._start
            token = torch.tensor([seq[min(step, len(seq) - 1)] for seq in
                                  (self.completions[c] for c in self.chosen.tolist())], device=scores.device)
        return torch.full_like(scores, float("-inf")).scatter_(1, token[:, None], 0.0)


def option_tokens(processor: Any, options: Sequence[str]) -> list[int]:
    """The token each option's answer starts with: what is scored. Options must start differently."""
    tokens = [processor.first_token_id(option) for option in options]
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"options {list(options)} do not start with distinct tokens; they cannot be scored")
    return tokens


GenerateRows = Callable[[LogitsProcessorList, int], list[list[int]]]


@torch.no_grad()
def generate_choice(generate_rows: GenerateRows, *, head: nn.Module, processor: Any, choices: Sequence[int],
                    max_new_tokens: int = 8, completions: Sequence[str] | None = None,
                    force: bool = True, bias: Sequence[float] | None = None) -> ChoiceAnswers:
    """Score the ``choices`` tokens as the first answer token and answer, in one ``generate``.

    ``generate_rows(logits_processor, max_new_tokens)`` runs the model's greedy ``generate`` and gives
    the new token ids per row; ``head`` is the LM head (its first call is the prefill, whose logits
    the probabilities come from). With ``completions`` (each choice's whole answer text, e.g.
    ``"C: Worsened"``) the answer is the chosen one verbatim, cut at ``max_new_tokens``; without, the
    tokens after the forced choice are greedy; ``force=False`` forces nothing (free decoding).
    ``bias`` (one per choice) is added to the choices' logits before they are scored and chosen.
    """
    sequences = None if completions is None else [processor.answer_token_ids(c) for c in completions]
    choice = ConstrainedChoice(choices, sequences, end=processor.end_token_id, force=force, bias=bias)
    with choice.watch(head):
        rows = generate_rows(LogitsProcessorList([choice]), max(max_new_tokens, 1))
    if choice.probs is None:
        raise RuntimeError("generate produced no first step; no choice was scored")
    return ChoiceAnswers(probs=choice.probs.float().cpu(), chosen=choice.chosen.cpu(),
                         answers=[processor.decode(r) for r in rows])
