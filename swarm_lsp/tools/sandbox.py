"""Every path a tool touches goes through here.

`Sandbox.resolve` turns what a model wrote into a real path inside one of the workspace roots, or
refuses it: NUL bytes, `~`, `..` segments, absolute paths elsewhere, a sibling folder that only
shares a prefix (`/work/app-evil` beside `/work/app`), and symlinks whose target leaves the roots
are all refused, with a message that says what is allowed. The check is on the real path, after
following symlinks, and it is compared by path components, never as a string prefix.

Opening then walks from the root one component at a time with O_NOFOLLOW, so a folder swapped
for a symlink between the check and the open (a race an attacker could win) fails instead of
being followed. Writes go through the same walk, so they never follow a symlink out.

`.git/` and the index folder are read-only. Secret-looking files (settings `tools.secret_files`)
are hidden: refused by every tool and left out of listings and search results, unless
`tools.allow_secret_files` is set.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pathspec

from swarm_lsp.tools.registry import Refused

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
PROTECTED_DIR_NAMES = frozenset({".git"})


NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 4095
"""What Linux and macOS file systems take; past them every file call fails with ENAMETOOLONG."""


class SandboxRefused(Refused):
    def __init__(self, message: str) -> None:
        super().__init__(message, decided_by="sandbox")


@dataclass(frozen=True)
class SafePath:
    path: Path
    """The real, absolute path (symlinks followed), inside `root`."""
    root: Path
    rel: str
    """POSIX path relative to `root`; "" for the root itself."""
    shown: str
    """How results name it: relative to the workspace root when inside it, else absolute."""

    @property
    def parts(self) -> tuple[str, ...]:
        return PurePosixPath(self.rel).parts if self.rel else ()


class Sandbox:
    def __init__(
        self,
        roots: Sequence[Path],
        *,
        workspace_root: Path,
        read_only_paths: Sequence[Path] = (),
        secret_patterns: Sequence[str] = (),
        allow_secrets: bool = False,
    ) -> None:
        real_roots: list[Path] = []
        for root in roots:
            real = Path(os.path.realpath(root))
            if not real.is_dir():
                raise ValueError(f"workspace root {root} is not a folder")
            if real not in real_roots:
                real_roots.append(real)
        if not real_roots:
            raise ValueError("the sandbox needs at least one workspace root")
        self.workspace_root = Path(os.path.realpath(workspace_root))
        # The workspace root first when it is one of the roots: relative paths resolve against it.
        real_roots.sort(key=lambda root: root != self.workspace_root)
        self.roots = tuple(real_roots)
        # Folders and files the tools may read but not change (the index folder, the audit log).
        self.read_only_paths = tuple(Path(os.path.realpath(path)) for path in read_only_paths)
        self.allow_secrets = allow_secrets
        # Matched in lower case: on a case-insensitive file system (macOS, Windows) `.ENV` is `.env`.
        self._secrets = pathspec.GitIgnoreSpec.from_lines([pattern.lower() for pattern in secret_patterns])

    @property
    def primary(self) -> Path:
        return self.roots[0]

    # ----------------------------------------------------------------------------- resolving

    def resolve(self, raw: object, *, write: bool = False, argument: str = "path") -> SafePath:
        """The real path `raw` names inside a root, or SandboxRefused saying why not."""
        if not isinstance(raw, str):
            raise SandboxRefused(f"{argument} must be a string, got {type(raw).__name__}")
        if raw == "":
            raise SandboxRefused(f"{argument} is empty; use '.' for the workspace root")
        if "\x00" in raw:
            raise SandboxRefused(f"{argument} contains a NUL byte; give a plain path inside the workspace")
        _check_encodable(raw, argument)
        if raw.startswith("~"):
            raise SandboxRefused(
                f"{argument} {raw!r} starts with '~', which is not expanded; give a path relative to the "
                f"workspace root ({self.primary})"
            )
        segments = raw.replace("\\", "/").split("/")
        if ".." in segments:
            raise SandboxRefused(
                f"{argument} {raw!r} contains '..'; give a path relative to the workspace root without '..'"
            )
        lexical = Path(raw) if os.path.isabs(raw) else self.primary / raw
        real = Path(os.path.realpath(lexical))
        if _loops(lexical):
            raise SandboxRefused(f"{argument} {raw!r} runs into a symlink that leads back to itself")
        root = self._root_of(real)
        if root is None:
            where = f" (it resolves to {real})" if real != Path(os.path.normpath(lexical)) else ""
            raise SandboxRefused(
                f"{argument} {raw!r} is outside the workspace{where}; tools only work inside "
                + ", ".join(str(r) for r in self.roots)
            )
        rel = real.relative_to(root).as_posix() if real != root else ""
        safe = SafePath(real, root, rel, self._shown(real))
        lexical_rel = self._rel_in_roots(Path(os.path.normpath(lexical)))
        for candidate in {rel, lexical_rel} - {None, ""}:
            if self.is_secret(candidate):
                raise SandboxRefused(
                    f"{raw!r} looks like a secret file (tools.secret_files), so the tools do not touch it; "
                    "set tools.allow_secret_files = true in .swarm-lsp.toml to allow it"
                )
        if write:
            self._check_writable(safe, raw)
        return safe

    def _root_of(self, real: Path) -> Path | None:
        for root in self.roots:
            if real == root or real.is_relative_to(root):
                return root
        return None

    def _rel_in_roots(self, path: Path) -> str | None:
        root = self._root_of(path)
        if root is None or path == root:
            return None
        return path.relative_to(root).as_posix()

    def _shown(self, real: Path) -> str:
        if real == self.workspace_root:
            return "."
        if real.is_relative_to(self.workspace_root):
            return real.relative_to(self.workspace_root).as_posix()
        return str(real)

    def _check_writable(self, safe: SafePath, raw: str) -> None:
        if not safe.rel:
            raise SandboxRefused(f"{raw!r} is the workspace root itself; name a file inside it")
        if PROTECTED_DIR_NAMES.intersection(part.lower() for part in safe.parts):
            raise SandboxRefused(f"{raw!r} is inside .git/, which the tools may read but never change")
        folded = Path(str(safe.path).lower())
        for place in self.read_only_paths:
            folded_place = Path(str(place).lower())
            if folded == folded_place or folded.is_relative_to(folded_place):
                raise SandboxRefused(
                    f"{raw!r} is swarm-lsp's own data ({place}: the index folder or the audit log), "
                    "which the tools may read but never change"
                )
        try:
            links = os.lstat(safe.path).st_nlink
        except OSError:  # not there yet (a new file), or unreadable: the write itself will say
            links = 1
        if links > 1 and stat.S_ISREG(os.lstat(safe.path).st_mode):
            raise SandboxRefused(
                f"{raw!r} has {links} hard links: the same file may also live outside the workspace, so the "
                "tools do not change it; copy it to a plain file first if you want it edited"
            )

    # ------------------------------------------------------------------------------- filters

    def is_secret(self, rel: str) -> bool:
        return not self.allow_secrets and bool(self._secrets.match_file(rel.lower()))

    def visible(self, path: Path) -> SafePath | None:
        """`path` (absolute) as a SafePath when the tools may show it, else None."""
        real = Path(os.path.realpath(path))
        root = self._root_of(real)
        if root is None:
            return None
        rel = real.relative_to(root).as_posix() if real != root else ""
        lexical_rel = self._rel_in_roots(Path(os.path.normpath(path)))
        if any(self.is_secret(r) for r in {rel, lexical_rel} - {None, ""}):
            return None
        return SafePath(real, root, rel, self._shown(real))

    # ------------------------------------------------------------------------------- opening

    @contextmanager
    def open_parent(self, safe: SafePath, *, create: bool = False) -> Iterator[int]:
        """A directory fd for the folder holding `safe`, reached without following any symlink."""
        parents = safe.parts[:-1]
        fd = os.open(safe.root, _DIR_FLAGS)
        try:
            for name in parents:
                try:
                    next_fd = _open_no_follow(safe, name, _DIR_FLAGS, fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(name, 0o777, dir_fd=fd)
                    next_fd = _open_no_follow(safe, name, _DIR_FLAGS, fd)
                os.close(fd)
                fd = next_fd
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def open_dir(self, safe: SafePath) -> Iterator[int]:
        """A directory fd for `safe` itself (a folder), reached without following symlinks."""
        if not safe.rel:
            fd = os.open(safe.root, _DIR_FLAGS)
        else:
            with self.open_parent(safe) as parent:
                fd = _open_no_follow(safe, safe.parts[-1], _DIR_FLAGS, parent)
        try:
            yield fd
        finally:
            os.close(fd)

    def read_bytes(self, safe: SafePath, limit: int | None = None) -> tuple[bytes, os.stat_result]:
        """Up to `limit` bytes of a regular file, and its stat as it was opened."""
        if not safe.rel:  # the workspace root itself
            raise IsADirectoryError(errno.EISDIR, "is a folder", safe.shown)
        with self.open_parent(safe) as parent:
            fd = _open_no_follow(safe, safe.parts[-1], _FILE_FLAGS, parent)
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise IsADirectoryError(errno.EISDIR, "is a folder", safe.shown)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", safe.shown)
            chunks: list[bytes] = []
            wanted = info.st_size if limit is None else min(limit, info.st_size)
            got = 0
            while got < wanted:
                chunk = os.read(fd, min(wanted - got, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            return b"".join(chunks), info
        finally:
            os.close(fd)


def _open_no_follow(safe: SafePath, name: str, flags: int, dir_fd: int) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as error:
        # O_NOFOLLOW refuses a symlink with ELOOP, or ENOTDIR when O_DIRECTORY is asked for too.
        if error.errno in (errno.ELOOP, errno.ENOTDIR) and _is_symlink(name, dir_fd):
            raise SandboxRefused(
                f"{safe.shown} changed into a symlink while the call ran; the tools do not follow it. "
                "Try again, or use the real path."
            ) from None
        raise


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _check_encodable(raw: str, argument: str) -> None:
    """Refuse a path the file system could not even be asked about, with what is wrong."""
    try:
        encoded = os.fsencode(raw)
    except UnicodeEncodeError:
        raise SandboxRefused(
            f"{argument} holds a character no file name can (a lone UTF-16 surrogate); give a plain path"
        ) from None
    if len(encoded) > PATH_MAX_BYTES:
        raise SandboxRefused(f"{argument} is {len(encoded)} bytes long; paths stop at {PATH_MAX_BYTES}")
    longest = max(encoded.replace(b"\\", b"/").split(b"/"), key=len)
    if len(longest) > NAME_MAX_BYTES:
        raise SandboxRefused(
            f"{argument} has a name of {len(longest)} bytes ({raw[:40]!r}...); file names stop at "
            f"{NAME_MAX_BYTES} bytes"
        )


def _loops(path: Path) -> bool:
    """Whether following the symlinks on `path` never ends (a link to itself, two links to each other)."""
    try:
        os.path.realpath(path, strict=True)
    except OSError as error:
        return error.errno == errno.ELOOP
    return False
