"""How each kind's answer is read (`parse_answer`).

Answers are read forgivingly, because small models are sloppy: chat-template tokens are cut, the
code is taken from the first fenced block that looks like code (whatever its language tag, closed
or not) or else from the whole answer minus lead-in prose, copied line numbers and echoed
surrounding lines are removed, and dropped indentation is restored. A code answer becomes an `Edit`
of the selection only when `validate_edit` accepts it; of its re-indented versions, the first that
passes wins.
"""

from __future__ import annotations

import itertools
import re
import textwrap
from dataclasses import dataclass

from swarm_lsp.code.languages import has_grammar
from swarm_lsp.code.syntax import parses
from swarm_lsp.swarm.edits import normalised_code, validate_edit
from swarm_lsp.swarm.prompts import CONTEXT_LINES, PromptView, user_text
from swarm_lsp.swarm.tasks import CODE_KINDS, Edit, Task, TextRange, line_prefix

__all__ = ["ParsedAnswer", "parse_answer"]


@dataclass(frozen=True)
class ParsedAnswer:
    text: str
    """Markdown for the user; for the code kinds a short explanation (if any) and the code."""
    edit: Edit | None
    """The edit of a valid code answer; None for the text kinds and for invalid answers."""
    valid: bool
    invalid_reason: str = ""
    code: str | None = None
    """The replacement code as extracted and re-indented (for voting); None for the text kinds."""


_TURN_MARKERS = (
    "<|im_end|>",
    "<|im_start|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<end_of_turn>",
    "<start_of_turn>",
    "<|end|>",
    "<|user|>",
    "<|system|>",
)
_LEADING_ROLE = re.compile(
    r"^\s*(?:<\|im_start\|>\s*assistant|<\|assistant\|>|<start_of_turn>model"
    r"|<\|start_header_id\|>assistant<\|end_header_id\|>|assistant:?)[ \t]*\n",
    re.IGNORECASE,
)
_INVENTED_TURN = re.compile(r"\n(?:User|Human|### (?:User|Instruction)):", re.IGNORECASE)
_QUESTION_LABEL = re.compile(r"^\s*(?:question|q)\s*:", re.IGNORECASE)
_ANSWER_LABEL = re.compile(r"^\s*(?:[Aa]ssistant|[Aa]nswer|A)\s*:\s*")
_FENCE_LINE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[^`]*$")
_NUMBER_PREFIX = re.compile(r"^\s*(\d{1,6})[ \t]?[|:][ \t]?")
_LEAD_IN = re.compile(
    r"^(?:here(?:'s| is| are)|sure|certainly|of course|okay|ok\b|below|great|done|"
    r"the (?:refactored|fixed|updated|corrected|documented|new|following|modified|complete)|"
    r"this (?:is|code|version|should)|i(?:'ve| have)|answer|output|result|explanation|"
    r"refactored|fixed|updated|corrected|documented|modified|note)\b",
    re.IGNORECASE,
)
_CODE_MARKS = re.compile(r"[=;{}\[\]<>$]|->|=>|::|\w\(|^\s*[@#]|\)\s*:?\s*$")
_KEYWORD_TEXT = """
and as assert async await break case catch class const continue def default defer del do elif else enum
except export extends extern final finally fn for from func function global go if impl import in interface
is lambda let loop match mod module namespace new nonlocal not or package pass pub private protected public
raise return static struct switch template this throw throws trait try type typedef union unsafe use using
var void volatile while with yield
"""
_KEYWORDS = frozenset(_KEYWORD_TEXT.split())


def parse_answer(task: Task, raw: str) -> ParsedAnswer:
    """Read one model answer for `task`; see the module docstring for what is forgiven."""
    cleaned = _clean(raw)
    if task.kind not in CODE_KINDS:
        text = _strip_echoed_question(task, cleaned)
        return ParsedAnswer(text, None, bool(text), "" if text else "the answer is empty")
    if not cleaned.strip():
        return ParsedAnswer("", None, False, "the answer is empty")
    view = PromptView.of(task)
    if view is None or task.range is None or task.path is None:
        return ParsedAnswer(cleaned, None, False, f"a {task.kind} task needs path, file_text and range")
    code, explanation = _extract_code(task, cleaned, view, _echo_lines(task))
    if code is None or not code.strip():
        return ParsedAnswer(cleaned, None, False, "the answer holds no code")
    lines = _strip_line_numbers(code.split("\n"), task.selection_text(), task.range)
    lines = _trim_echoed_context(lines, view)
    if not any(line.strip() for line in lines):
        return ParsedAnswer(cleaned, None, False, "the answer holds no code")
    selection = task.selection_text().replace("\r\n", "\n")
    prefix = line_prefix(task.file_text or "", task.range)
    newline = "\r\n" if "\r\n" in (task.file_text or "") else "\n"
    chosen: tuple[str, Edit, bool, str] | None = None
    for candidate in _indent_candidates(lines, selection, prefix):
        edit = Edit(task.path, task.range, candidate.replace("\n", newline), task.selection_text())
        ok, reason = validate_edit(task, edit)
        if ok:
            chosen = (candidate, edit, True, "")
            break
        if chosen is None:
            chosen = (candidate, edit, False, reason)
    if chosen is None:
        return ParsedAnswer(cleaned, None, False, "the answer holds no code")
    final, edit, ok, reason = chosen
    view_code = (prefix + final) if prefix and not prefix.strip() else final
    text = f"{view.fence}{view.tag}\n{textwrap.dedent(view_code)}\n{view.fence}"
    if explanation:
        text = f"{explanation}\n\n{text}"
    return ParsedAnswer(text, edit if ok else None, ok, reason, code=final)


def _clean(raw: str) -> str:
    """The answer without chat-template tokens, a leading role header or an invented next turn."""
    text = raw.replace("\r\n", "\n")
    text = _LEADING_ROLE.sub("", text, count=1)
    cut = min((i for i in (text.find(marker) for marker in _TURN_MARKERS) if i != -1), default=len(text))
    text = text[:cut]
    invented = _INVENTED_TURN.search(text)
    if invented:
        text = text[: invented.start()]
    text = text.rstrip()
    if text.endswith("</s>"):
        text = text[: -len("</s>")]
    return text.strip("\n").rstrip()


def _loose(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text).strip().lower()


def _strip_echoed_question(task: Task, text: str) -> str:
    lines = text.strip().split("\n")
    question = _loose(task.prompt)
    while lines and question and _loose(_QUESTION_LABEL.sub("", lines[0])) == question:
        lines.pop(0)
    return _ANSWER_LABEL.sub("", "\n".join(lines).strip(), count=1).strip()


def _echo_lines(task: Task) -> set[str]:
    """The non-code lines of the prompt, loosely normalised: a model repeating them is not writing code."""
    _, outside_code = _fenced_blocks(user_text(task))
    echoes = {_loose(line) for line in outside_code.split("\n")}
    echoes.add(_loose(task.prompt))
    echoes.discard("")
    return echoes


@dataclass(frozen=True)
class _Block:
    info: str
    body: str


def _fenced_blocks(text: str) -> tuple[list[_Block], str]:
    """The fenced blocks of `text` (an unclosed last one runs to the end) and the prose outside them."""
    blocks: list[_Block] = []
    prose: list[str] = []
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        opening = _FENCE_LINE.match(lines[index])
        if not opening:
            prose.append(lines[index])
            index += 1
            continue
        fence, indent = opening.group("fence"), len(opening.group("indent"))
        body: list[str] = []
        index += 1
        while index < len(lines):
            line = lines[index]
            stripped = line.strip()
            index += 1
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                break
            if not body and _FENCE_LINE.match(line):  # "```python" twice: the model restarted the block
                continue
            if fence[0] == "`" and stripped.endswith(fence) and not stripped.startswith(fence):
                body.append(_unindent(line.rstrip()[: -len(fence)], indent))  # closing fence glued on
                break
            body.append(_unindent(line, indent))
        blocks.append(_Block(opening.group("info").lower(), "\n".join(body).strip("\n")))
    return blocks, "\n".join(prose)


def _unindent(line: str, width: int) -> str:
    cut = len(line) - len(line.lstrip(" "))
    return line[min(cut, width) :]


def _extract_code(task: Task, text: str, view: PromptView, echoes: set[str]) -> tuple[str | None, str]:
    """The replacement code in `text`, and the prose around it (echoes of the prompt dropped)."""
    language = task.language
    blocks, prose = _fenced_blocks(text)
    if blocks:
        return _pick_block(task, blocks, view), _explanation(prose, echoes)
    lines = text.split("\n")
    code_language = has_grammar(language)

    def is_prose(line: str) -> bool:
        if _loose(line) in echoes:
            return True
        return _is_prose(line) if code_language else bool(_LEAD_IN.match(line.strip()))

    start, end = 0, len(lines)
    while start < end and (not lines[start].strip() or is_prose(lines[start])):
        start += 1
    while end > start and (not lines[end - 1].strip() or is_prose(lines[end - 1])):
        end -= 1
    explanation = "\n".join(lines[:start] + lines[end:])
    return "\n".join(lines[start:end]), _explanation(explanation, echoes)


def _pick_block(task: Task, blocks: list[_Block], view: PromptView) -> str | None:
    """The first block that looks like code and is not a copy of what the prompt showed.

    A model repeating the prompt repeats its blocks (the lines before, the selection, the lines
    after); its own version comes after them. A copy of the selection is taken only when nothing
    else is offered (validation then rejects it as unchanged); a copy of the lines around it never.
    """

    def key(body: str) -> str:
        return normalised_code(textwrap.dedent("\n".join(_strip_line_numbers(body.split("\n"), "", None))))

    shown = {key("\n".join(line for _, line in part)) for part in (view.before, view.after)} - {""}
    selection = key(task.selection_text())
    bodies = [block.body for block in blocks if block.body.strip()]
    code_like = [body for body in bodies if _looks_like_code(body, task.language)] or bodies
    fresh = [body for body in code_like if key(body) not in shown]
    changed = [body for body in fresh if key(body) != selection]
    for group in (changed, fresh):
        if group:
            return group[0]
    return None


def _explanation(prose: str, echoes: set[str]) -> str:
    kept = [line for line in prose.split("\n") if _loose(line) not in echoes]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    if len(text) > 600:
        text = text[:597].rstrip() + "..."
    return text


def _looks_like_code(body: str, language: str) -> bool:
    if not has_grammar(language):
        return True  # markdown or plain text: prose is the content
    if parses(language, textwrap.dedent(body)):
        return True
    lines = [line for line in body.split("\n") if line.strip()]
    prose = sum(1 for line in lines if _is_prose(line))
    return prose * 2 < len(lines)


def _is_prose(line: str) -> bool:
    """A line of English rather than code (heuristic, used only at the edges of an unfenced answer)."""
    stripped = line.strip()
    if not stripped or stripped.startswith(("#", "//", "/*", "*", "--", "<!--", '"""', "'''", "@")):
        return False
    first = re.match(r"[A-Za-z_]\w*", stripped)
    if first and first.group() in _KEYWORDS and not _LEAD_IN.match(stripped):
        return False
    bare = re.sub(r"`[^`]*`", "x", stripped)  # `names` quoted in prose are not code
    if _CODE_MARKS.search(bare) and not re.search(r"[.!:]$", bare):
        return False
    if _LEAD_IN.match(stripped):
        return True
    words = re.findall(r"[A-Za-z']+", bare)
    return len(words) >= 3 and not _CODE_MARKS.search(bare)


def _strip_line_numbers(lines: list[str], selection: str, rng: TextRange | None) -> list[str]:
    """Lines without the ``12 | `` / ``12: `` prefixes a model copied from the prompt.

    Stripped when the numbers increase, start near the selection (when `rng` is given), and either
    every non-blank line has one or the first does and most do (lines the model added carry none);
    never when the selection itself looks numbered.
    """
    nonblank = [line for line in lines if line.strip()]
    selection_lines = [line for line in selection.split("\n") if line.strip()]
    if not nonblank or (selection_lines and all(_NUMBER_PREFIX.match(line) for line in selection_lines)):
        return lines
    matches = [_NUMBER_PREFIX.match(line) for line in nonblank]
    numbers = [int(match.group(1)) for match in matches if match]
    if not numbers or matches[0] is None:
        return lines
    if any(a > b for a, b in itertools.pairwise(numbers)):
        return lines
    if len(numbers) < len(nonblank) and len(numbers) * 2 < len(nonblank):
        return lines
    if rng is not None and not rng.start_line - CONTEXT_LINES <= numbers[0] <= rng.end_line + CONTEXT_LINES:
        return lines
    out = []
    for line in lines:
        match = _NUMBER_PREFIX.match(line)
        out.append(line[match.end() :] if match else line)
    return out


def _trim_echoed_context(lines: list[str], view: PromptView) -> list[str]:
    """Drop the lines before/after the selection that the model copied around its code.

    Taken off: the lines shown before the selection when the answer starts with (the end of) them
    or holds all of them, the lines shown after it when the answer ends with (the start of) them or
    holds all of them, and a lone closer (``}``) copied from around the selection that leaves more
    brackets closed than opened.
    """
    selection = [line.strip() for _, line in view.selection if line.strip()]
    before = [line.strip() for _, line in view.before if line.strip()]
    after = [line.strip() for _, line in view.after if line.strip()]
    rows = [i for i, line in enumerate(lines) if line.strip()]
    if not rows or not selection:
        return lines
    texts = [lines[i].strip() for i in rows]

    def substantial(block: list[str]) -> bool:
        return any(len(re.sub(r"\W", "", line)) >= 4 for line in block)

    def find(block: list[str], positions: range) -> int | None:
        for at in positions:
            if texts[at : at + len(block)] == block:
                return at
        return None

    head, tail = 0, len(texts)  # the kept nonblank lines: texts[head:tail]
    for k in range(len(before), 0, -1):
        block = before[-k:]
        if not substantial(block) or block == selection[:k]:
            continue
        anywhere = range(0, len(texts) - k) if k == len(before) else range(0, 1 if len(texts) > k else 0)
        at = find(block, anywhere)
        if at is not None:
            head = at + k
            break
    for k in range(len(after), 0, -1):
        block = after[:k]
        if not substantial(block) or block == selection[-k:]:
            continue
        last_start = tail - k
        anywhere = range(head + 1, last_start + 1) if k == len(after) else range(last_start, last_start + 1)
        at = find(block, range(max(anywhere.start, head + 1), anywhere.stop))
        if at is not None:
            tail = at
            break
    deficit = _balance(selection) - _balance(texts[head:tail])
    while (
        deficit > 0 and tail - head > 1 and after and texts[tail - 1] == after[0] and _balance([after[0]]) < 0
    ):
        tail -= 1
        deficit += _balance([after[0]])
    while (
        deficit < 0
        and tail - head > 1
        and before
        and texts[head] == before[-1]
        and _balance([before[-1]]) > 0
    ):
        head += 1
        deficit += _balance([before[-1]])
    if head == 0 and tail == len(texts):
        return lines
    first = rows[head]
    last = rows[tail - 1] + 1
    return lines[first:last]


def _balance(lines: list[str]) -> int:
    """Brackets opened minus closed (a rough count: strings and comments are not told apart)."""
    text = "".join(lines)
    return sum(text.count(c) for c in "([{") - sum(text.count(c) for c in ")]}")


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _indent_candidates(lines: list[str], selection: str, prefix: str) -> list[str]:
    """The replacement re-indented to the selection, most likely first.

    Models drop the selection's indentation in two ways: all lines shifted left alike, or only the
    first line flush left (the rest copied as they were). The selection's first two lines say which
    fits; validation then picks the first candidate that parses in the file. `prefix` is the text
    before the selection on its first line.
    """
    lines = [line.rstrip("\r") for line in lines]
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    # keep the blank lines the selection starts and ends with
    lead = trail = 0
    if selection.strip():
        lead = len(selection.split("\n")) - len(selection.lstrip("\n").split("\n"))
        trail = len(selection.split("\n")) - len(selection.rstrip("\n").split("\n"))
    indented_prefix = bool(prefix) and not prefix.strip()

    def finish(candidate: list[str]) -> str:
        if indented_prefix and not lead and candidate:  # the range starts after this indentation
            first = candidate[0]
            cut = len(prefix) if first.startswith(prefix) else len(_indent_of(first))
            candidate = [first[cut:], *candidate[1:]]
        return "\n" * lead + "\n".join(candidate) + "\n" * trail

    if prefix.strip():  # the selection starts mid-line: its indentation is not ours to fix
        return [finish(lines)]
    wanted = [line for line in (prefix + selection).split("\n") if line.strip()]
    nonblank = [line for line in lines if line.strip()]
    if not wanted or not nonblank:
        return [finish(lines)]
    target = _indent_of(wanted[0])
    have = _indent_of(nonblank[0])
    if have == target:
        return [finish(lines)]
    unit = "\t" if target.startswith("\t") else " "
    shift = len(target) - len(have)
    uniform: list[str] | None = None
    if shift > 0:
        uniform = [unit * shift + line if line.strip() else line for line in lines]
    elif all(len(_indent_of(line)) >= -shift for line in nonblank):
        uniform = [line[-shift:] if line.strip() else line for line in lines]
    first_index = lines.index(nonblank[0])
    first_only = [*lines[:first_index], target + nonblank[0].lstrip(" \t"), *lines[first_index + 1 :]]
    prefer_first = False
    if len(nonblank) > 1 and len(wanted) > 1:
        wanted_step = len(_indent_of(wanted[1])) - len(target)
        second = len(_indent_of(nonblank[1]))
        prefer_first = second - len(target) == wanted_step and second - len(have) != wanted_step
    ordered = [first_only, uniform] if prefer_first else [uniform, first_only]
    candidates: list[str] = []
    for candidate in [*ordered, lines]:
        if candidate is not None and finish(candidate) not in candidates:
            candidates.append(finish(candidate))
    return candidates
