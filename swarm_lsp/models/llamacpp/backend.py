"""llama.cpp backend: one loaded GGUF model, n candidates decoded together in one batch.

It drives llama.cpp's low-level API (through native.py) so that the candidates of a request share
one evaluated prompt: the prompt is evaluated once in KV sequence 0 and copied to sequences
1..n-1 (a copy only tags the shared cells, the cache is unified), then every step is ONE
`llama_decode` holding one token per live candidate: the prompt is paid once and the weights are
read once per step for all candidates.

KV cache sizing. With `kv_unified=True` the cache is one pool of cells for all sequences and the
prompt's cells are shared by every candidate, so a request needs `prompt + n * max_tokens` cells.
We allocate `n_ctx + (n_seq_max - 1) * (generation_reserve + variant_reserve)` cells: one full
window (prompt plus new tokens) for the first candidate, and `generation_reserve` new tokens plus
`variant_reserve` for its own ending of the prompt (variants.py) for each other one. A request
whose prompt plus max_tokens exceeds `n_ctx` raises ContextOverflow; one whose n candidates do not
fit in the pool at once (or n > n_seq_max) runs in waves, each wave reusing the cached prompt.

Prefix reuse (cache.py). After a request, sequence 0 keeps the prompt's KV (generated tokens are
removed) and we remember its tokens. The next request keeps the longest common token prefix and
evaluates only the rest, so multi-turn chat and prompts that share a long context are cheap.
`last_stats` shows how many tokens were reused.

Exactness. A candidate's tokens do not depend on what it was batched with, how its prompt was
split, or what was cached: greedy candidates of a batch equal a single greedy run, a warm prefix
gives the cold output, and prompt-lookup drafts give the plain output. That takes two rules (see
TILED_UBATCH_MIN_TOKENS and _park_rejected): keep every token on the same attention kernel, and
keep each sequence's cells in position order. One case escapes them: ggml's CPU kernel decodes a
step of exactly one row over 512 or more KV cells by splitting the cells across threads, which
rounds differently, so a lone candidate with a long prompt can differ in a near-tie from the same
candidate decoded beside others. Padding such steps with a second row would cost a token's
compute per step, which exactness is not worth.

Prompt variants (request.variants, variants.py): candidates may read their own ending of the
prompt; each copies the common prefix and evaluates only its tail. Prompt lookup
(request.prompt_lookup, decoding.py): drafts of tokens copied from the prompt ride in the steps.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import llama_cpp

from swarm_lsp.basics import CancellationToken
from swarm_lsp.models.base import (
    BackendInfo,
    BackendUnavailable,
    Candidate,
    ContextOverflow,
    Deadline,
    FinishReason,
    GenerationRequest,
    Message,
    ModelError,
    Sampling,
    run_cancellable,
)
from swarm_lsp.models.completion_prompt import completion_prompt
from swarm_lsp.models.hardware import VARIANT_TOKENS
from swarm_lsp.models.llamacpp.cache import PromptCache
from swarm_lsp.models.llamacpp.decoding import (
    BACKEND_NAME,
    DEFAULT_DRAFT_TOKENS,
    CandidateText,
    DecodeJob,
    DecodeSequence,
    GenerationStats,
    PromptLookup,
    SamplerHandle,
    next_draft_limit,
)
from swarm_lsp.models.llamacpp.native import (
    TILED_UBATCH_MIN_TOKENS,
    Batch,
    chat_formatter,
    create_context,
    decode,
    default_thread_count,
    eog_ban_sampler,
    eog_tokens,
    fim_markers,
    load_model,
    native_log,
    new_sampler,
    token_piece,
)
from swarm_lsp.models.llamacpp.variants import Tail, evaluate_tails, plan_tails, variant_prompts

DEFAULT_N_CTX = 4096
DEFAULT_GENERATION_RESERVE = 512
DEFAULT_VARIANT_RESERVE = VARIANT_TOKENS

STEP_ROWS_MAX = TILED_UBATCH_MIN_TOKENS - 1
MIN_N_BATCH = 2 * TILED_UBATCH_MIN_TOKENS

LOCK_POLL_S = 0.05
"""How often a request waiting for the context re-checks its cancellation token and deadline."""


class LlamaCppBackend:
    """A GGUF model served by llama.cpp; the n candidates of a request decode in one batch.

    Requests are serialized on the one context; decoding runs on a worker thread and checks the
    cancellation token and deadline once per token step.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_ctx: int = DEFAULT_N_CTX,
        n_seq_max: int = 8,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        n_batch: int = 512,
        generation_reserve: int = DEFAULT_GENERATION_RESERVE,
        variant_reserve: int = DEFAULT_VARIANT_RESERVE,
        draft_tokens: int = DEFAULT_DRAFT_TOKENS,
        model_name: str | None = None,
        verbose: bool = False,
    ) -> None:
        """Load the model once and create its context.

        n_ctx: the window of one request (prompt + new tokens). n_seq_max: candidates decoded
        together; more run in waves. generation_reserve: new tokens budgeted in the KV cache for
        each candidate after the first; variant_reserve: cells for its own prompt ending (see the
        module doc). draft_tokens: most tokens drafted per step by prompt lookup. verbose: pass
        llama.cpp's own log to Python logging (process-wide).
        """
        if (
            n_ctx < 16
            or n_seq_max < 1
            or n_batch < MIN_N_BATCH
            or generation_reserve < 1
            or min(draft_tokens, variant_reserve) < 0
        ):
            raise ValueError(
                f"n_ctx must be at least 16, n_batch at least {MIN_N_BATCH}, n_seq_max and "
                "generation_reserve at least 1, draft_tokens and variant_reserve at least 0 "
                f"(got n_ctx={n_ctx}, n_seq_max={n_seq_max}, n_batch={n_batch}, "
                f"generation_reserve={generation_reserve}, draft_tokens={draft_tokens}, "
                f"variant_reserve={variant_reserve})"
            )
        self.model_path = Path(model_path).expanduser()
        self.n_ctx = n_ctx
        self.n_seq_max = n_seq_max
        self.n_threads = n_threads or default_thread_count()
        self.n_threads_batch = n_threads_batch or self.n_threads
        self.n_batch = n_batch
        self.generation_reserve = generation_reserve
        self.variant_reserve = variant_reserve
        self.draft_tokens = draft_tokens
        self.model_name = model_name or self.model_path.name.removesuffix(".gguf")
        self.last_stats: GenerationStats | None = None

        self._lock = threading.Lock()
        self._closed = False
        self._model = None
        self._ctx = None
        self._batch: Batch | None = None
        self._pieces: dict[int, bytes] = {}
        self._eog_tokens: list[int] | None = None

        native_log.forward_all = verbose
        native_log.install_once()
        self._model = load_model(self.model_path)
        try:
            self._vocab = llama_cpp.llama_model_get_vocab(self._model)
            self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
            self.n_ctx_train = llama_cpp.llama_model_n_ctx_train(self._model)
            self._formatter = chat_formatter(self._model, self._vocab)
            self._fim = fim_markers(self._vocab)
            self._ctx = self._create_context()
            self._memory = llama_cpp.llama_get_memory(self._ctx)
            self.kv_cells = llama_cpp.llama_n_ctx(self._ctx)
            self._batch = Batch(self._batch_capacity)
            self._cache = PromptCache(
                self._ctx,
                self._memory,
                self._batch,
                n_batch=self.n_batch,
                kv_cells=self.kv_cells,
                scratch_seq_id=self._scratch_seq_id,
            )
        except BaseException:
            self.close()
            raise

    # -- public surface ------------------------------------------------------------------------

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(
            backend=BACKEND_NAME,
            model=self.model_name,
            context_length=self.n_ctx,
            max_parallel=self.n_seq_max,
            detail=(
                f"{self.model_path}; trained context {self.n_ctx_train}; {self.kv_cells} KV cells; "
                f"{self.n_threads} threads"
            ),
            fim=self._fim,
        )

    @property
    def context_length(self) -> int:
        """The window of one request: prompt plus new tokens."""
        return self.n_ctx

    @property
    def context_length_trained(self) -> int:
        """The context the model was trained with (GGUF n_ctx_train)."""
        return self.n_ctx_train

    async def generate(self, request: GenerationRequest) -> list[Candidate]:
        started = time.monotonic()
        deadline = Deadline(request.timeout)
        return await run_cancellable(
            lambda token: self._generate(request, token, deadline, started, ignore_eog=False),
            request.cancel,
        )

    def generate_blocking(
        self,
        request: GenerationRequest,
        cancel: CancellationToken | None = None,
        *,
        ignore_eog: bool = False,
    ) -> list[Candidate]:
        """generate() on the calling thread. ignore_eog bans end-of-generation tokens so exactly
        max_tokens are produced; it exists for benchmarks, not for answers."""
        token = cancel or request.cancel or CancellationToken()
        return self._generate(
            request, token, Deadline(request.timeout), time.monotonic(), ignore_eog=ignore_eog
        )

    @property
    def has_chat_template(self) -> bool:
        """False for a base model: its prompts are plain completions (`completion_prompt`)."""
        return self._formatter is not None

    def render_prompt(self, messages: Sequence[Message]) -> str:
        """The messages in the model's chat template, ending where the assistant's answer starts;
        for a model without one, as a plain completion prompt."""
        if self._formatter is None:
            return completion_prompt(messages)
        try:
            rendered = self._formatter(messages=[{"role": m.role, "content": m.content} for m in messages])
        except Exception as error:  # jinja templates raise their own exception types
            raise ModelError(
                f"the chat template of {self.model_name} rejected the messages: {error}"
            ) from error
        return rendered.prompt

    def request_tokens(self, request: GenerationRequest) -> list[int]:
        """The prompt of `request` as tokens: its raw text, or its messages in the chat template."""
        if request.prompt is not None:
            return self._with_bos(self.tokenize(request.prompt, special=True))
        return self.prompt_tokens(request.messages)

    def prompt_tokens(self, messages: Sequence[Message]) -> list[int]:
        return self._with_bos(self.tokenize(self.render_prompt(messages), special=True))

    def _with_bos(self, tokens: list[int]) -> list[int]:
        bos = llama_cpp.llama_vocab_bos(self._vocab)
        if llama_cpp.llama_vocab_get_add_bos(self._vocab) and bos >= 0 and tokens[:1] != [bos]:
            tokens.insert(0, bos)
        return tokens

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """Token ids of `text`; `special` parses control-token text such as <|im_start|>."""
        self._ensure_open()
        data = text.encode("utf-8")
        capacity = len(data) + 8
        for _ in range(2):
            buffer = (llama_cpp.llama_token * capacity)()
            count = llama_cpp.llama_tokenize(self._vocab, data, len(data), buffer, capacity, False, special)
            if count >= 0:
                return buffer[:count]
            capacity = -count
        raise ModelError(f"llama.cpp could not tokenize a text of {len(data)} bytes")

    def detokenize(self, tokens: Sequence[int]) -> str:
        self._ensure_open()
        return b"".join(self._piece(token) for token in tokens).decode("utf-8", errors="replace")

    def reset_cache(self) -> None:
        """Forget the cached prompt so the next request evaluates its prompt from scratch."""
        with self._lock:
            if self._ctx is not None:
                self._cache.forget()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Free the batch, context and model. Idempotent; waits for a running request to finish."""
        with self._lock:
            self._closed = True
            if self._batch is not None:
                self._batch.free()
                self._batch = None
            if self._ctx is not None:
                llama_cpp.llama_free(self._ctx)
                self._ctx = None
            if self._model is not None:
                llama_cpp.llama_model_free(self._model)
                self._model = None

    def __del__(self) -> None:
        # At interpreter shutdown llama_cpp may already be torn down; nothing to report then.
        with contextlib.suppress(Exception):
            self.close()

    # -- loading ---------------------------------------------------------------------------------

    @property
    def _batch_capacity(self) -> int:
        # One step holds up to (1 + draft) tokens per sequence; prompt chunks hold n_batch tokens.
        return max(self.n_batch, self.n_seq_max * (self.draft_tokens + 1))

    def _create_context(self) -> int:
        return create_context(
            self._model,
            kv_cells=self.n_ctx + (self.n_seq_max - 1) * (self.generation_reserve + self.variant_reserve),
            n_batch=self._batch_capacity,
            n_seq_max=self.n_seq_max + 1,  # the last one parks rejected drafts
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads_batch,
            model_name=self.model_name,
        )

    # -- one request -----------------------------------------------------------------------------

    def _generate(
        self,
        request: GenerationRequest,
        cancel: CancellationToken,
        deadline: Deadline,
        started: float,
        *,
        ignore_eog: bool,
    ) -> list[Candidate]:
        self._ensure_open()
        job = DecodeJob(request, cancel, deadline, started, ignore_eog, GenerationStats())
        if self._acquire(job):
            try:
                # Tokenize under the lock too: close() may free the vocabulary meanwhile.
                self._ensure_open()
                job.prompt = self.request_tokens(request)
                job.stats.prompt_tokens = len(job.prompt)
                self._check_fits(len(job.prompt), request.max_tokens)
                job.variant_prompts = variant_prompts(request, job.prompt, self.prompt_tokens, self.n_ctx)
                self._run_waves(job)
            finally:
                self.last_stats = job.stats
                self._lock.release()
        return job.collect()

    def _check_fits(self, prompt_tokens: int, max_tokens: int) -> None:
        if prompt_tokens + max_tokens > self.n_ctx:
            raise ContextOverflow(
                f"The prompt is {prompt_tokens} tokens and max_tokens is {max_tokens}: together they "
                f"exceed the context window of {self.n_ctx} tokens. Shorten the prompt (fewer or "
                f"smaller context files), lower max_tokens, or raise n_ctx (the model was trained "
                f"with {self.n_ctx_train})."
            )

    def _acquire(self, job: DecodeJob) -> bool:
        while not self._lock.acquire(timeout=LOCK_POLL_S):
            if job.interruption():
                return False
        return True

    def _ensure_open(self) -> None:
        if self._closed:
            raise BackendUnavailable(f"the llama.cpp backend for {self.model_name} was closed")

    def _run_waves(self, job: DecodeJob) -> None:
        waiting = list(range(job.request.n))
        wave_size = self._wave_size(len(job.prompt), job.request.max_tokens)
        while waiting and not job.interruption():
            wave, waiting = waiting[:wave_size], waiting[wave_size:]
            job.stats.waves += 1
            self._run_wave(job, wave)

    def _wave_size(self, prompt_tokens: int, max_tokens: int) -> int:
        room_for_candidates = (self.kv_cells - prompt_tokens) // max_tokens
        return max(1, min(self.n_seq_max, room_for_candidates))

    # -- one wave: prompt once, then one llama_decode per step -----------------------------------

    @property
    def _scratch_seq_id(self) -> int:
        return self.n_seq_max

    def _run_wave(self, job: DecodeJob, indices: list[int]) -> None:
        logits_row = self._cache.evaluate(job)
        if logits_row is None:
            return
        free_cells = self.kv_cells - len(job.prompt) - len(indices) * job.request.max_tokens
        tails = plan_tails(job.variant_prompts, job.prompt, indices, free_cells)
        job.scratch_cells = free_cells - sum(len(tail.tokens) for tail in tails.values())
        sequences: list[DecodeSequence] = []
        try:
            for seq_id, index in enumerate(indices):
                tail = tails.get(seq_id)
                sequences.append(self._open_sequence(job, index, seq_id, tail))
                if seq_id and tail is None:
                    llama_cpp.llama_memory_seq_cp(self._memory, 0, seq_id, -1, -1)
            step_started = time.perf_counter()
            for sequence in sequences:
                if sequence.seq_id not in tails:  # the others sample after their tails
                    self._accept(job, sequence, self._sample(job, sequence, logits_row))
            job.stats.generation_s += time.perf_counter() - step_started
            if tails:
                self._evaluate_tails(job, sequences, list(tails.values()))
            self._decode_steps(job, sequences)
        finally:
            for sequence in sequences:
                llama_cpp.llama_sampler_free(sequence.sampler)
            self._cache.keep_only_prompt(len(job.prompt))

    def _open_sequence(self, job: DecodeJob, index: int, seq_id: int, tail: Tail | None) -> DecodeSequence:
        sampling = job.request.sampling_for(index)
        prompt = job.prompt if tail is None else job.variant_prompts[index]
        lookup = None
        if job.request.prompt_lookup and self.draft_tokens:
            if tail is None and job.prompt_index is None:
                job.prompt_index = PromptLookup.index(job.prompt)
            ngrams = job.prompt_index if tail is None else PromptLookup.index(prompt)
            lookup = PromptLookup(prompt, ngrams)
        return DecodeSequence(
            index=index,
            seq_id=seq_id,
            sampler=self._new_sampler(sampling, job.ignore_eog),
            text=CandidateText(job.request.stop),
            lookup=lookup,
            position=len(prompt),
            draft_limit=self.draft_tokens,
            prompt_tokens=len(prompt),
        )

    def _evaluate_tails(self, job: DecodeJob, sequences: list[DecodeSequence], tails: list[Tail]) -> None:
        """Evaluate the variants' tails beside the shared prompt; sample each one's first token."""
        by_seq = {sequence.seq_id: sequence for sequence in sequences}

        def first_token(seq_id: int, row: int) -> None:
            self._accept(job, by_seq[seq_id], self._sample(job, by_seq[seq_id], row))

        started = time.perf_counter()
        job.stats.variant_tokens += evaluate_tails(
            self._ctx,
            self._memory,
            self._batch,
            self.kv_cells,
            self.n_batch,
            tails,
            first_token,
            lambda: job.interruption() is not None,
        )
        job.stats.prefill_s += time.perf_counter() - started

    def _decode_steps(self, job: DecodeJob, sequences: list[DecodeSequence]) -> None:
        batch = self._batch
        assert batch is not None
        stats = job.stats
        max_tokens = job.request.max_tokens
        while live := [s for s in sequences if s.finish_reason is None]:
            reason = job.interruption()
            if reason:
                for sequence in live:
                    self._finish(job, sequence, reason)
                return
            step_started = time.perf_counter()
            batch.clear()
            rows: list[tuple[DecodeSequence, int, list[int]]] = []
            spare_rows = STEP_ROWS_MAX - len(live)
            for sequence in live:
                drafts = self._drafts(sequence, max_tokens, min(job.scratch_cells, spare_rows))
                job.scratch_cells -= len(drafts)
                spare_rows -= len(drafts)
                first_row = batch.add(sequence.pending, sequence.position, sequence.seq_id, True)
                for offset, token in enumerate(drafts, start=1):
                    batch.add(token, sequence.position + offset, sequence.seq_id, True)
                rows.append((sequence, first_row, drafts))
            decode_started = time.perf_counter()
            decode(self._ctx, batch, self.kv_cells)
            stats.decode_s += time.perf_counter() - decode_started
            for sequence, first_row, drafts in rows:
                self._advance(job, sequence, first_row, drafts)
            stats.steps += 1
            stats.generation_s += time.perf_counter() - step_started

    def _drafts(self, sequence: DecodeSequence, max_tokens: int, room: int) -> list[int]:
        if sequence.lookup is None:
            return []
        # Never draft past max_tokens: the token sampled after the last draft is emitted too. And
        # never more than `room`: the free cells that can park rejected drafts, and the rows that
        # keep the step below the tiled-kernel size.
        limit = min(sequence.draft_limit, max_tokens - sequence.generated - 1, room)
        return sequence.lookup.draft(limit)

    def _advance(self, job: DecodeJob, sequence: DecodeSequence, first_row: int, drafts: list[int]) -> None:
        """Sample the step's token(s) for one sequence; with drafts, keep sampling while they match.

        Sampling stops at the first mismatch, so a sampler draws exactly once per emitted token and
        the output equals decoding without drafts.
        """
        accepted = 0
        while True:
            token = self._sample(job, sequence, first_row + accepted)
            self._accept(job, sequence, token)
            if sequence.finish_reason is not None or accepted == len(drafts) or token != drafts[accepted]:
                break
            accepted += 1
        job.stats.drafted_tokens += len(drafts)
        job.stats.accepted_draft_tokens += accepted
        # Accepted drafts kept their cells; the rest of this step's drafts are returned to the
        # budget at the end of the wave, when the parked cells are freed.
        job.scratch_cells += accepted
        if drafts:
            sequence.draft_limit = next_draft_limit(
                sequence.draft_limit, len(drafts), accepted, self.draft_tokens
            )
        if sequence.finish_reason is None and accepted < len(drafts):
            self._park_rejected(sequence.seq_id, sequence.position + accepted + 1)
        sequence.position += accepted + 1

    def _park_rejected(self, seq_id: int, first_rejected: int) -> None:
        """Take rejected draft cells away from a sequence without freeing them until the wave ends.

        Freed cells would be refilled by the next step, possibly by another sequence whose newer
        tokens would then sit before its older ones in the cache. Attention sums a sequence's cells
        in cache order, so that reordering changes the floating-point result and greedy output
        would drift from decoding without drafts. Parked in a scratch sequence nobody attends to,
        the cells stay taken, new tokens always land after old ones, and the output is identical.
        """
        memory = self._memory
        llama_cpp.llama_memory_seq_cp(memory, seq_id, self._scratch_seq_id, first_rejected, -1)
        if not llama_cpp.llama_memory_seq_rm(memory, seq_id, first_rejected, -1):
            raise ModelError(
                f"{self.model_name} cannot drop tokens from its memory; disable prompt_lookup for it"
            )

    def _sample(self, job: DecodeJob, sequence: DecodeSequence, row: int) -> int:
        started = time.perf_counter()
        token = llama_cpp.llama_sampler_sample(sequence.sampler, self._ctx, row)
        job.stats.sampling_s += time.perf_counter() - started
        return token

    def _accept(self, job: DecodeJob, sequence: DecodeSequence, token: int) -> None:
        if not job.ignore_eog and llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(job, sequence, "stop")
            return
        sequence.generated += 1
        sequence.pending = token
        job.stats.generated_tokens += 1
        if sequence.lookup is not None:
            sequence.lookup.append(token)
        self._stream(job, sequence, sequence.text.add(self._piece(token)))
        if sequence.text.stopped:
            self._finish(job, sequence, "stop")
        elif sequence.generated >= job.request.max_tokens:
            self._finish(job, sequence, "length")

    def _finish(self, job: DecodeJob, sequence: DecodeSequence, reason: FinishReason) -> None:
        sequence.finish_reason = reason
        self._stream(job, sequence, sequence.text.flush())
        job.candidates[sequence.index] = job.candidate(
            sequence.index, sequence.text.text, reason, sequence.generated, sequence.prompt_tokens
        )

    @staticmethod
    def _stream(job: DecodeJob, sequence: DecodeSequence, text: str) -> None:
        if text and job.request.on_token is not None:
            job.request.on_token(sequence.index, text)

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = token_piece(self._vocab, token)
        return piece

    def _new_sampler(self, sampling: Sampling, ignore_eog: bool) -> SamplerHandle:
        if not ignore_eog:
            return new_sampler(sampling)
        if self._eog_tokens is None:
            self._eog_tokens = eog_tokens(self._vocab, self.n_vocab)
        return new_sampler(sampling, eog_ban_sampler(self.n_vocab, self._eog_tokens))
