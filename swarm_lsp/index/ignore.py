"""Which files the index sees: .gitignore (nested ones too), built-in ignores, size cap, binaries.

The scanner and the watcher share one `IgnoreRules` so a file is either indexed or ignored the
same way whichever noticed it.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pathspec

from swarm_lsp.code.content import is_probably_binary

BUILTIN_IGNORED_DIRS = frozenset(
    {
        ".git", ".hg", ".svn", ".jj", "node_modules", "bower_components", "__pycache__",
        ".venv", "venv", ".env", ".tox", ".nox", ".mypy_cache", ".pytest_cache",
        ".ruff_cache", ".cache", "build", "dist", "target", ".next", ".nuxt",
        ".gradle", ".idea", ".vscode", "site-packages", ".eggs", "vendor", ".terraform",
        "coverage", "htmlcov", ".ipynb_checkpoints", ".swarm-lsp",
    }
)  # fmt: skip
BUILTIN_IGNORED_SUFFIXES = frozenset(
    {
        ".pyc", ".pyo", ".so", ".dylib", ".dll", ".exe", ".o", ".a", ".class", ".jar",
        ".png", ".jpg", ".jpeg", ".gif", ".webp", ".ico", ".pdf", ".zip", ".gz", ".tgz",
        ".bz2", ".xz", ".7z", ".whl", ".gguf", ".safetensors", ".bin", ".pt", ".onnx",
        ".lock", ".min.js", ".map", ".woff", ".woff2", ".ttf", ".mp3", ".mp4", ".sqlite",
        ".db", ".lance",
    }
)  # fmt: skip
DEFAULT_MAX_FILE_BYTES = 1_000_000
BINARY_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


class IgnoreRules:
    """Gitignore-style rules rooted at a workspace, loaded lazily per directory."""

    def __init__(self, root: Path, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, extra: list[str] = ()):
        self.root = root.resolve()
        self.max_file_bytes = max_file_bytes
        self._names, rest = _name_globs(list(extra))
        self._extra = pathspec.GitIgnoreSpec.from_lines(rest) if rest else None
        self._specs: dict[str, pathspec.GitIgnoreSpec | None] = {}

    def _spec_for(self, directory: str) -> pathspec.GitIgnoreSpec | None:
        """The .gitignore in `directory` (workspace-relative, "" for the root), cached."""
        if directory not in self._specs:
            path = self.root / directory / ".gitignore"
            try:
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                self._specs[directory] = None
            else:
                self._specs[directory] = pathspec.GitIgnoreSpec.from_lines(lines)
        return self._specs[directory]

    def forget(self, directory: str = "") -> None:
        """Drop cached .gitignore specs (after a .gitignore changed)."""
        if directory:
            self._specs.pop(directory, None)
        else:
            self._specs.clear()

    def ignored(self, rel_path: str, *, is_dir: bool = False) -> bool:
        """Whether a workspace-relative POSIX path is ignored by built-ins or any .gitignore above it."""
        parts = rel_path.split("/")
        if any(part in BUILTIN_IGNORED_DIRS for part in (parts if is_dir else parts[:-1])):
            return True
        name = parts[-1]
        if not is_dir and (any(name.endswith(suffix) for suffix in BUILTIN_IGNORED_SUFFIXES)):
            return True
        if self._names is not None and any(self._names.match(part) for part in parts):
            return True
        candidate = rel_path + "/" if is_dir else rel_path
        if self._extra is not None and self._extra.match_file(candidate):
            return True
        # A nested .gitignore applies to paths below its directory, relative to that directory.
        for depth in range(len(parts)):
            directory = "/".join(parts[:depth])
            spec = self._spec_for(directory)
            if spec is None:
                continue
            relative = "/".join(parts[depth:]) + ("/" if is_dir else "")
            if spec.match_file(relative):
                return True
        return False

    def check_file(self, path: Path, rel_path: str) -> str | None:
        """Why a file that passed the name rules must still be skipped, or None to index it."""
        if printable_path(rel_path) != rel_path:
            return "its name is not valid UTF-8, which the index (and every tool that shows it) needs"
        try:
            info = path.lstat()
        except OSError as error:
            return f"cannot stat: {error.strerror}"
        if stat.S_ISLNK(info.st_mode):
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError):
                return "broken or looping symlink"
            if not target.is_relative_to(self.root):
                return "symlink pointing outside the workspace"
            info = target.stat()
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        if info.st_size > self.max_file_bytes:
            return f"larger than the {self.max_file_bytes // 1000} kB cap ({info.st_size // 1000} kB)"
        try:
            with path.open("rb") as handle:
                head = handle.read(BINARY_SNIFF_BYTES)
        except OSError as error:
            return f"unreadable: {error.strerror}"
        if is_probably_binary(head):
            return "binary content"
        return None

    def walk(self, under: str = "") -> Iterator[tuple[str, Path]]:
        """Every candidate file (rel_path, absolute path) below `under` (default: the root).

        Ignored folders are pruned. Symlinked folders are not followed: a loop or an escape from
        the workspace can only come from following them.
        """
        if under and self.ignored(under, is_dir=True):
            return
        stack = [under]
        while stack:
            directory = stack.pop()
            try:
                entries = list(os.scandir(self.root / directory))
            except OSError:
                continue
            for entry in sorted(entries, key=lambda item: item.name):
                rel = f"{directory}/{entry.name}" if directory else entry.name
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir:
                    if not self.ignored(rel, is_dir=True):
                        stack.append(rel)
                elif not self.ignored(rel):
                    yield rel, Path(entry.path)


def printable_path(rel_path: str) -> str:
    """`rel_path` as text that encodes: bytes of a name that is not UTF-8 (the file system hands them
    over as lone surrogates) are written as their escapes, `\\xff`."""
    try:
        rel_path.encode("utf-8")
        return rel_path
    except UnicodeEncodeError:
        pass
    try:
        return rel_path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no byte maps to: not from a file system, shown escaped
        return rel_path.encode("utf-8", "backslashreplace").decode("utf-8")


def _name_globs(patterns: list[str]) -> tuple[re.Pattern[str] | None, list[str]]:
    """Split off the patterns that only name a file or folder (no slash, e.g. `*.pem`, `.env.*`) into
    one regex over path components; the rest stay gitignore patterns.

    Same meaning (gitignore: a pattern without a slash matches a name at any depth), but one regex
    per path instead of a pathspec pass per pattern: with the two dozen secret-file patterns that
    made a 13,000-file scan 0.35 s slower. Negations depend on pattern order, so any `!` keeps all
    of them in pathspec.
    """
    if any(pattern.lstrip().startswith("!") for pattern in patterns):
        return None, patterns
    names = [
        pattern
        for pattern in patterns
        if pattern.strip() and not pattern.startswith("#") and not set(pattern) & set("/\\ ")
    ]
    rest = [pattern for pattern in patterns if pattern not in names]
    if not names:
        return None, rest
    return re.compile("|".join(fnmatch.translate(name) for name in names)), rest


def workspace_rules(root: Path, settings: Any) -> IgnoreRules:
    """The ignore rules a workspace indexes by (`settings` is a `config.Settings`): the index's own
    excludes, and secret-looking files unless the settings let the tools see them (so those never
    reach the index, hence never a model's prompt)."""
    index = settings.index
    extra = [*index.exclude, *hidden_patterns(settings)]
    return IgnoreRules(root, max_file_bytes=index.max_file_kb * 1000, extra=extra)


def hidden_patterns(settings: Any) -> list[str]:
    """The secret-file patterns the index leaves out: none when the settings allow secret files."""
    tools = settings.tools
    return [] if tools.allow_secret_files else list(tools.secret_files)
