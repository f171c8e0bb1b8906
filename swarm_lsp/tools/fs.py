"""File tools: read_file, list_dir (read); write_file, edit_file, apply_patch (write); delete_file
(destructive). Every path goes through the sandbox; every write is atomic."""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Sequence
from typing import Any

from swarm_lsp.code.content import is_probably_binary
from swarm_lsp.tools.atomic import TEMP_SUFFIX, FileChanged, Stamp, atomic_write, delete_file
from swarm_lsp.tools.env import ToolEnv, file_errors
from swarm_lsp.tools.patch import FilePatch, PatchError, apply_file_patch, parse_patch
from swarm_lsp.tools.patch_journal import FileChange, PendingPatch
from swarm_lsp.tools.registry import Output, Plan, Tier, Tool, ToolError
from swarm_lsp.tools.sandbox import SafePath

MAX_FILE_BYTES = 32 * 1024 * 1024
"""read_file reads at most this much to find a line range; larger files need a smaller tool."""
MAX_LIST_ENTRIES = 2000
PREVIEW_LINES = 40

PATH = {"type": "string", "description": "a path relative to the workspace root (or absolute, inside it)"}


# --------------------------------------------------------------------------------------- helpers


def _decode(data: bytes, shown: str) -> str:
    if is_probably_binary(data[:8192]):
        raise ToolError(f"{shown} is a binary file; the file tools work on text only")
    return data.decode("utf-8", errors="replace")


def read_text(env: ToolEnv, safe: SafePath) -> tuple[str, Stamp]:
    with file_errors(safe.shown):
        data, info = env.sandbox.read_bytes(safe, MAX_FILE_BYTES + 1)
    if info.st_size > MAX_FILE_BYTES:
        raise ToolError(
            f"{safe.shown} is {info.st_size:,} bytes, more than the file tools handle ({MAX_FILE_BYTES:,})"
        )
    return _decode(data, safe.shown), Stamp.of(info)


def _exists(safe: SafePath) -> os.stat_result | None:
    try:
        return os.lstat(safe.path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise ToolError(f"a part of {safe.shown} is a file, not a folder") from None


def _preview(text: str) -> str:
    lines = text.splitlines()
    shown = "\n".join(lines[:PREVIEW_LINES])
    return shown + (f"\n... ({len(lines) - PREVIEW_LINES} more lines)" if len(lines) > PREVIEW_LINES else "")


def unified_diff(shown: str, before: str, after: str, *, limit: int | None = None) -> str:
    lines = list(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"a/{shown}",
            tofile=f"b/{shown}",
        )
    )
    lines = [line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines]
    if limit is not None and len(lines) > limit:
        lines = [*lines[:limit], f"... ({len(lines) - limit} more diff lines)\n"]
    return "".join(lines)


# ------------------------------------------------------------------------------------- read_file


def _prepare_read_file(env: ToolEnv, args: dict[str, Any]) -> Plan:
    safe = env.sandbox.resolve(args["path"])
    start = args.get("start_line", 1)
    end = args.get("end_line")
    if end is not None and end < start:
        raise ToolError(f"end_line ({end}) is before start_line ({start})")
    cap = env.settings.max_read_kb * 1000

    async def run(progress: Any) -> Output:
        text, _stamp = read_text(env, safe)
        lines = text.splitlines(keepends=True)
        total = len(lines)
        if total and start > total:
            raise ToolError(f"{safe.shown} has {total} lines; start_line {start} is past its end")
        last = total if end is None else min(end, total)
        chosen = lines[start - 1 : last]
        body, used, truncated_at = [], 0, None
        for number, line in enumerate(chosen, start):
            size = len(line.encode("utf-8", "replace"))
            if used + size > cap and body:
                truncated_at = number
                break
            body.append(line)
            used += size
        shown_end = start + len(body) - 1 if body else start - 1
        out = "".join(body)
        if truncated_at is not None:
            out += (
                f"\n[truncated: lines {start}-{shown_end} of {total} shown, the read cap is "
                f"{env.settings.max_read_kb} kB (tools.max_read_kb); read on with start_line={truncated_at}]"
            )
        data = {
            "path": safe.shown,
            "start_line": start,
            "end_line": shown_end,
            "total_lines": total,
            "truncated": truncated_at is not None,
        }
        return Output(out, data)

    return Plan(
        Tier.READ,
        f"read {safe.shown}",
        run,
        cache_key=("read_file", str(safe.path), start, end, cap),
        depends_on=(safe.path,),
    )


READ_FILE = Tool(
    name="read_file",
    tier=Tier.READ,
    title="Read a file",
    description=(
        "Read a text file in the workspace, whole or a range of lines (1-based, inclusive). Output is "
        "capped (tools.max_read_kb); a cut says which start_line reads on. Secret files are hidden."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "path": PATH,
            "start_line": {"type": "integer", "minimum": 1, "description": "first line, from 1 (default 1)"},
            "end_line": {
                "type": "integer",
                "minimum": 1,
                "description": "last line, inclusive (default: the end)",
            },
        },
        "required": ["path"],
        "additionalProperties": False,
    },
    prepare=_prepare_read_file,
)


# -------------------------------------------------------------------------------------- list_dir


def _prepare_list_dir(env: ToolEnv, args: dict[str, Any]) -> Plan:
    safe = env.sandbox.resolve(args.get("path", "."))
    depth = args.get("depth", 1)
    sandbox = env.sandbox

    async def run(progress: Any) -> Output:
        entries: list[dict[str, Any]] = []
        truncated = False

        def walk(folder: SafePath, prefix: str, level: int) -> None:
            nonlocal truncated
            with file_errors(folder.shown), sandbox.open_dir(folder) as fd, os.scandir(fd) as scan:
                # Entries read from a directory fd must be stat'ed while the fd is open.
                items = sorted((item.name, item.stat(follow_symlinks=False)) for item in scan)
            for name, info in items:
                if len(entries) >= MAX_LIST_ENTRIES:
                    truncated = True
                    return
                if name.endswith(TEMP_SUFFIX):
                    continue
                child = folder.path / name
                if sandbox.is_secret(f"{folder.rel}/{name}" if folder.rel else name):
                    continue
                rel = f"{prefix}{name}"
                if stat.S_ISLNK(info.st_mode):
                    target = sandbox.visible(child)
                    kind = "link" if target is not None else "link (outside the workspace)"
                    entries.append({"path": rel, "type": kind, "size": None})
                elif stat.S_ISDIR(info.st_mode):
                    entries.append({"path": rel + "/", "type": "dir", "size": None})
                    if level < depth:
                        sub = SafePath(child, folder.root, f"{folder.rel}/{name}".lstrip("/"), rel)
                        walk(sub, rel + "/", level + 1)
                else:
                    entries.append({"path": rel, "type": "file", "size": info.st_size})

        walk(safe, "", 1)
        lines = []
        for entry in entries:
            size = f"  {entry['size']:,} B" if entry["size"] is not None else ""
            kind = f"  [{entry['type']}]" if entry["type"].startswith("link") else ""
            lines.append(f"{entry['path']}{size}{kind}")
        if truncated:
            lines.append(f"[truncated at {MAX_LIST_ENTRIES} entries; list a subfolder or use depth 1]")
        text = "\n".join(lines) if lines else "(empty folder)"
        return Output(text, {"path": safe.shown, "entries": entries, "truncated": truncated})

    # A folder's mtime changes when its entries do, but not when a subfolder's do: only a one-level
    # listing can be checked by one stat, so only that is cached.
    return Plan(
        Tier.READ,
        f"list {safe.shown}",
        run,
        cache_key=("list_dir", str(safe.path)) if depth == 1 else None,
        depends_on=(safe.path,),
    )


LIST_DIR = Tool(
    name="list_dir",
    tier=Tier.READ,
    title="List a folder",
    description=(
        "List a folder in the workspace: files with sizes, folders with a trailing '/'. "
        "Secret files are hidden."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "path": {**PATH, "default": "."},
            "depth": {
                "type": "integer",
                "minimum": 1,
                "maximum": 5,
                "default": 1,
                "description": "levels to descend",
            },
        },
        "additionalProperties": False,
    },
    prepare=_prepare_list_dir,
)


# ------------------------------------------------------------------------------------ write_file


def _prepare_write_file(env: ToolEnv, args: dict[str, Any]) -> Plan:
    safe = env.sandbox.resolve(args["path"], write=True)
    content: str = args["content"]
    overwrite = bool(args.get("overwrite", False))
    data = content.encode("utf-8")
    current = _exists(safe)
    if current is not None and stat.S_ISDIR(current.st_mode):
        raise ToolError(f"{safe.shown} is a folder; write_file writes files")
    if current is not None and not overwrite:
        raise ToolError(
            f"{safe.shown} exists; use edit_file or apply_patch to change part of it, or pass "
            "overwrite: true to replace it whole (a destructive action that needs approval)"
        )
    expect = Stamp.of(current) if current is not None else None
    if current is None:
        summary = f"create {safe.shown} ({len(data):,} bytes)"
    else:
        summary = f"overwrite {safe.shown} whole ({current.st_size:,} bytes now, {len(data):,} after)"

    async def run(progress: Any) -> Output:
        with file_errors(safe.shown):
            atomic_write(env.sandbox, safe, data, env.journal, exclusive=current is None, expect=expect)
        await env.wrote([safe])
        verb = "created" if current is None else "overwrote"
        return Output(f"{verb} {safe.shown} ({len(data):,} bytes)", {"path": safe.shown, "bytes": len(data)})

    tier = Tier.WRITE if current is None else Tier.DESTRUCTIVE
    return Plan(tier, summary, run, basis=(expect,), details=_preview(content))


WRITE_FILE = Tool(
    name="write_file",
    tier=Tier.WRITE,
    escalates_to=Tier.DESTRUCTIVE,
    title="Create a file",
    description=(
        "Create a new text file (parent folders are created). Fails if the file exists unless overwrite is "
        "true; overwriting a file whole is destructive and needs approval. Atomic: readers see the old "
        "file or the new one, never a mix."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "path": PATH,
            "content": {"type": "string", "description": "the whole file's text"},
            "overwrite": {
                "type": "boolean",
                "default": False,
                "description": "replace an existing file whole",
            },
        },
        "required": ["path", "content"],
        "additionalProperties": False,
    },
    prepare=_prepare_write_file,
)


# ------------------------------------------------------------------------------------- edit_file


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _prepare_edit_file(env: ToolEnv, args: dict[str, Any]) -> Plan:
    safe = env.sandbox.resolve(args["path"], write=True)
    old: str = args["old_text"]
    new: str = args["new_text"]
    if old == new:
        raise ToolError("old_text and new_text are the same; there is nothing to change")
    text, stamp = read_text(env, safe)
    found = []
    start = text.find(old)
    while start != -1 and len(found) < 20:
        found.append(start)
        start = text.find(old, start + 1)
    if not found:
        raise ToolError(
            f"old_text was not found in {safe.shown}; it must match the file exactly (spaces and line "
            "breaks too). Read the file again and copy the text to replace."
        )
    if len(found) > 1:
        lines = ", ".join(str(_line_of(text, at)) for at in found)
        raise ToolError(
            f"old_text occurs {len(found)} times in {safe.shown} (at lines {lines}); include more "
            "surrounding lines so it matches exactly once"
        )
    at = found[0]
    after = text[:at] + new + text[at + len(old) :]
    diff = unified_diff(safe.shown, text, after)
    preview = unified_diff(safe.shown, text, after, limit=PREVIEW_LINES)
    summary = f"edit {safe.shown} at line {_line_of(text, at)}"

    async def run(progress: Any) -> Output:
        with file_errors(safe.shown):
            atomic_write(env.sandbox, safe, after.encode("utf-8"), env.journal, expect=stamp)
        await env.wrote([safe])
        return Output(f"edited {safe.shown}\n{diff}", {"path": safe.shown, "line": _line_of(text, at)})

    return Plan(Tier.WRITE, summary, run, basis=(stamp,), details=preview)


EDIT_FILE = Tool(
    name="edit_file",
    tier=Tier.WRITE,
    title="Edit a file",
    description=(
        "Replace one exact occurrence of old_text with new_text in a file. Fails if old_text is missing or "
        "occurs more than once (then include more surrounding lines). Returns the diff."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "path": PATH,
            "old_text": {"type": "string", "minLength": 1, "description": "the exact text to replace"},
            "new_text": {"type": "string", "description": "what replaces it"},
        },
        "required": ["path", "old_text", "new_text"],
        "additionalProperties": False,
    },
    prepare=_prepare_edit_file,
)


# ----------------------------------------------------------------------------------- apply_patch

PatchedFile = tuple[SafePath, FilePatch, str | None, str | None, Stamp | None]
"""One file of a patch: where, its hunks, its text before and after, the stat it was read at."""


def prepare_apply_patch(env: ToolEnv, args: dict[str, Any]) -> Plan:
    """What applying a unified diff will do, all-or-nothing (apply_patch, and propose_refactor's apply)."""
    try:
        patches = parse_patch(args["patch"])
    except PatchError as error:
        raise ToolError(f"the patch cannot be read: {error}") from None
    changes: list[PatchedFile] = []
    seen: set[str] = set()
    for patch in patches:
        if patch.old_path and patch.new_path and patch.old_path != patch.new_path:
            raise ToolError(
                f"the patch renames {patch.old_path} to {patch.new_path}; renames are not supported, "
                "delete the old file and create the new one"
            )
        safe = env.sandbox.resolve(patch.path, write=True, argument="patch path")
        if str(safe.path) in seen:
            raise ToolError(f"the patch changes {safe.shown} twice; merge its hunks into one file section")
        seen.add(str(safe.path))
        current = _exists(safe)
        before: str | None = None
        stamp: Stamp | None = None
        if current is not None:
            before, stamp = read_text(env, safe)
        try:
            after = apply_file_patch(before, patch)
        except PatchError as error:
            raise ToolError(f"the patch does not apply: {error}") from None
        changes.append((safe, patch, before, after, stamp))
    deletes = [safe.shown for safe, patch, *_ in changes if patch.deletes]
    described = []
    for safe, patch, *_ in changes:
        verb = "delete" if patch.deletes else "create" if patch.creates else "modify"
        described.append(f"{verb} {safe.shown} (+{patch.added} -{patch.removed})")
    summary = "apply a patch: " + ", ".join(described)

    async def run(progress: Any) -> Output:
        pending = _record_in_journal(env, changes)
        done: list[SafePath] = []
        try:
            for safe, _patch, before, after, stamp in changes:
                with file_errors(safe.shown):
                    if after is None:
                        _check_unchanged(safe, stamp)
                        delete_file(env.sandbox, safe)
                    else:
                        atomic_write(
                            env.sandbox,
                            safe,
                            after.encode("utf-8"),
                            env.journal,
                            exclusive=before is None,
                            expect=stamp,
                        )
                done.append(safe)
            try:
                pending.commit()
            except OSError as error:
                raise ToolError(f"the patch could not be marked done: {error.strerror or error}") from None
        except Exception as error:
            undone = _roll_back(env, pending)
            if isinstance(error, ToolError):
                raise ToolError(f"{error}; {undone}") from None
            raise
        else:
            pending.close()
        finally:
            if done:
                await env.wrote(done)
        diff = "".join(
            unified_diff(safe.shown, before or "", after or "") for safe, _p, before, after, _s in changes
        )
        files = [safe.shown for safe, *_ in changes]
        return Output(f"patched {', '.join(files)}\n{diff}", {"files": files, "deleted": deletes})

    basis = tuple(stamp for *_, stamp in changes)
    tier = Tier.DESTRUCTIVE if deletes else Tier.WRITE
    return Plan(tier, summary, run, basis=basis, details=_preview(args["patch"]))


def _check_unchanged(safe: SafePath, stamp: Stamp | None) -> None:
    if stamp is not None and Stamp.of(os.stat(safe.path)) != stamp:
        raise FileChanged(safe.shown)


def _record_in_journal(env: ToolEnv, changes: Sequence[PatchedFile]) -> PendingPatch:
    """The patch in the journal (each file's exact bytes before and after) before anything is written."""
    files: list[FileChange] = []
    for safe, _patch, _before, after, stamp in changes:
        old: bytes | None = None
        mode: int | None = None
        if stamp is not None:
            try:
                with file_errors(safe.shown):
                    old, info = env.sandbox.read_bytes(safe)
                    if Stamp.of(info) != stamp:
                        raise FileChanged(safe.shown)
                    mode = stat.S_IMODE(info.st_mode)
            except ToolError as error:
                raise ToolError(f"{error}; nothing was changed") from None
        new = None if after is None else after.encode("utf-8")
        files.append(FileChange(safe.path, safe.shown, old, new, mode))
    try:
        return env.patches.begin(files, env.sandbox.roots)
    except OSError as error:
        raise ToolError(
            f"the patch could not be recorded in its journal ({env.patches.directory}: "
            f"{error.strerror or error}), so nothing was changed; free some disk space or check that "
            "folder's permissions, then call again"
        ) from None


def _roll_back(env: ToolEnv, pending: PendingPatch) -> str:
    """Undo a patch that failed part-way; the journal is kept if a file could not be restored."""
    settlement = pending.roll_back(env.sandbox, env.journal)
    if settlement.failed:
        return (
            f"the files already patched could not all be restored: {'; '.join(settlement.failed)}. "
            f"The patch journal {pending.folder} keeps their earlier content; the next server start "
            "restores them"
        )
    pending.close()
    kept = ""
    if settlement.changed_since:
        kept = f" ({', '.join(settlement.changed_since)} changed meanwhile and was left as it is)"
    if not settlement.restored:
        return "nothing was changed" + kept
    return f"the {len(settlement.restored)} file(s) already patched were restored{kept}"


APPLY_PATCH = Tool(
    name="apply_patch",
    tier=Tier.WRITE,
    escalates_to=Tier.DESTRUCTIVE,
    title="Apply a unified diff",
    description=(
        "Apply a unified diff (git diff or diff -u) to one or more files. Every hunk must match the files "
        "exactly (it may have moved); nothing is written unless all of them apply. A patch that deletes a "
        "file is destructive."
    ),
    input_schema={
        "type": "object",
        "properties": {"patch": {"type": "string", "minLength": 1, "description": "the unified diff"}},
        "required": ["patch"],
        "additionalProperties": False,
    },
    prepare=prepare_apply_patch,
)


# ----------------------------------------------------------------------------------- delete_file


def _prepare_delete_file(env: ToolEnv, args: dict[str, Any]) -> Plan:
    safe = env.sandbox.resolve(args["path"], write=True)
    current = _exists(safe)
    if current is None:
        raise ToolError(f"{safe.shown} does not exist")
    if stat.S_ISDIR(current.st_mode):
        raise ToolError(f"{safe.shown} is a folder; delete_file deletes files only")
    stamp = Stamp.of(current)

    async def run(progress: Any) -> Output:
        with file_errors(safe.shown):
            _check_unchanged(safe, stamp)
            delete_file(env.sandbox, safe)
        await env.wrote([safe])
        return Output(f"deleted {safe.shown}", {"path": safe.shown})

    return Plan(Tier.DESTRUCTIVE, f"delete {safe.shown} ({current.st_size:,} bytes)", run, basis=(stamp,))


DELETE_FILE = Tool(
    name="delete_file",
    tier=Tier.DESTRUCTIVE,
    title="Delete a file",
    description="Delete one file in the workspace (not a folder).",
    input_schema={
        "type": "object",
        "properties": {"path": PATH},
        "required": ["path"],
        "additionalProperties": False,
    },
    prepare=_prepare_delete_file,
)

FILE_TOOLS = [READ_FILE, LIST_DIR, WRITE_FILE, EDIT_FILE, APPLY_PATCH, DELETE_FILE]
