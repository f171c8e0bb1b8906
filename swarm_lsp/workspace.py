"""The application core: one workspace root, its settings, index, watcher and (later) swarm.

Every front door (CLI, LSP, MCP, HTTP) holds a Workspace and translates its protocol into these
calls. Heavy parts open lazily: constructing a Workspace reads settings and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import filelock

from swarm_lsp.basics import CancellationToken, SwarmLspError
from swarm_lsp.cache_gc import record_owner
from swarm_lsp.config import LoadedSettings, Settings, index_data_dir, load_settings
from swarm_lsp.index import manifest
from swarm_lsp.index.ignore import IgnoreRules, Skipped, workspace_rules
from swarm_lsp.index.plan import SyncReport
from swarm_lsp.index.skiplist import SKIPPED_FILE
from swarm_lsp.progress import ProgressCallback
from swarm_lsp.swarm.activity import Activity
from swarm_lsp.swarm.queue import QueueFull, RequestQueue

# The index store, indexer, watcher and retriever import lancedb (over a second to load): they are
# imported when the index is first opened, so a no-change check or a settings read stays fast.
if TYPE_CHECKING:
    from swarm_lsp.code.symbols import Symbol
    from swarm_lsp.federation.federation import Federation
    from swarm_lsp.index.indexer import Indexer
    from swarm_lsp.index.ranking import RankingRules
    from swarm_lsp.index.records import Chunk
    from swarm_lsp.index.store import IndexStore
    from swarm_lsp.index.watcher import Watcher
    from swarm_lsp.models.base import Backend
    from swarm_lsp.models.embedding import Embedder
    from swarm_lsp.models.select import RunPlan
    from swarm_lsp.retrieval import Retriever, SearchHit, SearchMode
    from swarm_lsp.swarm.context import ContextPack, Focus
    from swarm_lsp.swarm.engine import ProgressCallback as SwarmProgressCallback
    from swarm_lsp.swarm.engine import SwarmProgress
    from swarm_lsp.swarm.runner import GenerationOptions, SwarmResult, SwarmRunner
    from swarm_lsp.swarm.tasks import Task

log = logging.getLogger(__name__)

SKIPPED_SHOWN = 50
"""Skipped files listed by name in the status (all are counted)."""


class EmbedderUnavailable(SwarmLspError):
    """The index has no embedder, so nothing can be embedded."""


@dataclass(frozen=True)
class IndexStatus:
    root: str
    location: str
    files: int
    chunks: int
    symbols: int
    embedder: str | None
    embedder_note: str | None
    chunks_with_vectors: int
    embedding_backlog: int
    updated_at: float | None
    disk_bytes: int
    watching: bool
    rebuilt_reason: str | None
    sync_error: str | None = None
    """Why the last sync failed (a full disk, say), until one succeeds; None when it did."""
    skipped_files: int = 0
    """Files the index leaves out (binary, too large, unreadable, a name that is not UTF-8...)."""
    skipped: list[dict[str, str]] = field(default_factory=list)
    """The first SKIPPED_SHOWN of them, each {"path", "reason"}."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _OpenIndex(NamedTuple):
    """The index's parts, opened together on first use and released together."""

    store: IndexStore
    indexer: Indexer
    retriever: Retriever
    embedder: Embedder | None
    rules: IgnoreRules


class Workspace:
    def __init__(
        self,
        root: Path,
        *,
        loaded: LoadedSettings | None = None,
        editor_options: Mapping[str, Any] | None = None,
        embedder: Embedder | str | None = "settings",
    ) -> None:
        """`embedder="settings"` opens the one settings name; pass an Embedder (or None) to override."""
        self.root = root.expanduser().resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"workspace {self.root} is not a folder")
        self._editor_options = editor_options
        self.loaded = loaded or load_settings(self.root, editor_options)
        self._embedder_choice = embedder
        self._lock = threading.RLock()
        self._opened: _OpenIndex | None = None
        self._watcher: Watcher | None = None
        self._sync_error: str | None = None
        self._backend: Backend | None = None
        self._run_plan: RunPlan | None = None
        self._runner: SwarmRunner | None = None
        self._completion_backend: Backend | None = None
        self._voter_backends: list[Backend] | None = None
        self._federation: Federation | None = None
        self.queue = RequestQueue(self.settings.swarm.queue_limit)
        """Requests of every door wait here for the one loaded model, in order."""
        self.activity = Activity()
        """Recent requests with their voters' progress and their votes (the dashboard shows them)."""
        self.started_at = time.time()

    @property
    def settings(self) -> Settings:
        return self.loaded.settings

    @property
    def data_dir(self) -> Path:
        return index_data_dir(self.root, self.settings)

    # -------------------------------------------------------------- lazy parts

    def _open_index(self) -> _OpenIndex:
        from swarm_lsp.index.indexer import Indexer
        from swarm_lsp.index.store import IndexStore
        from swarm_lsp.retrieval import Retriever

        with self._lock:
            if self._opened is not None:
                return self._opened
            self.data_dir.mkdir(parents=True, exist_ok=True)
            record_owner(self.data_dir, self.root)
            embedder = self._make_embedder()
            # Opening may rebuild (schema or embedder changed): only one process may do that at once.
            with filelock.FileLock(str(self.data_dir / "writer.lock")):
                store = IndexStore.open(
                    self.data_dir / "index",
                    embedder_id=None if embedder is None else embedder.id,
                    dimension=None if embedder is None else embedder.dimension,
                )
            rules = workspace_rules(self.root, self.settings)
            indexer = Indexer(
                self.root,
                store,
                embedder,
                rules,
                lock_path=self.data_dir / "writer.lock",
                chunk_tokens=self.settings.index.chunk_tokens,
                skipped_path=self.data_dir / SKIPPED_FILE,
            )
            self._opened = _OpenIndex(store, indexer, Retriever(store, embedder), embedder, rules)
            return self._opened

    def _make_embedder(self) -> Embedder | None:
        if self._embedder_choice != "settings":
            return self._embedder_choice  # type: ignore[return-value]
        from swarm_lsp.models.embedders import open_embedder

        index = self.settings.index
        return open_embedder(
            index.embedder,
            model_path=index.embedder_model or None,
            base_url=index.embedder_url or None,
            model=index.embedder_model or None,
            threads=index.embed_threads or None,
        )

    @property
    def store(self) -> IndexStore:
        return self._open_index().store

    @property
    def indexer(self) -> Indexer:
        return self._open_index().indexer

    @property
    def retriever(self) -> Retriever:
        return self._open_index().retriever

    @property
    def embedder(self) -> Embedder | None:
        return self._open_index().embedder

    # ------------------------------------------------------------------ index

    def index(
        self,
        *,
        progress: ProgressCallback | None = None,
        embed: bool = True,
        cancel: CancellationToken | None = None,
    ) -> SyncReport:
        """Bring the whole index up to date (scan, parse, write, then embed the backlog)."""
        try:
            report = self.indexer.sync(
                progress=progress, embed=embed, cancel=cancel, on_full_sync=self._snapshot
            )
        except Exception as error:
            self._sync_error = str(error)
            raise
        self._sync_error = None
        return report

    def embed_backlog(self, *, cancel: CancellationToken | None = None) -> int:
        """Embed the chunks that have no vector yet (open and recent files first); returns how many."""
        return self.indexer.embed_backlog(cancel=cancel)

    def unchanged_index(self, *, embed: bool = True) -> tuple[SyncReport, IndexStatus] | None:
        """A no-change sync answered from the manifest of the last full sync, without opening the
        index (and importing lancedb): see index/manifest.py. None means a full sync is needed
        (something changed, no manifest yet, or vectors are still missing when `embed`)."""
        started = time.monotonic()
        snapshot = manifest.read(self.data_dir)
        if snapshot is None or (embed and snapshot.status.get("embedding_backlog")):
            return None
        found = manifest.check_unchanged(
            workspace_rules(self.root, self.settings),
            snapshot,
            manifest.fingerprint_for(self.root, self.settings),
        )
        if found is None:
            return None
        elapsed = time.monotonic() - started
        report = SyncReport(
            unchanged=found.unchanged,
            skipped=[Skipped(path, reason) for path, reason in found.skipped],
            seconds={"scan": elapsed, "total": elapsed},
        )
        return report, IndexStatus(**found.status)

    def _snapshot(self, report: SyncReport) -> None:
        """Write the no-change manifest (index/manifest.py) of the sync that just finished."""
        skipped: dict[str, tuple[int, int, str]] = {}
        for item in report.skipped:
            try:
                info = (self.root / item.path).lstat()
            except OSError:
                continue
            skipped[item.path] = (info.st_size, info.st_mtime_ns, item.reason)
        files = {path: (known.size, known.mtime_ns) for path, known in self.store.files().items()}
        status = self.status().to_dict()
        status["watching"] = False
        key = manifest.fingerprint_for(self.root, self.settings)
        try:
            manifest.write(self.data_dir, manifest.Manifest(key, files, skipped, status))
        except OSError as error:  # the manifest only saves the next sync a scan; the index is complete
            log.warning("could not write the no-change manifest in %s: %s", self.data_dir, error)

    def prioritise(self, paths: list[str]) -> None:
        """Files the user has open: their chunks are embedded before the rest of the backlog."""
        self.indexer.prioritise(paths)

    def sync_paths(self, paths: list[str]) -> SyncReport:
        return self.indexer.sync(paths)

    def update_buffer(self, rel_path: str, text: str) -> bool:
        """An editor's unsaved text for a file: searchable at once, embedded first. A file the
        ignore rules leave out (.gitignore, built-in exclusions) is not indexed: returns False."""
        if self._open_index().rules.ignored(rel_path):
            return False
        self.indexer.index_buffer(rel_path, text)
        return True

    def status(self) -> IndexStatus:
        stats = self.store.stats()
        skipped = self.indexer.skipped()
        return IndexStatus(
            root=str(self.root),
            location=str(self.data_dir),
            files=stats.files,
            chunks=stats.chunks,
            symbols=stats.symbols,
            embedder=stats.embedder_id,
            embedder_note=None if self.embedder is not None else _embedder_unavailable(),
            chunks_with_vectors=stats.chunks_with_vectors,
            embedding_backlog=stats.embedding_backlog,
            updated_at=stats.updated_at,
            disk_bytes=stats.disk_bytes,
            watching=self._watcher is not None,
            rebuilt_reason=self.store.rebuilt_reason,
            skipped_files=len(skipped),
            skipped=[{"path": item.path, "reason": item.reason} for item in skipped[:SKIPPED_SHOWN]],
            sync_error=self._watcher.error
            if self._watcher is not None and self._watcher.error
            else self._sync_error,
        )

    # -------------------------------------------------------------- retrieval

    def search(
        self, query: str, k: int = 10, mode: SearchMode = "hybrid", rules: RankingRules | None = None
    ) -> list[SearchHit]:
        """The best `k` chunks for `query`; `rules` turns ranking rules off (benchmarks); all on if None."""
        return self.retriever.search(query, k, mode, rules)

    def context_for(self, query: str, token_budget: int, focus: Focus | None = None) -> ContextPack:
        return self.retriever.context_for(query, token_budget, focus)

    def find_symbol(self, name: str) -> list[Symbol]:
        """Definitions whose name or qualified name is exactly `name` ("get_json" or "Request.get_json")."""
        return self.store.find_symbol(name)

    def definitions(self, names: list[str]) -> list[Symbol]:
        """Definitions of any of `names` (exact names), in one index query."""
        return self.store.find_symbols(names)

    def outline(self, path: str) -> str | None:
        """The indexed outline of a workspace-relative file; None when the file is not indexed."""
        return self.store.outline(path)

    def chunks(self, path: str) -> list[Chunk]:
        """The indexed chunks of a workspace-relative file, in line order."""
        return self.store.chunks(path)

    def indexed_paths(self) -> list[str]:
        """Every workspace-relative path in the index."""
        return list(self.store.files())

    def repo_map(self, token_budget: int, focus_paths: list[str] | None = None) -> str:
        """The most central files with their main definitions' signatures, within `token_budget`."""
        return self.retriever.graph().repo_map(token_budget, focus_paths)

    # ------------------------------------------------------------------ swarm

    def open_backend(self) -> tuple[Backend, RunPlan]:
        """The configured model, loaded once (ModelNotFound / DoesNotFit explain what to do)."""
        from swarm_lsp.models.hardware import detect
        from swarm_lsp.models.select import open_backend

        with self._lock:
            if self._backend is None:
                self._backend, self._run_plan = open_backend(self.settings, detect())
            assert self._run_plan is not None
            return self._backend, self._run_plan

    def completion_backend(self) -> Backend:
        """The model for inline completion: `completion.model` when set (loaded once, beside the
        chat model), else the chat model."""
        name = self.settings.completion.model
        if not name:
            return self.open_backend()[0]
        from swarm_lsp.voter_models import open_named_model

        with self._lock:
            if self._completion_backend is None:
                voters = self.settings.completion.voters
                self._completion_backend = open_named_model(self.settings, name, voters=voters)
            return self._completion_backend

    def voter_backends(self) -> list[Backend]:
        """The models of `swarm.models`, which vote beside the main one (loaded once)."""
        from swarm_lsp.voter_models import open_named_model

        with self._lock:
            if self._voter_backends is None:
                voters, names = self.settings.swarm.voters or 4, self.settings.swarm.models
                self._voter_backends = [open_named_model(self.settings, n, voters=voters) for n in names]
            return self._voter_backends

    @property
    def model_loaded(self) -> bool:
        """Whether the model is loaded (it loads on the first request that needs it)."""
        return self._backend is not None

    @property
    def federation(self) -> Federation | None:
        """This machine's peers when `federation.enabled` (None otherwise: nothing leaves the machine)."""
        settings = self.settings.federation
        if not settings.enabled:
            return None
        from swarm_lsp.federation.federation import Federation

        with self._lock:
            if self._federation is None:
                self._federation = Federation(settings)
            return self._federation

    @property
    def runner(self) -> SwarmRunner:
        from swarm_lsp.swarm.runner import SwarmRunner
        from swarm_lsp.voter_models import model_weight

        with self._lock:
            if self._runner is None:
                backend, plan = self.open_backend()
                federation = self.federation
                if federation is not None:
                    federation.roster.set_local(backend if self.settings.federation.local_voters else None)
                swarm = self.settings.swarm
                self._runner = SwarmRunner(
                    backend,
                    self.retriever,
                    self.root,
                    context_length=backend.info.context_length or plan.context,
                    voters=swarm.voters or plan.voters,  # settings reloaded since the plan
                    max_tokens=swarm.max_tokens,
                    temperature=swarm.temperature,
                    voter_timeout=swarm.timeout,
                    strategy=swarm.strategy,
                    placement=None if federation is None else federation.roster,
                    facts=self,
                    extra_backends=self.voter_backends(),
                    model_weight=model_weight,
                    diversity=swarm.diversity,
                )
            return self._runner

    async def run(
        self,
        task: Task,
        *,
        voters: int | None = None,
        strategy: str | None = None,
        cancel: CancellationToken | None = None,
        on_progress: SwarmProgressCallback | None = None,
        options: GenerationOptions | None = None,
        door: str = "core",
        model_label: str = "swarm",
    ) -> SwarmResult:
        """Answer a task by swarm vote: retrieval, N voters, voting, grounding.

        Requests wait their turn for the model (`queue`; QueueFull when too many wait) and are
        recorded in `activity` under `door` and `model_label` (what the client asked for)."""
        from swarm_lsp.swarm.engine import Cancelled

        task.validate()
        planned = voters or self.settings.swarm.voters or (self._run_plan.voters if self._run_plan else 0)
        max_tokens = (options.max_tokens if options else None) or self.settings.swarm.max_tokens
        record = self.activity.begin(
            door=door,
            kind=task.kind,
            model=model_label,
            prompt=task.prompt or task.selection_text(),
            voters=planned,
            max_tokens=max_tokens,
        )

        def progress(event: SwarmProgress) -> None:
            self.activity.progress(record, event)
            if on_progress is not None:
                on_progress(event)

        try:
            async with self.queue.turn():
                runner = await asyncio.to_thread(lambda: self.runner)
                if self.federation is not None:
                    await self.federation.ready()
                count = voters or runner.voters
                temperature = options.temperature if options else None
                samplings = runner.engine.samplings(count, temperature=temperature)
                self.activity.started(record, [sampling.temperature for sampling in samplings])
                result = await runner.run(
                    task,
                    voters=voters,
                    strategy=strategy,
                    cancel=cancel,
                    on_progress=progress,
                    options=options,
                )
        except QueueFull as error:
            self.activity.failed(record, f"refused: {error}")
            raise
        except (asyncio.CancelledError, Cancelled):
            self.activity.failed(record, "cancelled by the client", cancelled=True)
            raise
        except Exception as error:
            self.activity.failed(record, str(error))
            raise
        self.activity.finished(record, result.to_dict())
        return result

    def embed_texts(self, texts: list[str], *, as_query: bool = False) -> tuple[list[list[float]], str]:
        """Vectors of `texts` from the index's embedder, and its id (the HTTP embeddings endpoint).

        Passages by default; `as_query` embeds search queries (some embedders prefix the two kinds
        differently). Raises EmbedderUnavailable when the index has no embedder."""
        embedder = self.embedder
        if embedder is None:
            raise EmbedderUnavailable(
                "this workspace's index has no embedder ("
                + (_embedder_unavailable() or "index.embedder is none")
                + "); set index.embedder (see `swarm-lsp doctor`)"
            )
        if as_query:
            vectors = [embedder.embed_query(text) for text in texts]
        else:
            vectors = list(embedder.embed_passages(texts))
        return [[float(value) for value in vector] for vector in vectors], embedder.id

    def model_info(self) -> dict[str, Any]:
        """What model serves this workspace: loaded or not, its backend, window and voters."""
        with self._lock:
            backend, plan = self._backend, self._run_plan
        if backend is None or plan is None:
            return {
                "loaded": False,
                "name": self.settings.model.name,
                "backend": None,
                "context_length": None,
                "voters": self.settings.swarm.voters or None,
            }
        info = backend.info
        return {
            "loaded": True,
            "name": info.model,
            "backend": info.backend,
            "context_length": info.context_length or plan.context,
            "voters": self.settings.swarm.voters or plan.voters,
        }

    def reload_settings(self) -> None:
        """Read the settings files again. The swarm's settings apply to the next request; the model,
        the index and the tools keep theirs until the process restarts."""
        loaded = load_settings(self.root, self._editor_options)
        with self._lock:
            self.loaded = loaded
            self._runner = None
            self.queue.limit = loaded.settings.swarm.queue_limit

    # ---------------------------------------------------------------- watcher

    def start_watching(self, *, debounce_ms: int = 400, force_polling: bool | None = None) -> Watcher:
        from swarm_lsp.index.watcher import Watcher

        with self._lock:
            if self._watcher is None:
                opened = self._open_index()
                self._watcher = Watcher(
                    opened.indexer, opened.rules, debounce_ms=debounce_ms, force_polling=force_polling
                )
                self._watcher.start()
            return self._watcher

    def stop_watching(self) -> None:
        with self._lock:
            if self._watcher is not None:
                self._watcher.stop()
                self._watcher = None

    def close(self) -> None:
        """Stop the watcher and release the models, embedder and index. Call outside an event loop,
        or use `aclose()` inside one."""
        federation, self._federation = self._federation, None
        if federation is not None:
            federation.close_discovery()
        backends = self._release()
        if backends:
            asyncio.run(self._close_all(backends))

    async def aclose(self) -> None:
        federation, self._federation = self._federation, None
        if federation is not None:
            await federation.aclose()
        await self._close_all(self._release())

    @staticmethod
    async def _close_all(backends: list[Backend]) -> None:
        for backend in backends:
            await backend.aclose()

    def _release(self) -> list[Backend]:
        self.stop_watching()
        with self._lock:
            if self._opened is not None and self._opened.embedder is not None:
                self._opened.embedder.close()
            backends = [b for b in (self._backend, self._completion_backend) if b is not None]
            backends += self._voter_backends or []
            self._opened = None
            self._backend = self._runner = self._run_plan = self._completion_backend = None
            self._voter_backends = None
            return backends

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _embedder_unavailable() -> str | None:
    from swarm_lsp.models.embedders import describe_unavailable

    return describe_unavailable()
