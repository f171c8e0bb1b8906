from __future__ import annotations

import pytest

from swarm_lsp.models.base import Message
from swarm_lsp.swarm.answers import parse_answer
from swarm_lsp.swarm.edits import validate_edit
from swarm_lsp.swarm.prompts import build_messages, max_tokens_for, stop_strings
from swarm_lsp.swarm.tasks import CODE_KINDS, TASK_KINDS, Edit, Task, TextRange, apply_edit

CONTEXT = "--- pkg/shapes.py:1-13 (Shapes)\n```\nclass Shapes: ...\n```"

SHAPES = """import math


class Shapes:
    def area(self, radii):
        result = []
        for r in radii:
            result.append(math.pi * r * r)
        return result

    def count(self):
        return 1
"""
LOOP = SHAPES.split("\n")[5:9]  # lines 6-9

JS = """const config = {
  retries: 3,
  verbose: false,
};

function next(x) {
  return x + 1;
}
"""


def refactor(instruction: str = "use a list comprehension") -> Task:
    return Task("refactor", instruction, path="pkg/shapes.py", range=TextRange(6, 9), file_text=SHAPES)


def fenced(code: str, tag: str = "python") -> str:
    return f"```{tag}\n{code}\n```"


COMPREHENSION = "        return [math.pi * r * r for r in radii]"


# ---------------------------------------------------------------------------------------------- messages


def tasks_of_every_kind() -> list[Task]:
    return [
        Task("ask", "where are areas computed?"),
        Task("explain", path="pkg/shapes.py", range=TextRange(6, 9), file_text=SHAPES),
        refactor(),
        Task("document", path="pkg/shapes.py", range=TextRange(5, 9), file_text=SHAPES),
        Task(
            "fix",
            path="pkg/shapes.py",
            range=TextRange(6, 9),
            file_text=SHAPES,
            diagnostic="pyright: 'radii' is possibly unbound",
        ),
        Task("chat", "hello", history=[Message("user", "hi"), Message("assistant", "Hi! How can I help?")]),
    ]


def test_every_kind_has_a_task_here():
    assert {task.kind for task in tasks_of_every_kind()} == set(TASK_KINDS)


@pytest.mark.parametrize("task", tasks_of_every_kind(), ids=lambda task: task.kind)
def test_messages_have_system_then_user_and_carry_the_context(task):
    messages = build_messages(task, CONTEXT, context_citations=["pkg/shapes.py:1-13"])
    assert messages[0].role == "system"
    assert messages[-1].role == "user"
    assert CONTEXT in messages[0].content
    if task.kind == "chat":
        assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
        assert messages[-1].content == "hello"
    else:
        assert [m.role for m in messages] == ["system", "user"]


@pytest.mark.parametrize("kind", ["refactor", "document", "fix"])
def test_code_kinds_show_the_selection_as_it_is_under_its_line_numbers(kind):
    task = next(task for task in tasks_of_every_kind() if task.kind == kind)
    user = build_messages(task, CONTEXT)[-1].content
    assert f"Selected lines {task.range.start_line}-9, to replace:\n```python\n" in user
    assert "\n".join(LOOP) + "\n```" in user  # unnumbered: small models copy numbers


@pytest.mark.parametrize("kind", ["explain", "ask", "chat"])
def test_text_kinds_number_the_selected_lines(kind):
    task = Task(kind, "why?", path="pkg/shapes.py", range=TextRange(6, 9), file_text=SHAPES)
    user = build_messages(task, CONTEXT)[-1].content
    assert "pkg/shapes.py" in user
    assert " 6 |         result = []" in user
    assert " 9 |         return result" in user


def test_code_kinds_show_the_surrounding_lines_and_the_reply_format():
    messages = build_messages(refactor(), CONTEXT)
    system, user = messages[0].content, messages[1].content
    assert "only the replacement code in one fenced code block" in system
    assert user.startswith("Task: use a list comprehension")
    assert "Lines 3-5, before the selection (for indentation only):" in user
    assert "\nclass Shapes:\n    def area(self, radii):\n```" in user
    assert "Lines 10-12, after the selection:" in user
    assert "    def count(self):" in user
    assert user.endswith(
        "Reply with only the new code for lines 6-9 in one ```python block. Keep the indentation."
    )


def test_a_single_line_selection_reads_as_one_line():
    task = Task("refactor", "x", path="src/next.js", range=TextRange(7, 7), file_text=JS)
    user = build_messages(task, CONTEXT)[-1].content
    assert "Selected line 7, to replace:\n```javascript\n  return x + 1;\n```" in user


def test_markdown_selections_holding_fences_get_a_longer_fence():
    text = "# Usage\n\n```sh\nmake\n```\n"
    task = Task("refactor", "shorter", path="README.md", range=TextRange(1, 5), file_text=text)
    assert "````markdown\n# Usage" in build_messages(task, CONTEXT)[-1].content


def test_text_kinds_ask_for_citations():
    system = build_messages(Task("ask", "q?"), CONTEXT, context_citations=["pkg/shapes.py:1-13"])[0].content
    assert "path:start-end" in system
    assert "pkg/shapes.py:1-13" in system


def test_fix_shows_the_diagnostic():
    task = next(task for task in tasks_of_every_kind() if task.kind == "fix")
    assert "'radii' is possibly unbound" in build_messages(task, CONTEXT)[-1].content


def test_document_asks_to_leave_the_code_alone():
    task = Task("document", "Google style", path="pkg/shapes.py", range=TextRange(5, 9), file_text=SHAPES)
    user = build_messages(task, CONTEXT)[-1].content
    assert "Do not change the code" in user and "Google style" in user


def test_explain_a_whole_file_and_a_symbol():
    whole = build_messages(Task("explain", path="pkg/shapes.py", file_text=SHAPES), CONTEXT)[-1].content
    assert "Explain the file pkg/shapes.py" in whole and "12 |         return 1" in whole
    symbol = build_messages(Task("explain", "Shapes.area"), CONTEXT)[-1].content
    assert "Shapes.area" in symbol


def test_missing_context_is_said_plainly():
    assert "none was found" in build_messages(Task("ask", "q?"), "")[0].content


def test_chat_keeps_the_system_message_identical_across_turns():
    first = build_messages(Task("chat", "what does area do?", conversation_id="c1"), CONTEXT)
    history = [Message("user", "what does area do?"), Message("assistant", "It sums areas.")]
    second = build_messages(
        Task("chat", "and count?", history=history, conversation_id="c1"),
        CONTEXT,
        extra_context="--- pkg/other.py:1-3\n```\nx = 1\n```",
    )
    assert first[0] == second[0]
    assert second[1:3] == history
    assert "pkg/other.py:1-3" in second[-1].content and "pkg/other.py" not in second[0].content
    assert second[-1].content.endswith("and count?")


def test_build_messages_validates_the_task():
    with pytest.raises(ValueError, match="needs a prompt"):
        build_messages(Task("ask", ""), CONTEXT)


# ---------------------------------------------------------------------------------------------- validate


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (Task("ask"), "needs a prompt"),
        (Task("chat", "  "), "needs a prompt"),
        (Task("refactor", path="a.py", range=TextRange(1, 1), file_text="x = 1\n"), "instruction"),
        (Task("explain"), "path"),
        (Task("fix", path="a.py", range=TextRange(1, 1), file_text="x\n"), "diagnostic"),
        (Task("document", path="a.py", range=TextRange(1, 1)), "missing: file_text"),
        (Task("fix", diagnostic="E1", path="a.py", file_text="x\n"), "missing: range"),
        (Task("refactor", "x", path="a.py", range=TextRange(3, 9), file_text="x = 1\n"), "file has 2 lines"),
        (
            Task("refactor", "x", path="a.py", range=TextRange(1, 1, 0, 40), file_text="x = 1\n"),
            "past the end",
        ),
        (Task("explain", path="a.py", range=TextRange(1, 1)), "needs file_text"),
        (Task("ask", "q", range=TextRange(1, 1), file_text="x\n"), "needs the path"),
        (Task("chat", "hi", history=[Message("system", "x")]), "user and assistant"),
        (Task("translate", "x"), "unknown task kind"),  # type: ignore[arg-type]
    ],
)
def test_validate_says_what_is_wrong(task, message):
    with pytest.raises(ValueError, match=message):
        task.validate()


def test_text_range_checks_itself():
    with pytest.raises(ValueError, match="numbered from 1"):
        TextRange(0, 2)
    with pytest.raises(ValueError, match="before it starts"):
        TextRange(5, 2)
    with pytest.raises(ValueError, match="before it starts"):
        TextRange(2, 2, 8, 3)


def test_selection_text_whole_lines_columns_and_whole_file():
    assert refactor().selection_text() == "\n".join(LOOP)
    assert (
        Task(
            "ask", "q", path="a.py", range=TextRange(2, 2, 4, 9), file_text="x\nabc = 12345\n"
        ).selection_text()
        == "= 123"
    )
    assert Task("explain", path="a.py", file_text="x\ny\n").selection_text() == "x\ny\n"
    crlf = Task("ask", "q", path="a.py", range=TextRange(1, 1), file_text="a = 1\r\nb = 2\r\n")
    assert crlf.selection_text() == "a = 1"


# ---------------------------------------------------------------------------------------------- parse_answer


@pytest.mark.parametrize(
    "raw",
    [
        fenced(COMPREHENSION),
        fenced(COMPREHENSION, tag=""),
        fenced(COMPREHENSION, tag="javascript"),  # wrong language tag
        "Here is the refactored code:\n" + COMPREHENSION + "\nThis uses a list comprehension.",  # no fence
        fenced(" 6 | " + COMPREHENSION),  # line numbers copied from the prompt
        fenced("return [math.pi * r * r for r in radii]"),  # indentation dropped
        fenced(COMPREHENSION) + "<|im_end|>",
        "<|im_start|>assistant\n" + fenced(COMPREHENSION) + "<|im_end|>\n<|im_start|>user\nthanks",
        fenced(COMPREHENSION + "\n", tag="py")[:-4],  # unclosed fence
        fenced("def area(self, radii):\n    return [math.pi * r * r for r in radii]"),  # echoed the def line
    ],
    ids=[
        "fenced",
        "no-tag",
        "wrong-tag",
        "no-fence",
        "line-numbers",
        "dropped-indent",
        "template-token",
        "role-header-and-next-turn",
        "unclosed",
        "echoed-line-before",
    ],
)
def test_sloppy_code_answers_are_read(raw):
    answer = parse_answer(refactor(), raw)
    assert answer.valid, answer.invalid_reason
    assert answer.code == COMPREHENSION
    assert answer.edit == Edit("pkg/shapes.py", TextRange(6, 9), COMPREHENSION, "\n".join(LOOP))
    assert "return [math.pi * r * r for r in radii]" in answer.text
    assert "<|im_end|>" not in answer.text


def test_an_unfenced_answer_keeps_lines_it_shares_with_the_selection():
    raw = "Here is the code:\n        result = []\n        result.extend(math.pi * r * r for r in radii)\n        return result"
    answer = parse_answer(refactor(), raw)
    assert answer.valid, answer.invalid_reason
    assert answer.code.startswith("        result = []\n")


def test_an_unfenced_answer_after_the_repeated_prompt():
    user = build_messages(refactor(), CONTEXT)[-1].content
    prose_only = "\n".join(
        line for line in user.split("\n") if not line.startswith((" ", "`", "class")) and line
    )
    answer = parse_answer(refactor(), prose_only + "\n" + COMPREHENSION)
    assert answer.valid, answer.invalid_reason
    assert answer.code == COMPREHENSION


def test_numbered_lines_with_added_lines_keep_their_code():
    raw = fenced(
        " 6 |         total = [math.pi * r * r for r in radii]\n        total.sort()\n 9 |         return total"
    )
    answer = parse_answer(refactor(), raw)
    assert answer.valid, answer.invalid_reason
    assert answer.code == (
        "        total = [math.pi * r * r for r in radii]\n        total.sort()\n        return total"
    )


def test_dropped_indentation_keeps_the_relative_indentation():
    raw = fenced("total = 0\nfor r in radii:\n    total += math.pi * r * r\nreturn total")
    answer = parse_answer(refactor(), raw)
    assert answer.valid, answer.invalid_reason
    assert answer.code == (
        "        total = 0\n        for r in radii:\n            total += math.pi * r * r\n        return total"
    )


def test_only_the_first_line_flush_left_is_fixed():
    raw = fenced("result = [\n            math.pi * r * r for r in radii\n        ]\n        return result")
    answer = parse_answer(refactor(), raw)
    assert answer.valid, answer.invalid_reason
    assert answer.code.split("\n")[0] == "        result = ["
    assert answer.code.split("\n")[1] == "            math.pi * r * r for r in radii"


def test_a_model_repeating_the_prompt_blocks_still_gives_its_own_code():
    user = build_messages(refactor(), CONTEXT)[-1].content
    answer = parse_answer(refactor(), user + "\n\n" + fenced(COMPREHENSION))
    assert answer.valid, answer.invalid_reason
    assert answer.code == COMPREHENSION


def test_prose_outside_the_block_becomes_the_explanation():
    answer = parse_answer(refactor(), "Sure! A comprehension is shorter.\n" + fenced(COMPREHENSION))
    assert answer.text.startswith("Sure! A comprehension is shorter.")
    assert answer.text.endswith("```python\nreturn [math.pi * r * r for r in radii]\n```")


@pytest.mark.parametrize("raw", ["", "   \n", "<|im_end|>", "<|endoftext|>"])
def test_empty_answers_are_invalid(raw):
    answer = parse_answer(refactor(), raw)
    assert not answer.valid and answer.invalid_reason == "the answer is empty" and answer.edit is None
    text_answer = parse_answer(Task("ask", "q?"), raw)
    assert not text_answer.valid and text_answer.text == ""


def test_an_answer_without_code_is_invalid():
    answer = parse_answer(refactor(), "I am sorry, I cannot help with that request.")
    assert not answer.valid and answer.edit is None


def test_returning_the_selection_unchanged_is_invalid():
    answer = parse_answer(refactor(), fenced("\n".join(LOOP)))
    assert not answer.valid
    assert "unchanged" in answer.invalid_reason


def test_an_edit_that_does_not_parse_is_invalid_and_carries_no_edit():
    answer = parse_answer(refactor(), fenced("        return [math.pi * r * r for r in radii"))
    assert not answer.valid and answer.edit is None
    assert "does not parse" in answer.invalid_reason and "line 6" in answer.invalid_reason
    assert answer.code is not None  # still shown and voted on as invalid


@pytest.mark.parametrize("kind", ["ask", "explain", "chat"])
def test_text_answers_lose_template_artefacts_and_echoed_questions(kind):
    task = Task(kind, "What does area do?", path="pkg/shapes.py")
    raw = "Question: What does area do?\nAnswer: It sums circle areas (pkg/shapes.py:5-9).<|im_end|>junk"
    answer = parse_answer(task, raw)
    assert answer.valid and answer.edit is None and answer.code is None
    assert answer.text == "It sums circle areas (pkg/shapes.py:5-9)."


def test_text_answers_drop_an_invented_next_turn():
    answer = parse_answer(Task("chat", "hi"), "Hello!\nUser: and now?")
    assert answer.text == "Hello!"


def test_crlf_files_get_crlf_edits():
    text = SHAPES.replace("\n", "\r\n")
    task = Task("refactor", "x", path="pkg/shapes.py", range=TextRange(6, 9), file_text=text)
    answer = parse_answer(task, fenced("total = [math.pi * r * r for r in radii]\nreturn total"))
    assert answer.valid, answer.invalid_reason
    assert answer.edit.new_text == "        total = [math.pi * r * r for r in radii]\r\n        return total"
    assert "\r\n        return total\r\n\r\n    def count" in apply_edit(text, answer.edit)


def test_column_ranges_replace_only_the_selected_text():
    text = "def add(a, b):\n    return a + b\n"
    task = Task("refactor", "swap", path="m.py", range=TextRange(2, 2, 11, 16), file_text=text)
    answer = parse_answer(task, fenced("b + a"))
    assert answer.valid, answer.invalid_reason
    assert apply_edit(text, answer.edit) == "def add(a, b):\n    return b + a\n"
    indented = Task("refactor", "swap", path="m.py", range=TextRange(2, 2, 4, None), file_text=text)
    answer = parse_answer(indented, fenced("    return b + a"))
    assert answer.edit.new_text == "return b + a"
    assert apply_edit(text, answer.edit) == "def add(a, b):\n    return b + a\n"


# ---------------------------------------------------------------------------------------------- validate_edit


def edit_of(task: Task, new_text: str) -> Edit:
    assert task.path is not None and task.range is not None
    return Edit(task.path, task.range, new_text, task.selection_text())


def test_a_good_python_refactor_is_valid():
    assert validate_edit(refactor(), edit_of(refactor(), COMPREHENSION)) == (True, "")


def test_an_unclosed_paren_is_rejected():
    ok, reason = validate_edit(
        refactor(), edit_of(refactor(), "        return sum(math.pi * r * r for r in radii")
    )
    assert not ok and "does not parse" in reason


def test_an_edit_that_breaks_the_surrounding_python_file_is_rejected():
    # valid alone, but dedented out of the method it leaves `area` with an empty body
    ok, reason = validate_edit(refactor(), edit_of(refactor(), "return [math.pi * r * r for r in radii]"))
    assert not ok and "would not parse" in reason


def js_task(line: int) -> Task:
    return Task("refactor", "x", path="src/next.js", range=TextRange(line, line), file_text=JS)


def test_a_good_js_refactor_is_valid():
    task = js_task(7)
    assert validate_edit(task, edit_of(task, "  const y = x + 1;\n  return y;")) == (True, "")


def test_an_unclosed_js_paren_is_rejected():
    task = js_task(7)
    ok, reason = validate_edit(task, edit_of(task, "  return (x + 1;"))
    assert not ok and "does not parse" in reason and "line 7" in reason


def test_a_js_edit_that_breaks_the_surrounding_file_is_rejected():
    task = js_task(2)  # inside an object literal: a statement parses alone but not there
    ok, reason = validate_edit(task, edit_of(task, "  let retries = 3;"))
    assert not ok and "would not parse" in reason


def test_a_file_that_was_broken_already_may_stay_broken():
    text = "def f(:\n    pass\nx = 1\n"
    task = Task("refactor", "x", path="a.py", range=TextRange(3, 3), file_text=text)
    assert validate_edit(task, edit_of(task, "x = 2")) == (True, "")


def test_markdown_and_text_are_accepted_without_a_grammar():
    text = "# Title\n\nSome text here.\n"
    task = Task("refactor", "shorter", path="README.md", range=TextRange(3, 3), file_text=text)
    assert validate_edit(task, edit_of(task, "Text (")) == (True, "")
    answer = parse_answer(task, "Here is the rewritten text:\nText.")
    assert answer.valid and answer.edit.new_text == "Text."


def test_a_stale_edit_is_refused():
    edit = edit_of(refactor(), COMPREHENSION)
    changed = SHAPES.replace("result = []", "result = list()")
    with pytest.raises(ValueError, match="changed at lines 6-9"):
        apply_edit(changed, edit)
    ok, reason = validate_edit(
        Task("refactor", "x", path="pkg/shapes.py", range=TextRange(6, 9), file_text=changed), edit
    )
    assert not ok and "run the task again" in reason


# ---------------------------------------------------------------------------------------------- document


def document_task() -> Task:
    return Task("document", path="pkg/shapes.py", range=TextRange(5, 9), file_text=SHAPES)


def test_document_accepts_docstrings_and_comments():
    raw = fenced(
        "    def area(self, radii):\n"
        '        """The area of a circle for each radius."""\n'
        "        result = []\n"
        "        for r in radii:  # one circle per radius\n"
        "            result.append(math.pi * r * r)\n"
        "        return result"
    )
    answer = parse_answer(document_task(), raw)
    assert answer.valid, answer.invalid_reason
    assert '"""The area of a circle for each radius."""' in apply_edit(SHAPES, answer.edit)


def test_document_rejects_an_answer_that_changes_the_code():
    raw = fenced(
        "    def area(self, radii):\n"
        '        """The area of a circle for each radius."""\n'
        "        return [math.pi * r * r for r in radii]"
    )
    answer = parse_answer(document_task(), raw)
    assert not answer.valid and answer.edit is None
    assert "changes the code" in answer.invalid_reason


def test_document_in_js_ignores_comments_only():
    task = Task("document", path="src/next.js", range=TextRange(6, 8), file_text=JS)
    good = "/** The next number. */\nfunction next(x) {\n  // one more\n  return x + 1;\n}"
    bad = "/** The next number. */\nfunction next(x) {\n  return x + 2;\n}"
    assert validate_edit(task, edit_of(task, good)) == (True, "")
    ok, reason = validate_edit(task, edit_of(task, bad))
    assert not ok and "'1' became '2'" in reason


# ---------------------------------------------------------------------------------------------- limits


def test_stop_strings_cover_chat_templates():
    for task in tasks_of_every_kind():
        assert "<|im_end|>" in stop_strings(task)
    assert "\nUser:" in stop_strings(Task("chat", "hi"))
    assert "\nUser:" not in stop_strings(refactor())


def test_max_tokens_grow_with_the_selection_for_code_kinds():
    assert max_tokens_for(Task("ask", "q"), 256) == 256
    big = Task(
        "refactor", "x", path="a.py", range=TextRange(1, 400), file_text="value = compute(1, 2)\n" * 400
    )
    assert max_tokens_for(big, 256) > 3000
    assert max_tokens_for(refactor(), 256) == 256
    huge = Task("document", path="a.py", range=TextRange(1, 3000), file_text="value = compute(1, 2)\n" * 3000)
    assert max_tokens_for(huge, 256) == 4096


def test_code_kinds_are_the_edit_producing_ones():
    assert set(CODE_KINDS) == {"refactor", "document", "fix"}


# ---------------------------------------------------------------------------------------------- fix


BROKEN_JS = JS.replace("x + 1;", "x + ;")


def fix_task() -> Task:
    return Task(
        "fix",
        path="src/next.js",
        range=TextRange(7, 7),
        file_text=BROKEN_JS,
        diagnostic="SyntaxError: Unexpected token ';'",
    )


@pytest.mark.parametrize(
    "raw",
    [
        fenced("  return x + 1;", "javascript"),
        fenced("function next(x) {\n  return x + 1;\n}", "javascript"),  # the lines around it copied
        fenced("6 | function next(x) {\n7 |   return x + 1;\n8 | }", "js"),  # ... with their numbers
        "```javascript\n```javascript\n  return x + 1;\n```",  # the block restarted
        fenced(JS.rstrip("\n"), "javascript"),  # the whole file
    ],
    ids=["plain", "echoed-around", "echoed-numbered", "restarted-fence", "whole-file"],
)
def test_fix_answers_are_cut_down_to_the_selection(raw):
    answer = parse_answer(fix_task(), raw)
    assert answer.valid, answer.invalid_reason
    assert answer.code == "  return x + 1;"
    assert apply_edit(BROKEN_JS, answer.edit) == JS


def test_a_fix_that_keeps_the_syntax_error_is_invalid():
    answer = parse_answer(fix_task(), fenced("  return x + ;;", "javascript"))
    assert not answer.valid and "leaves a syntax error" in answer.invalid_reason


def test_a_fix_that_only_reindents_is_unchanged():
    answer = parse_answer(fix_task(), fenced("7 | return x + ;", "js"))
    assert not answer.valid and "unchanged" in answer.invalid_reason


def test_an_answer_that_only_repeats_the_lines_around_is_no_code():
    answer = parse_answer(fix_task(), fenced(" 4 | };\n 5 |\n 6 | function next(x) {", "javascript"))
    assert not answer.valid and answer.edit is None


def test_the_whole_file_echoed_back_is_cut_to_the_selection():
    whole = SHAPES.replace("\n".join(LOOP), COMPREHENSION).rstrip("\n")
    answer = parse_answer(refactor(), fenced(whole))
    assert answer.valid, answer.invalid_reason
    assert answer.code == COMPREHENSION
