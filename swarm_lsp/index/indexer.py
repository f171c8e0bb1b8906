"""Incremental sync: scan -> diff -> parse -> upsert, then embeddings fill in.

A sync is computed up front as explicit lists (to parse, to delete, unchanged) from (mtime, size)
and then sha256, before any work starts. Parsed files are written in batches, files-table last, so
a crash at any point leaves files that the next sync simply redoes. Embedding, the slow part, runs
afterwards (or on a background thread) over the chunks that have no vector yet, open and recently
edited files first; a vector computed once for a chunk text is cached by (embedder id, text hash).

One writer per workspace across processes: the writer lock is a file lock beside the index. A
second process that wants to sync waits for it and then finds the work already done.
"""

from __future__ import annotations

import hashlib
import logging
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import filelock
import numpy as np

from swarm_lsp.basics import CancellationToken
from swarm_lsp.index.chunker import parse_file
from swarm_lsp.index.errors import IndexDamaged
from swarm_lsp.index.ignore import IgnoreRules, Skipped, printable_path
from swarm_lsp.index.plan import SyncPlan, SyncReport
from swarm_lsp.index.records import ParsedFile
from swarm_lsp.index.skiplist import read_skipped, updated, write_skipped
from swarm_lsp.index.store import IndexStore
from swarm_lsp.index.vectors import PendingChunk
from swarm_lsp.models.embedding import Embedder
from swarm_lsp.progress import Progress, ProgressCallback

log = logging.getLogger(__name__)

WRITE_BATCH_FILES = 200
EMBED_BATCH_CHUNKS = 32
"""Texts per embedder call: at least the embedder's bulk size (models/embedding.py `BULK_TEXTS`),
so a large backlog runs on every core, while the watcher's trickle (a few texts) gets one thread."""
WRITE_BATCH_VECTORS = 256
UNSAVED_MTIME = -1
"""mtime recorded for a file indexed from an editor buffer: the next disk scan always re-reads it."""


class Indexer:
    def __init__(
        self,
        root: Path,
        store: IndexStore,
        embedder: Embedder | None,
        rules: IgnoreRules,
        *,
        lock_path: Path,
        chunk_tokens: int = 400,
        skipped_path: Path | None = None,
    ) -> None:
        self.root = root.resolve()
        self.store = store
        self.embedder = embedder
        self.rules = rules
        self.chunk_tokens = chunk_tokens
        self.skipped_path = skipped_path
        """Where the files left out and why are kept (index/skiplist.py); None: nowhere."""
        self._lock = filelock.FileLock(str(lock_path))
        self._thread_lock = threading.RLock()
        self.recent_paths: list[str] = []
        """Paths most recently changed or opened, most recent last: embedded first."""
        self.focus_paths: list[str] = []
        """Files open or edited in the editor, most recent last: embedded before everything else.
        Kept apart from `recent_paths`, which a large sync refills, so a first index of thousands
        of files cannot push them out."""

    # ------------------------------------------------------------------ planning

    def plan(self, paths: Iterable[str] | None = None) -> SyncPlan:
        """What a sync would do. `paths` limits it to those files (watcher events); None scans everything."""
        indexed = self.store.files()
        plan = SyncPlan()
        if paths is None:
            candidates = dict(self.rules.walk())
            plan.to_delete = sorted(path for path in indexed if path not in candidates)
        else:
            candidates = {}
            for rel in sorted(set(paths)):
                absolute = self.root / rel
                if absolute.is_dir() and not absolute.is_symlink():
                    candidates.update(self.rules.walk(rel))
                elif self.rules.ignored(rel) or not absolute.exists():
                    # A file, or a whole folder that went away: drop everything indexed under it.
                    prefix = rel + "/"
                    plan.to_delete.extend(p for p in indexed if p == rel or p.startswith(prefix))
                else:
                    candidates[rel] = absolute
            plan.to_delete = sorted(set(plan.to_delete))
        for rel, absolute in candidates.items():
            self._plan_file(rel, absolute, indexed.get(rel), plan)
        return plan

    def _plan_file(self, rel: str, absolute: Path, known: object | None, plan: SyncPlan) -> None:
        if known is not None:
            # Fast path for the common no-change case: a regular file whose stat matches the index
            # passed every content check when it was indexed, so one lstat is all it costs.
            try:
                quick = absolute.lstat()
            except OSError:
                quick = None
            if (
                quick is not None
                and stat.S_ISREG(quick.st_mode)
                and (known.size, known.mtime_ns) == (quick.st_size, quick.st_mtime_ns)
            ):
                plan.unchanged += 1
                return
        reason = self.rules.check_file(absolute, rel)
        if reason is not None:
            plan.skipped.append(Skipped(printable_path(rel), reason))
            if known is not None:
                plan.to_delete.append(rel)
            return
        info = absolute.stat()
        if known is not None and (known.size, known.mtime_ns) == (info.st_size, info.st_mtime_ns):
            plan.unchanged += 1
            return
        try:
            data = absolute.read_bytes()
        except OSError as error:
            plan.skipped.append(Skipped(rel, f"unreadable: {error.strerror}"))
            return
        digest = hashlib.sha256(data).hexdigest()
        if known is not None and known.sha256 == digest:
            # Touched but not changed (a checkout, a save without edits): only the stat is stale.
            self.store.touch_files({rel: (info.st_size, info.st_mtime_ns)})
            plan.unchanged += 1
            return
        plan.to_parse.append(rel)
        plan.hashed[rel] = (info.st_size, info.st_mtime_ns, digest, data)

    # ------------------------------------------------------------------- syncing

    def sync(
        self,
        paths: Iterable[str] | None = None,
        *,
        progress: ProgressCallback | None = None,
        embed: bool = False,
        cancel: CancellationToken | None = None,
        on_full_sync: Callable[[SyncReport], None] | None = None,
    ) -> SyncReport:
        """Bring the index up to date with the disk. Embeds the backlog too when `embed` is set.

        `on_full_sync` runs at the end of a complete scan (no `paths`, not cancelled), still inside
        the writer lock, after the last write: the workspace writes its no-change manifest there.

        A table found damaged on the way (a corrupted or missing file) is rebuilt empty and the sync
        runs once more, indexing every file again."""
        try:
            return self._sync(paths, progress, embed, cancel, on_full_sync)
        except IndexDamaged as error:
            with self._writer(SyncReport()):
                self.store.rebuild(str(error))
            return self._sync(None, progress, embed, cancel, on_full_sync)

    def _sync(
        self,
        paths: Iterable[str] | None,
        progress: ProgressCallback | None,
        embed: bool,
        cancel: CancellationToken | None,
        on_full_sync: Callable[[SyncReport], None] | None,
    ) -> SyncReport:
        report = SyncReport()
        started = time.monotonic()
        synced = None if paths is None else list(paths)
        with self._writer(report):
            self.store.remove_orphans()
            self.rules.forget()
            plan = self.plan(synced)
            report.seconds["scan"] = time.monotonic() - started
            report.unchanged, report.skipped = plan.unchanged, plan.skipped
            if progress:
                progress(
                    Progress(
                        "scan", len(plan.to_parse), len(plan.to_parse), detail=f"{plan.unchanged} unchanged"
                    )
                )
            if plan.to_delete:
                self.store.delete_files(plan.to_delete)
                report.deleted = len(plan.to_delete)
            self._parse_and_write(plan, report, progress, cancel)
            if self.skipped_path is not None:
                known = read_skipped(self.skipped_path)
                write_skipped(self.skipped_path, updated(known, report.skipped, synced))
            self._remember_recent(plan.to_parse)
            if embed and self.embedder is not None:
                report.embedded = self.embed_backlog(progress=progress, cancel=cancel)
            self.store.maybe_optimize()
            report.seconds["total"] = time.monotonic() - started
            if on_full_sync is not None and paths is None and not (cancel is not None and cancel.cancelled):
                on_full_sync(report)
        if progress:
            progress(Progress("done", report.parsed, report.parsed, chunks=report.chunks_written))
        return report

    def skipped(self) -> list[Skipped]:
        """The files the syncs so far left out, with why (kept across processes)."""
        return [] if self.skipped_path is None else read_skipped(self.skipped_path)

    def index_buffer(self, rel: str, text: str) -> None:
        """Index an editor's unsaved buffer from memory. The next disk scan re-reads the file."""
        with self._writer(SyncReport()):
            data = text.encode("utf-8")
            parsed = parse_file(rel, data, mtime_ns=UNSAVED_MTIME, chunk_tokens=self.chunk_tokens)
            self._write([parsed], SyncReport())
            self._remember_recent([rel])
            self._remember(self.focus_paths, [rel])

    def _writer(self, report: SyncReport) -> _WriterLock:
        return _WriterLock(self._lock, self._thread_lock, report)

    def _parse_and_write(
        self,
        plan: SyncPlan,
        report: SyncReport,
        progress: ProgressCallback | None,
        cancel: CancellationToken | None,
    ) -> None:
        parse_s = write_s = 0.0
        batch: list[ParsedFile] = []
        started = time.monotonic()
        total = len(plan.to_parse)
        for number, rel in enumerate(plan.to_parse, 1):
            if cancel is not None and cancel.cancelled:
                break
            _size, mtime_ns, _digest, data = plan.hashed.pop(rel)
            tick = time.monotonic()
            try:
                parsed = parse_file(rel, data, mtime_ns=mtime_ns, chunk_tokens=self.chunk_tokens)
            except Exception as error:  # one bad file must not stop the index; it is reported instead
                log.warning("could not parse %s: %s", rel, error)
                report.skipped.append(Skipped(rel, f"parse failed: {error}"))
                continue
            parse_s += time.monotonic() - tick
            batch.append(parsed)
            if len(batch) >= WRITE_BATCH_FILES or number == total:
                tick = time.monotonic()
                self._write(batch, report)
                write_s += time.monotonic() - tick
                batch = []
            if progress:
                elapsed = max(time.monotonic() - started, 1e-6)
                progress(Progress("parse", number, total, report.chunks_written, number / elapsed, rel))
        if batch:
            tick = time.monotonic()
            self._write(batch, report)
            write_s += time.monotonic() - tick
        report.seconds["parse"] = parse_s
        report.seconds["write"] = write_s

    def _write(self, batch: list[ParsedFile], report: SyncReport) -> None:
        """One batched upsert; the store gives chunks whose text was embedded before their cached vector."""
        self.store.replace_files(batch)
        report.parsed += len(batch)
        report.chunks_written += sum(len(parsed.chunks) for parsed in batch)

    # ----------------------------------------------------------------- embedding

    def embed_backlog(
        self,
        *,
        progress: ProgressCallback | None = None,
        cancel: CancellationToken | None = None,
        limit: int | None = None,
    ) -> int:
        """Embed chunks that have no vector yet, recently touched files first. Returns chunks embedded.

        Texts go to the model EMBED_BATCH_CHUNKS at a time (cancellation and progress in between);
        vectors go to the store WRITE_BATCH_VECTORS at a time, since each write is two commits.
        """
        if self.embedder is None:
            return 0
        done = 0
        total = self.store.stats().embedding_backlog if progress else 0
        started = time.monotonic()
        while limit is None or done < limit:
            with self._thread_lock:
                pending = self.store.chunks_missing_vectors(
                    WRITE_BATCH_VECTORS, priority_paths=self.priority_paths()
                )
                if not pending:
                    break
                vectors = self._embed_distinct(pending, cancel, progress, done, total, started)
                self.store.set_vectors(vectors)
                self.store.maybe_optimize()
            done += len(vectors)
            if len(vectors) < len(pending):  # cancelled part-way
                break
        return done

    def _embed_distinct(
        self,
        pending: Sequence[PendingChunk],
        cancel: CancellationToken | None,
        progress: ProgressCallback | None,
        done_before: int,
        total: int,
        started: float,
    ) -> dict[str, np.ndarray]:
        """Each distinct text is embedded once (or taken from the cache); its vector serves every chunk."""
        assert self.embedder is not None
        texts = {item.text_hash: item.text for item in pending}
        vectors = self.store.cached_vectors(texts.keys())
        missing = [text_hash for text_hash in texts if text_hash not in vectors]
        for start in range(0, len(missing), EMBED_BATCH_CHUNKS):
            if cancel is not None and cancel.cancelled:
                break
            hashes = missing[start : start + EMBED_BATCH_CHUNKS]
            fresh = self.embedder.embed_passages([texts[text_hash] for text_hash in hashes])
            vectors.update(zip(hashes, fresh, strict=True))
            if progress:
                done = done_before + start + len(hashes)
                elapsed = max(time.monotonic() - started, 1e-6)
                progress(Progress("embed", done, max(total, done), rate=done / elapsed))
        return {item.chunk_id: vectors[item.text_hash] for item in pending if item.text_hash in vectors}

    def priority_paths(self) -> list[str]:
        """The files whose chunks are embedded first: open and edited files, then recently changed
        ones, most recent first in each."""
        return list(dict.fromkeys([*reversed(self.focus_paths), *reversed(self.recent_paths)]))

    def _remember_recent(self, paths: Sequence[str]) -> None:
        self._remember(self.recent_paths, paths)

    @staticmethod
    def _remember(remembered: list[str], paths: Sequence[str], keep: int = 200) -> None:
        for path in paths:
            if path in remembered:
                remembered.remove(path)
            remembered.append(path)
        del remembered[:-keep]

    def prioritise(self, paths: Sequence[str]) -> None:
        """Files the user has open: their chunks are embedded before the rest of the backlog."""
        self._remember_recent(paths)
        self._remember(self.focus_paths, paths)


class _WriterLock:
    """The cross-process file lock plus the in-process lock, timing how long we waited."""

    def __init__(self, lock: filelock.FileLock, thread_lock: threading.RLock, report: SyncReport) -> None:
        self._lock, self._thread_lock, self._report = lock, thread_lock, report

    def __enter__(self) -> None:
        started = time.monotonic()
        self._thread_lock.acquire()
        try:
            self._lock.acquire()
        except BaseException:
            self._thread_lock.release()
            raise
        self._report.waited_for_lock_s = time.monotonic() - started

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
        self._thread_lock.release()
