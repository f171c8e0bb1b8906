"""What one llama.cpp request keeps while it decodes: per-candidate text, prompt-lookup drafts, stats.

Prompt lookup (request.prompt_lookup). Each candidate drafts the tokens that followed the latest
earlier occurrence of its last 3, 2 or 1 tokens in prompt + output; the drafts ride in the same
step and are kept while the sampled token equals the draft. It pays when the answer copies the
prompt (edits of given code); on a small CPU model a drafted row costs nearly a sampled one, so
the draft length adapts to how often a candidate's drafts were accepted (`next_draft_limit`).

Plain Python: nothing here calls llama.cpp, so it is tested without a model.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from swarm_lsp.basics import CancellationToken
from swarm_lsp.models.base import Candidate, Deadline, FinishReason, GenerationRequest, GenerationTimeout
from swarm_lsp.models.stops import find_stop, stop_prefix_length

BACKEND_NAME = "llama.cpp"
DEFAULT_DRAFT_TOKENS = 8
LOOKUP_NGRAM_SIZES = (3, 2, 1)
"""Prompt lookup tries the longest n-gram first: a longer match predicts the continuation better."""


@dataclass
class GenerationStats:
    """What the last request cost; the benchmark and the tests read it."""

    prompt_tokens: int = 0
    reused_tokens: int = 0
    """Prompt tokens found already evaluated in the KV cache (first wave)."""
    evaluated_prompt_tokens: int = 0
    """Prompt tokens actually run through the model, all waves together."""
    prefill_s: float = 0.0
    generation_s: float = 0.0
    """Wall time of the token steps (sampling the first token included)."""
    decode_s: float = 0.0
    """Time inside llama_decode during the token steps."""
    sampling_s: float = 0.0
    """Time inside llama.cpp's sampler chains."""
    steps: int = 0
    generated_tokens: int = 0
    drafted_tokens: int = 0
    accepted_draft_tokens: int = 0
    waves: int = 0
    variant_tokens: int = 0
    """Tokens of candidates' own prompt tails (`GenerationRequest.variants`), evaluated beside the
    shared prompt."""

    @property
    def overhead_s(self) -> float:
        """Time of the token steps spent outside llama_decode (Python, sampling, detokenizing)."""
        return max(0.0, self.generation_s - self.decode_s)

    @property
    def overhead_per_step_s(self) -> float:
        return self.overhead_s / self.steps if self.steps else 0.0

    @property
    def python_per_step_s(self) -> float:
        """Per step, the time spent in Python alone: outside llama_decode and the samplers."""
        python_s = max(0.0, self.generation_s - self.decode_s - self.sampling_s)
        return python_s / self.steps if self.steps else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.generated_tokens / self.generation_s if self.generation_s else 0.0


class CandidateText:
    """One candidate's text: UTF-8 safe across token pieces, cut at stop strings, streamed safely.

    Text that could be the start of a stop string is held back from streaming until it is clear,
    so the streamed pieces always concatenate to the final text.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        # An incremental decoder buffers a multi-byte character split across tokens.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = [stop for stop in stops if stop]
        self._longest_stop = max((len(stop) for stop in self._stops), default=0)
        self._streamed = 0
        self.text = ""
        self.stopped = False

    def add(self, piece: bytes) -> str:
        """Append a token's bytes; return the text that is now safe to stream."""
        new_text = self._decoder.decode(piece)
        if not new_text:
            return ""
        scan_from = max(0, len(self.text) - self._longest_stop + 1)
        self.text += new_text
        if not self._stops:
            return self._release(len(self.text))
        cut = find_stop(self.text, self._stops, scan_from)
        if cut is not None:
            self.text = self.text[:cut]
            self.stopped = True
            return self._release(cut)
        return self._release(len(self.text) - stop_prefix_length(self.text, self._stops))

    def flush(self) -> str:
        """Everything not streamed yet; an incomplete trailing character is dropped, not garbled."""
        return self._release(len(self.text))

    def _release(self, end: int) -> str:
        if end <= self._streamed:
            return ""
        released = self.text[self._streamed : end]
        self._streamed = end
        return released


NgramIndex = dict[tuple[int, ...], int]
SamplerHandle = Any
"""A `struct llama_sampler *` as ctypes returns it."""


class PromptLookup:
    """Drafts tokens for one sequence by finding its latest n-gram earlier in prompt + output.

    The index maps each n-gram to the position right after its latest occurrence, so a lookup is
    one dict access instead of a scan of the prompt.
    """

    def __init__(self, prompt: list[int], prompt_index: NgramIndex) -> None:
        self._tokens = list(prompt)
        self._index = dict(prompt_index)

    @staticmethod
    def index(tokens: Sequence[int]) -> NgramIndex:
        index: NgramIndex = {}
        for size in LOOKUP_NGRAM_SIZES:
            for end in range(size, len(tokens)):
                index[tuple(tokens[end - size : end])] = end
        return index

    def append(self, token: int) -> None:
        tokens = self._tokens
        end = len(tokens)
        tokens.append(token)
        for size in LOOKUP_NGRAM_SIZES:
            if end >= size:
                self._index[tuple(tokens[end - size : end])] = end

    def draft(self, limit: int) -> list[int]:
        if limit <= 0:
            return []
        tokens = self._tokens
        for size in LOOKUP_NGRAM_SIZES:
            if len(tokens) < size:
                continue
            follows = self._index.get(tuple(tokens[-size:]))
            if follows is not None:
                return tokens[follows : follows + limit]
        return []


@dataclass(eq=False)
class DecodeSequence:
    """One candidate being decoded in one KV sequence."""

    index: int
    seq_id: int
    sampler: SamplerHandle
    text: CandidateText
    lookup: PromptLookup | None
    position: int
    """The KV position the pending token goes to."""
    pending: int = -1
    """The last sampled token, not yet in the KV cache."""
    generated: int = 0
    finish_reason: FinishReason | None = None
    draft_limit: int = DEFAULT_DRAFT_TOKENS
    prompt_tokens: int = 0
    """The length of the prompt this candidate read (the shared one, or its variant)."""


@dataclass(eq=False)
class DecodeJob:
    """The state of one generate() call across its waves."""

    request: GenerationRequest
    cancel: CancellationToken
    deadline: Deadline
    started: float
    ignore_eog: bool
    stats: GenerationStats
    prompt: list[int] = field(default_factory=list)
    candidates: dict[int, Candidate] = field(default_factory=dict)
    prompt_index: NgramIndex | None = None
    scratch_cells: int = 0
    """KV cells this wave may still fill with drafts that could be rejected."""
    variant_prompts: dict[int, list[int]] = field(default_factory=dict)
    """Token prompts of the candidates that read a variant of the shared prompt, by index."""

    def candidate(
        self, index: int, text: str, reason: FinishReason, completion_tokens: int, prompt_tokens: int = 0
    ) -> Candidate:
        return Candidate(
            index=index,
            text=text,
            finish_reason=reason,
            sampling=self.request.sampling_for(index),
            completion_tokens=completion_tokens,
            prompt_tokens=prompt_tokens or len(self.prompt),
            elapsed_s=time.monotonic() - self.started,
            backend=BACKEND_NAME,
        )

    def collect(self) -> list[Candidate]:
        """The candidates in index order; ones never decoded carry the interruption's reason."""
        reason = self.interruption() or "cancelled"
        candidates = [
            self.candidates.get(index) or self.candidate(index, "", reason, 0)
            for index in range(self.request.n)
        ]
        if any(candidate.finish_reason == "timeout" for candidate in candidates):
            raise GenerationTimeout(
                f"generation did not finish within {self.request.timeout} s "
                f"({sum(c.completion_tokens for c in candidates)} tokens produced); "
                "the partial candidates are attached",
                partial=candidates,
            )
        return candidates

    def interruption(self) -> FinishReason | None:
        if self.cancel.cancelled:
            return "cancelled"
        if self.deadline.passed:
            return "timeout"
        return None


def next_draft_limit(limit: int, drafted: int, accepted: int, most: int) -> int:
    """Draft longer after full acceptance, shorter after a rejection.

    On a CPU every drafted row costs nearly as much as a sampled one, so guesses that keep failing
    must get cheap quickly, while a sequence that is copying earns long drafts (up to `most`).
    """
    if accepted == drafted:
        return min(most, limit * 2)
    return accepted + 1


def common_prefix(first: Sequence[int], second: Sequence[int]) -> int:
    """How many leading tokens the two sequences share."""
    limit = min(len(first), len(second))
    same = 0
    while same < limit and first[same] == second[same]:
        same += 1
    return same
