"""What one editor connection holds: a Workspace per workspace folder, the open buffers, settings.

Settings come from the workspace's files and the environment (see docs/configuration.md) with the
editor's options on top: ``initializationOptions``, then the ``swarm-lsp`` section of
``workspace/configuration`` (re-read on ``workspace/didChangeConfiguration``). A folder whose
editor options change gets a new Workspace (the model reloads on its next request); a folder whose
settings are invalid keeps its previous Workspace, or has none, and says why on every request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.uris import from_fs_path, to_fs_path

from swarm_lsp.config import ConfigError
from swarm_lsp.lsp.documents import UTF16, Document, Documents
from swarm_lsp.workspace import Workspace

log = logging.getLogger(__name__)

CONFIG_SECTION = "swarm-lsp"


def merge_options(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Editor option layers merged section by section, later layers winning."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for section, values in (layer or {}).items():
            if isinstance(values, Mapping) and isinstance(merged.get(section), dict):
                merged[section] = {**merged[section], **values}
            else:
                merged[section] = dict(values) if isinstance(values, Mapping) else values
    return merged


@dataclass
class Folder:
    uri: str
    root: Path
    options: dict[str, Any] = field(default_factory=dict)
    workspace: Workspace | None = None
    error: str = ""
    """Why the settings could not be loaded; empty when they were."""

    @property
    def indexes_itself(self) -> bool:
        """Whether the server indexes this folder when it starts serving it (`index.auto`)."""
        return self.workspace is not None and self.workspace.settings.index.auto

    def require(self) -> Workspace:
        if self.workspace is None:
            raise ValueError(f"the workspace {self.root} has no usable settings: {self.error}")
        return self.workspace


@dataclass
class Target:
    """Where a request points: its folder, the file (relative to the folder) and the text."""

    folder: Folder
    uri: str
    path: str
    document: Document
    """The editor's buffer, or a snapshot of the file on disk when it is not open."""

    @property
    def workspace(self) -> Workspace:
        return self.folder.require()


class Session:
    def __init__(self, encoding: str = UTF16) -> None:
        self.documents = Documents(encoding)
        self.folders: dict[Path, Folder] = {}
        self.init_options: dict[str, Any] = {}

    @property
    def encoding(self) -> str:
        return self.documents.encoding

    # --------------------------------------------------------------- folders

    @staticmethod
    def folders_of(params: types.InitializeParams) -> list[tuple[str, Path]]:
        """The workspace folders of an initialize request (or its rootUri / rootPath)."""
        if params.workspace_folders:
            uris = [folder.uri for folder in params.workspace_folders]
        elif params.root_uri:
            uris = [params.root_uri]
        elif params.root_path:
            uris = [from_fs_path(params.root_path) or ""]
        else:
            uris = []
        return Session.folder_paths(uris)

    @staticmethod
    def folder_paths(uris: list[str]) -> list[tuple[str, Path]]:
        found = []
        for uri in uris:
            path = to_fs_path(uri)
            if path is None:
                raise ValueError(f"the workspace folder {uri!r} is not a file: URI")
            if not Path(path).is_absolute():  # "file://" or "file:src" would be the server's own folder
                raise ValueError(
                    f"the workspace folder {uri!r} names no absolute path (file:///path/to/folder)"
                )
            found.append((uri, Path(path).resolve()))
        return found

    def add_folder(self, uri: str, root: Path, options: Mapping[str, Any] | None = None) -> Folder:
        folder = Folder(uri, root)
        self.folders[root] = folder
        self.configure(folder, merge_options(self.init_options, options))
        return folder

    async def remove_folder(self, root: Path) -> None:
        folder = self.folders.pop(root, None)
        if folder is not None and folder.workspace is not None:
            await folder.workspace.aclose()

    def configure(self, folder: Folder, options: dict[str, Any]) -> tuple[bool, Workspace | None]:
        """Open a Workspace with these editor options unless the folder has one with them already.

        Returns whether a new Workspace was opened, and the one it replaces (for the caller to
        close). Raises ConfigError when the settings are invalid, leaving the folder as it was.
        """
        if folder.workspace is not None and options == folder.options and not folder.error:
            return False, None
        try:
            workspace = Workspace(folder.root, editor_options=options)
        except ConfigError as error:
            folder.error = str(error)
            raise
        previous, folder.workspace, folder.options, folder.error = folder.workspace, workspace, options, ""
        return True, previous

    def folder_for(self, uri: str) -> Folder:
        """The folder a URI (a file or a folder) is in: the innermost one."""
        path = to_fs_path(uri)
        if path is None or not Path(path).is_absolute():
            raise ValueError(f"{uri!r} is not a file: URI of an absolute path")
        resolved = Path(path).resolve()
        inside = [root for root in self.folders if resolved == root or resolved.is_relative_to(root)]
        if not inside:
            roots = ", ".join(str(root) for root in self.folders) or "none (open a folder)"
            raise ValueError(f"{resolved} is outside the workspace folders ({roots})")
        return self.folders[max(inside, key=lambda root: len(root.parts))]

    def default_folder(self, uri: str | None = None) -> Folder:
        """The folder `uri` is in, or the first folder when no URI is given."""
        if uri:
            return self.folder_for(uri)
        if not self.folders:
            raise ValueError("no workspace folder is open; open a folder in the editor first")
        return next(iter(self.folders.values()))

    # ----------------------------------------------------------------- texts

    def locate(self, uri: str) -> tuple[Folder, str]:
        """The folder of a file URI and the file's path relative to it."""
        folder = self.folder_for(uri)
        path = Path(to_fs_path(uri) or "").resolve()
        if path == folder.root:
            raise ValueError(f"{uri} is the workspace folder itself, not a file")
        return folder, path.relative_to(folder.root).as_posix()

    def target(self, uri: str) -> Target:
        """The file at `uri` with its current text: the open buffer, else the file on disk."""
        folder, rel = self.locate(uri)
        path = folder.root / rel
        document = self.documents.find(uri) or self.documents.at_path(path) or self._disk_document(uri, path)
        return Target(folder, uri, rel, document)

    def _disk_document(self, uri: str, path: Path) -> Document:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            raise ValueError(f"{path} does not exist and is not open in the editor") from None
        except OSError as error:
            raise ValueError(f"cannot read {path}: {error.strerror}") from None
        return Document.from_text(uri, text, None, self.encoding)

    def text_of(self, folder: Folder, rel: str) -> str | None:
        """A folder file's current text (the buffer when open), None when unreadable."""
        path = folder.root / rel
        document = self.documents.at_path(path)
        if document is not None:
            return document.text
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def document_of(self, folder: Folder, rel: str) -> Document | None:
        """A folder file as a Document: the open buffer (with the editor's URI), else from disk."""
        path = folder.root / rel
        document = self.documents.at_path(path)
        if document is not None:
            return document
        try:
            return self._disk_document(from_fs_path(str(path)) or "", path)
        except ValueError:
            return None

    # ----------------------------------------------------------------- close

    async def aclose(self) -> None:
        workspaces = [folder.workspace for folder in self.folders.values() if folder.workspace is not None]
        self.folders.clear()
        await asyncio.gather(*(workspace.aclose() for workspace in workspaces), return_exceptions=True)
