"""The tools of one workspace, ready to serve: registry, policy, cache, audit log, write and patch
journals.

A front door builds one `Toolbox` per workspace, calls `start()` (which removes temp files left by
a crashed write and rolls patches a crash interrupted back, or forward), passes a `Caller` to
`registry.call` for every request, and calls `close()` when it stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from swarm_lsp.redaction import redact
from swarm_lsp.tools.atomic import WriteJournal
from swarm_lsp.tools.audit import AuditLog
from swarm_lsp.tools.cache import ResultCache
from swarm_lsp.tools.env import ToolEnv
from swarm_lsp.tools.fs import FILE_TOOLS
from swarm_lsp.tools.patch_journal import PatchJournal, Settlement
from swarm_lsp.tools.registry import Caller, CallRecord, Policy, Registry, Tool
from swarm_lsp.tools.sandbox import SafePath, Sandbox
from swarm_lsp.tools.search import INDEX_TOOLS
from swarm_lsp.tools.shell import SHELL_TOOLS
from swarm_lsp.tools.swarm import SWARM_TOOLS
from swarm_lsp.upkeep import IndexUpkeep
from swarm_lsp.workspace import Workspace

log = logging.getLogger(__name__)

ALL_TOOLS: list[Tool[ToolEnv]] = [*FILE_TOOLS, *INDEX_TOOLS, *SWARM_TOOLS, *SHELL_TOOLS]


def audit_path(workspace: Workspace) -> Path:
    configured = workspace.settings.tools.audit_file
    if configured:
        path = Path(configured).expanduser()
        return path if path.is_absolute() else workspace.root / path
    return workspace.data_dir / "audit.jsonl"


class Toolbox:
    def __init__(
        self,
        workspace: Workspace,
        *,
        read_only: bool | None = None,
        tools: Sequence[Tool[ToolEnv]] = ALL_TOOLS,
        watch: bool | None = None,
    ) -> None:
        self.workspace = workspace
        settings = workspace.settings.tools
        if read_only is not None:
            settings = settings.model_copy(update={"read_only": read_only})
        self.settings = settings
        self.watch = workspace.settings.index.watch if watch is None else watch
        self.cache = ResultCache(settings.cache_entries)
        self.audit = AuditLog(
            audit_path(workspace), max_bytes=settings.audit_max_kb * 1000, keep=settings.audit_keep
        )
        self.journal = WriteJournal(workspace.data_dir / "pending-writes")
        self.patches = PatchJournal(workspace.data_dir / "pending-patches", self.journal)
        self.recovered_patches: list[Settlement] = []
        """What `start()` found of patches a crash interrupted, and did with them."""
        self.registry: Registry[ToolEnv] = Registry(
            tools,
            Policy(settings, [tool.name for tool in tools]),
            make_env=self._env,
            audit=self.audit,
            cache=self.cache,
        )
        self.upkeep = IndexUpkeep(workspace, watch=self.watch, on_change=self.cache.index_changed)

    # ----------------------------------------------------------------------------- lifecycle

    def start(self) -> list[Path]:
        """Clean up after a crash; returns the temp files of interrupted writes that were removed.

        Patches a crash interrupted are settled too (see patch_journal.py): each is logged, written
        to the audit log, and kept in `recovered_patches`.
        """
        removed = self.journal.recover()
        for path in removed:
            log.warning("removed %s, left by a write that was interrupted", path)
        self.recovered_patches = self.patches.recover(self.sandbox)
        for settlement in self.recovered_patches:
            self._report_recovery(settlement)
        return removed

    def _report_recovery(self, settlement: Settlement) -> None:
        text = f"a patch interrupted by a crash was settled at start: {settlement.describe()}"
        if settlement.changed_since or settlement.failed:
            log.error("%s", text)
        else:
            log.warning("%s", text)
        record = CallRecord(
            client="swarm-lsp (recovery at start)",
            tool="apply_patch",
            arguments=redact(
                {
                    "journal": settlement.journal.name,
                    "outcome": settlement.direction,
                    "restored": settlement.restored,
                    "changed_since": settlement.changed_since,
                    "failed": settlement.failed,
                }
            ),
            tier="write",
            decision="allow",
            decided_by="recovery",
            error=None if settlement.settled and not settlement.changed_since else text,
        )
        try:
            self.audit.append(record.to_dict())
        except OSError as error:
            log.error("could not write the audit log %s: %s", self.audit.path, error)

    def close(self) -> None:
        """Stop background indexing. The workspace (index, watcher, model) is closed by its owner."""
        self.upkeep.close()

    async def ensure_index(self) -> None:
        """The first sync (once), then the watcher and background embedding."""
        await self.upkeep.ensure()

    # ---------------------------------------------------------------------------------- calls

    def sandbox(self, roots: tuple[Path, ...] | None = None) -> Sandbox:
        return Sandbox(
            roots or (self.workspace.root,),
            workspace_root=self.workspace.root,
            read_only_paths=(self.workspace.data_dir, self.audit.path),
            secret_patterns=self.settings.secret_files,
            allow_secrets=self.settings.allow_secret_files,
        )

    def _env(self, caller: Caller) -> ToolEnv:
        return ToolEnv(
            workspace=self.workspace,
            settings=self.settings,
            sandbox=self.sandbox(caller.roots),
            cache=self.cache,
            journal=self.journal,
            patches=self.patches,
            caller=caller,
            index_ready=self.ensure_index,
            wrote=self._wrote,
        )

    async def _wrote(self, paths: Sequence[SafePath]) -> None:
        self.cache.invalidate_paths([safe.path for safe in paths])
        if not self.upkeep.synced:
            return  # the first sync, still to come, will see them
        root = self.workspace.root
        rels = [safe.path.relative_to(root).as_posix() for safe in paths if safe.path.is_relative_to(root)]
        if not rels:
            return
        try:
            await asyncio.to_thread(self.workspace.sync_paths, rels)
        except Exception:  # the watcher syncs them again; a write must not fail because of the index
            log.exception("could not index %s after writing it", ", ".join(rels))
        self.cache.index_changed()
