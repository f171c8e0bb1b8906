"""Per-candidate prompt variants in one llama.cpp wave: the shared prefix once, each tail batched.

A request may give some candidates other messages than the shared ones (`GenerationRequest.variants`,
for prompt diversity). Sequence 0 holds the shared prompt, as always (the prompt cache keeps it for
the next request). A candidate with a variant, decoded in sequence k > 0, gets the cells of the
longest common token prefix of its prompt and the shared one (a copy only tags cells: nothing is
evaluated again), then its own tail is evaluated: the tails of a wave together, a batch of rows per
`llama_decode`, with logits for each tail's last token only. The candidate in sequence 0 reads the
shared prompt, so the first candidate of a wave never reads a variant.

KV budget: tails take cells beside the prompt's and the answers'. A variant whose tail does not fit in
the wave's free cells is dropped (its candidate reads the shared prompt), so variants never add a wave.
Exactness: a variant's candidate is deterministic for a given request. A tail alone in its batch
gives what a lone run of its prompt gives on top of the shared prompt's cached prefix
(`reuse_whole_prefix`); it is not promised bit-equal to a cold run (a short tail is evaluated with
the small-batch kernel, see cache.py), nor when other tails share its batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import llama_cpp

from swarm_lsp.models.base import GenerationRequest, Message
from swarm_lsp.models.llamacpp.decoding import common_prefix
from swarm_lsp.models.llamacpp.native import Batch, decode


@dataclass(frozen=True)
class Tail:
    """The part of one candidate's prompt that its sequence evaluates itself."""

    seq_id: int
    start: int
    """The first position evaluated; the positions before it are copied from sequence 0."""
    tokens: list[int]

    @property
    def prompt_length(self) -> int:
        return self.start + len(self.tokens)


def variant_prompts(
    request: GenerationRequest,
    shared: list[int],
    tokens_of: Callable[[Sequence[Message]], list[int]],
    window: int,
) -> dict[int, list[int]]:
    """The token prompts of the candidates whose variant differs from the shared prompt and fits the
    window with the answer; the others read the shared prompt."""
    prompts: dict[int, list[int]] = {}
    for index, messages in enumerate(request.variants or ()):
        if not messages:
            continue
        tokens = tokens_of(messages)
        if tokens != shared and len(tokens) + request.max_tokens <= window:
            prompts[index] = tokens
    return prompts


def plan_tails(
    prompts: Mapping[int, list[int]], shared: Sequence[int], wave: Sequence[int], free_cells: int
) -> dict[int, Tail]:
    """The tails one wave evaluates, by sequence id. Sequence 0 reads the shared prompt; a tail that
    does not fit in what is left of `free_cells` is left out."""
    tails: dict[int, Tail] = {}
    for seq_id, index in enumerate(wave):
        prompt = prompts.get(index)
        if not seq_id or prompt is None:
            continue
        # At least the last token is evaluated: its logits give the first sample.
        start = min(common_prefix(prompt, shared), len(prompt) - 1)
        if len(prompt) - start <= free_cells:
            tails[seq_id] = Tail(seq_id, start, prompt[start:])
            free_cells -= len(prompt) - start
    return tails


def evaluate_tails(
    ctx: int,
    memory: int,
    batch: Batch,
    kv_cells: int,
    rows_per_decode: int,
    tails: Sequence[Tail],
    on_logits: Callable[[int, int], None],
    interrupted: Callable[[], bool],
) -> int:
    """Give each tail's sequence the shared prefix, then evaluate the tails; `on_logits(seq_id, row)`
    is called right after the decode that held a tail's last token (before the batch is reused).
    Stops between decodes when `interrupted()`. Returns the tokens evaluated."""
    for tail in tails:
        # Positions [0, start) of sequence 0: the common prefix.
        llama_cpp.llama_memory_seq_cp(memory, 0, tail.seq_id, -1, tail.start)
    rows = [(tail, offset) for tail in tails for offset in range(len(tail.tokens))]
    evaluated = 0
    for begin in range(0, len(rows), rows_per_decode):
        if interrupted():
            break
        chunk = rows[begin : begin + rows_per_decode]
        batch.clear()
        last_rows: list[tuple[int, int]] = []
        for tail, offset in chunk:
            is_last = offset == len(tail.tokens) - 1
            row = batch.add(tail.tokens[offset], tail.start + offset, tail.seq_id, is_last)
            if is_last:
                last_rows.append((tail.seq_id, row))
        decode(ctx, batch, kv_cells)
        evaluated += len(chunk)
        for seq_id, row in last_rows:
            on_logits(seq_id, row)
    return evaluated
