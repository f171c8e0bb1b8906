"""What the subcommands share: exit codes, the workspace and settings of a command, logging, tokens."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from swarm_lsp.config import LoadedSettings, load_settings

if TYPE_CHECKING:
    from swarm_lsp.workspace import Workspace

EXIT_USAGE = 2
EXIT_FAILURE = 1


class UsageError(Exception):
    """The command line asks for something that cannot be: `main` prints it and exits with 2."""


def token_of(args: argparse.Namespace, command: str) -> str | None:
    """The HTTP token from --token or --token-file (None without either)."""
    if args.token_file is None:
        return args.token
    try:
        token = args.token_file.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise UsageError(f"{command}: cannot read --token-file {args.token_file}: {error.strerror}") from None
    if not token:
        raise UsageError(f"{command}: --token-file {args.token_file} is empty")
    return token


def add_token_options(parser: argparse.ArgumentParser) -> None:
    token = parser.add_mutually_exclusive_group()
    token.add_argument(
        "--token", default=None, help="require Authorization: Bearer TOKEN on every HTTP request"
    )
    token.add_argument("--token-file", type=Path, default=None, help="read the token from this file")


def settings_of(args: argparse.Namespace) -> LoadedSettings:
    return load_settings(root_of(args))


def workspace_of(args: argparse.Namespace, loaded: LoadedSettings | None = None) -> Workspace:
    from swarm_lsp.workspace import Workspace  # imported here to keep `--help` fast

    root = root_of(args)
    return Workspace(root, loaded=loaded or load_settings(root))


def root_of(args: argparse.Namespace) -> Path:
    return (args.workspace or Path.cwd()).resolve()


def configure_logging(args: argparse.Namespace) -> None:
    """A server's log: to --log-file (info, or debug with -v), else warnings only on stderr."""
    import logging

    level = logging.DEBUG if args.verbose else logging.INFO
    if args.log_file is not None:
        logging.basicConfig(filename=args.log_file, level=level, format="%(asctime)s %(name)s: %(message)s")
    else:
        logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.WARNING)
