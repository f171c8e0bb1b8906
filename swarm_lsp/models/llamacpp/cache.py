"""The prompt kept in KV sequence 0 between requests, and how much of it the next prompt reuses.

After a request, sequence 0 keeps the prompt's KV (generated tokens are removed) and its tokens
are remembered. The next request keeps the longest common token prefix that leaves the result
exactly that of a cold run, and evaluates only the rest.
"""

from __future__ import annotations

import itertools
import time

import llama_cpp

from swarm_lsp.models.llamacpp.decoding import DecodeJob, common_prefix
from swarm_lsp.models.llamacpp.native import TILED_UBATCH_MIN_TOKENS, Batch, decode


class PromptCache:
    """Sequence 0 of one context's KV memory, and the tokens it holds.

    Not thread-safe: the backend calls it under its lock.
    """

    def __init__(
        self, ctx: int, memory: int, batch: Batch, *, n_batch: int, kv_cells: int, scratch_seq_id: int
    ) -> None:
        self._ctx = ctx
        self._memory = memory
        self._batch = batch
        self._n_batch = n_batch
        self._kv_cells = kv_cells
        self._scratch_seq_id = scratch_seq_id
        self.tokens: list[int] = []

    def evaluate(self, job: DecodeJob) -> int | None:
        """Bring sequence 0 to hold the prompt, evaluating only what the cache lacks.

        Returns the batch row holding the last prompt token's logits, or None when the request was
        cancelled or timed out between chunks.
        """
        batch = self._batch
        prompt = job.prompt
        reused = self.trim(self._reusable_prefix(prompt, whole=job.request.reuse_whole_prefix))
        if job.stats.waves <= 1:
            job.stats.reused_tokens = reused
        started = time.perf_counter()
        row = 0
        for start, end in self._prefill_chunks(reused, len(prompt)):
            if job.interruption():
                return None
            chunk = prompt[start:end]
            batch.clear()
            for offset, token in enumerate(chunk):
                row = batch.add(token, start + offset, 0, start + offset == len(prompt) - 1)
            try:
                decode(self._ctx, batch, self._kv_cells)
            except BaseException:
                self.forget()
                raise
            self.tokens.extend(chunk)
        job.stats.evaluated_prompt_tokens += len(prompt) - reused
        job.stats.prefill_s += time.perf_counter() - started
        return row

    def _reusable_prefix(self, prompt: list[int], *, whole: bool = False) -> int:
        """How much of the cached prompt to keep so the result is exactly that of a cold run.

        ggml's CPU flash attention computes a ubatch of 64 or more tokens with a tiled kernel whose
        rounding differs from the one used for smaller ubatches. Prompts are therefore always
        evaluated in chunks of at least 64 tokens (see _prefill_chunks), and reuse keeps that
        true: a cached prefix shorter than 64 tokens came from a small chunk and is not reused,
        and at least the last 64 prompt tokens are evaluated again (which also yields the logits
        of the last token for the first sample). `whole` (the request's `reuse_whole_prefix`) keeps
        everything but the last token instead.
        """
        common = common_prefix(self.tokens, prompt)
        if whole:  # the request gave up exactness for speed: keep all but the last token
            return max(0, min(common, len(prompt) - 1))
        if common < TILED_UBATCH_MIN_TOKENS:
            return 0
        return max(0, min(common, len(prompt) - TILED_UBATCH_MIN_TOKENS))

    def _prefill_chunks(self, start: int, end: int) -> list[tuple[int, int]]:
        """Split [start, end) into near-equal chunks of at most n_batch tokens.

        Equal chunks are never below n_batch / 2 >= 64 tokens when the span has 64 or more, so
        every prompt token goes through the same kernel however the prompt was split.
        """
        span = end - start
        count = max(1, -(-span // self._n_batch))
        bounds = [start + span * i // count for i in range(count + 1)]
        return list(itertools.pairwise(bounds))

    def trim(self, keep: int) -> int:
        """Drop every sequence but 0 and sequence 0's positions from `keep`; returns what is kept."""
        for seq_id in range(1, self._scratch_seq_id + 1):
            llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
        if not llama_cpp.llama_memory_seq_rm(self._memory, 0, keep, -1):
            # Some memories (recurrent, sliding window) cannot drop a tail; start over instead.
            self.forget()
            return 0
        del self.tokens[keep:]
        return keep

    def keep_only_prompt(self, prompt_tokens: int) -> None:
        self.trim(min(prompt_tokens, len(self.tokens)))

    def forget(self) -> None:
        llama_cpp.llama_memory_clear(self._memory, True)
        self.tokens = []
