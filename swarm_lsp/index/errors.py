"""What the index raises; each message says what to do."""

from __future__ import annotations

import errno
import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar

from swarm_lsp.basics import SwarmLspError


class IndexStoreError(SwarmLspError):
    """The index cannot do what was asked; the message says what to do."""


class VectorSearchUnavailable(IndexStoreError):
    """The index has no embedder (full-text only mode)."""


class IndexNotReady(IndexStoreError):
    """A read-only store found an index that the writing process has not (re)built yet."""


class IndexDiskFull(IndexStoreError):
    """The disk holding the index has no space left; what was written before stays readable."""

    def __init__(self, directory: object, error: BaseException) -> None:
        super().__init__(
            f"the disk holding the index ({directory}) is full ({_short(error)}). Free some space "
            "there, or move the index with the index.location setting; what was indexed so far stays "
            "searchable, and the next sync completes the rest"
        )


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` (an OSError, or lance's RuntimeError wrapping one) says the disk or quota is full."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text


class IndexDamaged(IndexStoreError):
    """A table of the index cannot be read (a corrupted or missing file); the writer rebuilds it."""

    def __init__(self, directory: object, error: BaseException) -> None:
        super().__init__(
            f"the index in {directory} is damaged ({_short(error)}). It is rebuilt from the files by the "
            "next sync (`swarm-lsp index`, or the server's own); nothing needs deleting by hand"
        )


_DAMAGE_SIGNS = (
    "LanceError(IO)",
    "LanceError(Corrupt",
    "Not found: ",
    "outside metadata region",
    "outside file",
    "decode",
)


def is_damage(error: BaseException) -> bool:
    """Whether `error`, raised by lance reading a table, means its files are corrupted or missing."""
    return (
        isinstance(error, (RuntimeError, ValueError, OSError))
        and any(sign in str(error) for sign in _DAMAGE_SIGNS)
        and not is_stale_version(error)
    )


def is_stale_version(error: BaseException) -> bool:
    """Whether `error` is a read of a table version whose manifest is gone: another process's
    cleanup removed a version this connection still had in view. Opening the table again fixes it."""
    text = str(error)
    return "Not found: " in text and "_versions/" in text and ".manifest" in text


def _short(error: BaseException) -> str:
    """The error without the Rust source location lance appends (", /root/.cargo/...rs:191:9")."""
    return re.sub(r", /\S+\.rs:\d+:\d+", "", str(error))


Method = TypeVar("Method", bound=Callable[..., Any])


def explains_storage_errors(method: Method) -> Method:
    """Turn a full disk under a store method into `IndexDiskFull`, and unreadable table files into
    `IndexDamaged` (`self.directory` is the index folder); other errors pass unchanged."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except IndexStoreError:
            raise
        except Exception as error:
            if is_stale_version(error) and hasattr(self, "reopen"):
                self.reopen()
                return method(self, *args, **kwargs)
            if is_disk_full(error):
                raise IndexDiskFull(self.directory, error) from error
            if is_damage(error):
                raise IndexDamaged(self.directory, error) from error
            raise

    return wrapper  # type: ignore[return-value]
