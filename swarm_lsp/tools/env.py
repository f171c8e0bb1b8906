"""What a tool sees while it runs: the workspace, its settings, the sandbox for this caller, the
cache, the write and patch journals, and two hooks (wait for the index; report what was written)."""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from swarm_lsp.config import ToolSettings
from swarm_lsp.tools.atomic import FileChanged, WriteJournal
from swarm_lsp.tools.cache import ResultCache
from swarm_lsp.tools.patch_journal import PatchJournal
from swarm_lsp.tools.registry import Caller, ToolError
from swarm_lsp.tools.sandbox import SafePath, Sandbox

if TYPE_CHECKING:
    from swarm_lsp.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass
class ToolEnv:
    workspace: Workspace
    settings: ToolSettings
    sandbox: Sandbox
    cache: ResultCache
    journal: WriteJournal
    patches: PatchJournal
    """Makes apply_patch over several files all-or-nothing across a crash."""
    caller: Caller
    index_ready: Callable[[], Awaitable[None]]
    """Wait until the first index sync has finished (search before it would miss files)."""
    wrote: Callable[[Sequence[SafePath]], Awaitable[None]]
    """Tell the cache and the index what a write tool changed."""

    def index_rel(self, safe: SafePath) -> str | None:
        """`safe` relative to the workspace root (what the index calls it), or None outside it."""
        root = self.workspace.root
        if safe.path == root:
            return ""
        if safe.path.is_relative_to(root):
            return safe.path.relative_to(root).as_posix()
        return None


@contextlib.contextmanager
def file_errors(shown: str) -> Iterator[None]:
    """OS errors as messages that say what to do."""
    try:
        yield
    except FileNotFoundError:
        raise ToolError(f"{shown} does not exist; list_dir shows what is there") from None
    except FileExistsError:
        raise ToolError(
            f"{shown} already exists (it appeared while the call ran); nothing was written"
        ) from None
    except IsADirectoryError:
        raise ToolError(f"{shown} is a folder; use list_dir for folders") from None
    except NotADirectoryError:
        raise ToolError(f"a part of {shown} is a file, not a folder") from None
    except PermissionError:
        raise ToolError(f"permission denied for {shown}") from None
    except FileChanged:
        raise ToolError(f"{shown} changed while the call waited; read it again and repeat the call") from None
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            raise ToolError(f"{shown}: the name is too long") from None
        raise ToolError(f"{shown}: {error.strerror or error}") from None
