"""Code actions and command arguments: what the editor offers, and what a request asks for.

Listing never parses, retrieves or runs a model: it turns the request's range and diagnostics into
titles and small `data` objects, so it answers in well under a millisecond. Resolving an action or
executing its command is when the work happens (`Request` -> `Task`).

Clients that resolve code actions (``resolveSupport`` with ``edit``) get every action with a `data`
object and nothing else. Resolving Explain, Add docstring or Fix runs the model (the edit comes back
in the action; an explanation is shown); resolving "Refactor..." or "Ask about this code" only
fills in the action's command, since those need the user's words first (a client may prompt for
them: the Neovim plugin does, see editors/nvim). Clients that do not resolve get every action as a
command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lsprotocol import types
from lsprotocol.converters import get_converter

from swarm_lsp.codebase import DEFAULT_CODEBASE_QUESTION, MAX_TARGETS
from swarm_lsp.config import VOTING_STRATEGIES as STRATEGIES
from swarm_lsp.lsp.session import Target
from swarm_lsp.swarm.tasks import CODE_KINDS, Task, TextRange, selection_around

EXPLAIN = "swarm.explain"
REFACTOR = "swarm.refactor"
DOCUMENT = "swarm.document"
FIX = "swarm.fix"
ASK = "swarm.ask"
CHAT = "swarm.chat"
EXPLAIN_CODEBASE = "swarm.explainCodebase"
REFACTOR_CODEBASE = "swarm.refactorCodebase"
REINDEX = "swarm.reindex"
STATUS = "swarm.status"
COMMANDS = (
    EXPLAIN,
    REFACTOR,
    DOCUMENT,
    FIX,
    ASK,
    CHAT,
    EXPLAIN_CODEBASE,
    REFACTOR_CODEBASE,
    REINDEX,
    STATUS,
)

KIND_EXPLAIN = "swarm.explain"
KIND_ASK = "swarm.ask"
KIND_REFACTOR = types.CodeActionKind.RefactorRewrite.value + ".swarm"
KIND_FIX = types.CodeActionKind.QuickFix.value + ".swarm"
ACTION_KINDS = [KIND_EXPLAIN, KIND_ASK, KIND_REFACTOR, KIND_FIX]

DEFAULT_ASK_QUESTION = "How is this code used in the codebase, and what depends on it?"
MAX_TITLE = 80

_converter = get_converter()


class ContentModified(ValueError):
    """The buffer changed between listing an action and resolving it."""


# ------------------------------------------------------------------------------------------- listing


def list_actions(
    params: types.CodeActionParams, *, resolve: bool, version: int | None
) -> list[types.CodeAction]:
    """The code actions for a selection (or a cursor) and the diagnostics the client sent."""
    uri = params.text_document.uri
    where = {"uri": uri, "range": _range_json(params.range)}
    found: list[types.CodeAction] = []

    def offer(
        title: str, kind: str, action: str, arguments: dict[str, Any], diagnostics: list | None = None
    ) -> None:
        if resolve:
            data = {"action": action, "version": version, **arguments}
            found.append(types.CodeAction(title=title, kind=kind, data=data, diagnostics=diagnostics))
        else:
            command = command_for(title, action, arguments)
            found.append(types.CodeAction(title=title, kind=kind, command=command, diagnostics=diagnostics))

    for diagnostic in params.context.diagnostics:
        if not _on_the_same_lines(diagnostic.range, params.range):
            continue
        first_line = diagnostic.message.strip().split("\n")[0]
        title = f"Fix: {first_line}"
        if len(title) > MAX_TITLE:
            title = title[: MAX_TITLE - 3].rstrip() + "..."
        fix = {**where, "range": _range_json(diagnostic.range), "diagnostic": _diagnostic_json(diagnostic)}
        offer(title, KIND_FIX, "fix", fix, [diagnostic])
    offer("Explain", KIND_EXPLAIN, "explain", where)
    offer("Refactor...", KIND_REFACTOR, "refactor", where)
    offer("Add docstring", KIND_REFACTOR, "document", where)
    offer("Ask about this code", KIND_ASK, "ask", where)
    only = params.context.only
    if only:
        found = [action for action in found if any(_kind_matches(action.kind or "", k) for k in only)]
    return found


NEEDS_INPUT = frozenset({"refactor", "ask"})
"""Actions whose resolve only fills in their command: the user's words come first."""


def command_for(title: str, action: str, arguments: dict[str, Any]) -> types.Command:
    return types.Command(title=title, command=f"swarm.{action}", arguments=[arguments])


def command_action(action: types.CodeAction) -> types.CodeAction:
    """Resolve "Refactor..." or "Ask about this code": the action with its command filled in."""
    data = action.data
    arguments = {"uri": data["uri"], "range": data["range"]}
    action.command = command_for(action.title, data["action"], arguments)
    return action


def _range_json(rng: types.Range) -> dict[str, Any]:
    return {
        "start": {"line": rng.start.line, "character": rng.start.character},
        "end": {"line": rng.end.line, "character": rng.end.character},
    }


def _diagnostic_json(diagnostic: types.Diagnostic) -> dict[str, Any]:
    data: dict[str, Any] = {"message": diagnostic.message}
    if diagnostic.source:
        data["source"] = diagnostic.source
    if diagnostic.code is not None:
        data["code"] = diagnostic.code
    return data


def _on_the_same_lines(a: types.Range, b: types.Range) -> bool:
    """Whether two ranges share a line (a cursor on a line is "in range" of that line's problems)."""
    return a.start.line <= b.end.line and b.start.line <= a.end.line


def _kind_matches(kind: str, wanted: str) -> bool:
    return kind == wanted or kind.startswith(wanted + ".")


# ----------------------------------------------------------------------------------------- requests


@dataclass
class Request:
    """One model request from a command's arguments or a code action's data, validated."""

    kind: str  # a task kind: explain, refactor, document, fix, ask, chat
    uri: str | None = None
    range: types.Range | None = None
    prompt: str = ""
    diagnostic: str | None = None
    conversation_id: str | None = None
    voters: int | None = None
    strategy: str | None = None
    version: int | None = None
    """The buffer version the range was taken at (from a listed action); None: the current one."""
    folder_uri: str | None = None
    """For requests about the whole codebase: a URI in the folder to use (default: the first)."""
    codebase: bool = False
    """An explanation of the whole codebase (the core adds the repo map to the question)."""

    @property
    def needs_input(self) -> bool:
        """A refactor without an instruction: the user must be asked for one."""
        return self.kind == "refactor" and not self.prompt.strip()


_PROMPT_KEYS = {"explain": "prompt", "refactor": "instruction", "ask": "question", "chat": "message"}


def parse_request(command: str, arguments: list[Any] | tuple[Any, ...]) -> Request:
    """A command's one argument object, checked; ValueError saying what is wrong."""
    kind = command.removeprefix("swarm.")
    fields = _single_object(command, arguments)
    return _request(kind, fields, command)


def resolve_request(data: Any) -> Request:
    """The request a listed code action carries in its `data`."""
    if not isinstance(data, dict) or data.get("action") not in ("explain", "document", "fix", *NEEDS_INPUT):
        raise ValueError("this code action was not made by swarm-lsp (its data is missing or unknown)")
    request = _request(str(data["action"]), data, "codeAction/resolve")
    version = data.get("version")
    if version is not None and not isinstance(version, int):
        raise ValueError(f"the code action's version must be an integer, got {version!r}")
    request.version = version
    return request


@dataclass
class CodebaseRequest:
    """swarm.refactorCodebase, swarm.reindex and swarm.status: a folder and their own fields."""

    folder_uri: str | None = None
    instruction: str = ""
    max_targets: int = MAX_TARGETS
    max_references: int | None = None
    voters: int | None = None


def parse_codebase_request(command: str, arguments: list[Any] | tuple[Any, ...]) -> CodebaseRequest:
    fields = _single_object(command, arguments)
    uri = fields.get("uri")
    if uri is not None and not isinstance(uri, str):
        raise ValueError(f"{command}: uri must be a string (a file: URI), got {uri!r}")
    request = CodebaseRequest(folder_uri=uri)
    if command == REFACTOR_CODEBASE:
        instruction = fields.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"{command} needs an instruction, e.g. 'rename fetch_user to load_user'")
        request.instruction = instruction
        request.max_targets = _optional_int(fields, "maxTargets", command, 1, 20) or MAX_TARGETS
        request.max_references = _optional_int(fields, "maxReferences", command, 1, 100_000)
        request.voters = _optional_int(fields, "voters", command, 1, 64)
    return request


def explain_codebase_request(arguments: list[Any] | tuple[Any, ...]) -> Request:
    """swarm.explainCodebase: an ask about the whole codebase (a default question when none)."""
    fields = _single_object(EXPLAIN_CODEBASE, arguments)
    question = fields.get("question")
    if question is not None and not isinstance(question, str):
        raise ValueError(f"{EXPLAIN_CODEBASE}: question must be a string, got {question!r}")
    request = _request(
        "ask", {"question": (question or "").strip() or DEFAULT_CODEBASE_QUESTION}, EXPLAIN_CODEBASE
    )
    request.codebase = True
    uri = fields.get("uri")
    if uri is not None and not isinstance(uri, str):
        raise ValueError(f"{EXPLAIN_CODEBASE}: uri must be a string (a file: URI), got {uri!r}")
    request.folder_uri = uri
    request.voters = _optional_int(fields, "voters", EXPLAIN_CODEBASE, 1, 64)
    return request


def _single_object(command: str, arguments: list[Any] | tuple[Any, ...]) -> dict[str, Any]:
    if len(arguments) > 1 or (arguments and not isinstance(arguments[0], dict)):
        raise ValueError(f"{command} takes one argument, an object; see docs/lsp.md for its fields")
    return dict(arguments[0]) if arguments else {}


def _request(kind: str, fields: dict[str, Any], origin: str) -> Request:
    request = Request(kind=kind)
    uri = fields.get("uri")
    if uri is not None and not isinstance(uri, str):
        raise ValueError(f"{origin}: uri must be a string (a file: URI), got {uri!r}")
    request.uri = uri
    if "range" in fields and fields["range"] is not None:
        request.range = parse_range(fields["range"], origin)
    key = _PROMPT_KEYS.get(kind)
    if key is not None and fields.get(key) is not None:
        if not isinstance(fields[key], str):
            raise ValueError(f"{origin}: {key} must be a string, got {fields[key]!r}")
        request.prompt = fields[key]
    if kind == "fix":
        request.diagnostic = _diagnostic_text(fields.get("diagnostic"), origin)
    if kind in ("ask", "chat") and not request.prompt.strip():
        if kind == "chat":
            raise ValueError(f"{origin}: a chat needs a message")
        if request.uri is None:
            raise ValueError(f"{origin}: a question about the codebase needs a question")
        request.prompt = DEFAULT_ASK_QUESTION
    needs_file = kind in CODE_KINDS or (kind == "explain" and request.range is not None)
    if needs_file and request.uri is None:
        raise ValueError(f"{origin}: a {kind} request needs the uri of the file")
    if kind in CODE_KINDS and request.range is None:
        raise ValueError(f"{origin}: a {kind} request needs a range (the selection, or the cursor)")
    conversation = fields.get("conversationId")
    if conversation is not None and not isinstance(conversation, str):
        raise ValueError(f"{origin}: conversationId must be a string, got {conversation!r}")
    request.conversation_id = conversation
    request.voters = _optional_int(fields, "voters", origin, 1, 64)
    strategy = fields.get("strategy")
    if strategy is not None and strategy not in STRATEGIES:
        raise ValueError(f"{origin}: strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    request.strategy = strategy
    return request


def parse_range(value: Any, origin: str) -> types.Range:
    try:
        return _converter.structure(value, types.Range)
    except Exception:
        raise ValueError(
            f"{origin}: range must be an LSP range "
            '{"start": {"line": L, "character": C}, "end": {...}}, '
            f"got {value!r}"
        ) from None


def _diagnostic_text(value: Any, origin: str) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, dict) and isinstance(value.get("message"), str) and value["message"].strip():
        text = value["message"].strip()
        origin_of = " ".join(
            str(value[key]) for key in ("source", "code") if value.get(key) not in (None, "")
        )
        return f"{text} [{origin_of}]" if origin_of else text
    raise ValueError(f"{origin}: a fix needs the diagnostic: a message, or an object with a message")


def _optional_int(fields: dict[str, Any], key: str, origin: str, low: int, high: int) -> int | None:
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{origin}: {key} must be an integer from {low} to {high}, got {value!r}")
    return value


def build_task(request: Request, target: Target | None) -> Task:
    """The core task for a request, on the target's current text.

    A cursor (an empty range) means the definition around it for explain and the code kinds; a
    fix works on the whole lines its diagnostic covers.
    """
    if target is None:
        return Task(kind=request.kind, prompt=request.prompt, conversation_id=request.conversation_id)  # type: ignore[arg-type]
    document = target.document
    if request.version is not None and document.version != request.version:
        raise ContentModified(
            f"{target.path} changed since the code actions were listed; ask for code actions again"
        )
    selection: TextRange | None = None
    if request.range is not None:
        selection = document.text_range(request.range)
        if _is_empty(selection):
            if request.kind in CODE_KINDS or request.kind == "explain":
                selection = selection_around(target.path, document.text, selection.start_line)
            else:
                selection = None
        if selection is not None and request.kind == "fix":
            selection = TextRange(selection.start_line, selection.end_line)
    return Task(
        kind=request.kind,  # type: ignore[arg-type]
        prompt=request.prompt,
        path=target.path,
        range=selection,
        file_text=document.text,
        diagnostic=request.diagnostic,
        conversation_id=request.conversation_id,
    )


def _is_empty(rng: TextRange) -> bool:
    return rng.start_line == rng.end_line and rng.start_col is not None and rng.start_col == rng.end_col
