-- :checkhealth swarm_lsp: Neovim's version, the configured server command and its version, and for a
-- running server the model and the index (from `swarm.status`).
local M = {}

local health = vim.health
local STATUS_TIMEOUT_MS = 10000
local VERSION_TIMEOUT_MS = 30000

--- The command that prints the server's version: the configured command up to `serve`, then
--- `--version` (`swarm-lsp serve` -> `swarm-lsp --version`, `python -m swarm_lsp serve` -> `python -m
--- swarm_lsp --version`).
---@param cmd string[]
---@return string[]
function M.version_command(cmd)
  local serve = vim.fn.index(cmd, 'serve') + 1 -- 0: not there
  local asked = vim.list_slice(cmd, 1, serve > 1 and serve - 1 or 1)
  table.insert(asked, '--version')
  return asked
end

local function check_neovim()
  health.start('swarm-lsp: Neovim')
  local version = tostring(vim.version())
  if vim.fn.has('nvim-0.11') == 0 then
    health.error(('Neovim %s is too old'):format(version), {
      'swarm-lsp needs Neovim 0.11 or newer (vim.lsp.config and vim.lsp.enable).',
    })
    return
  end
  health.ok(('Neovim %s (0.11 or newer)'):format(version))
  if not (vim.lsp.inline_completion and vim.lsp.inline_completion.enable) then
    health.info('No ghost text: inline completion needs Neovim 0.12 (vim.lsp.inline_completion).')
  end
end

local INSTALL_ADVICE = {
  'Install the server: `pip install swarm-lsp` (or `pipx install swarm-lsp`) and make sure `swarm-lsp` is on $PATH,',
  "or name it in your setup: require('swarm_lsp').setup({ cmd = { '/path/to/swarm-lsp', 'serve' } }).",
}

local function check_command()
  health.start('swarm-lsp: server command')
  local config = vim.lsp.config[require('swarm_lsp').name]
  local cmd = config and config.cmd
  if type(cmd) == 'function' then
    health.info('`cmd` is a function: not checked here.')
    return
  end
  if type(cmd) ~= 'table' or type(cmd[1]) ~= 'string' then
    health.error('No server command is configured.', {
      "Call require('swarm_lsp').setup() in your init.lua, or set vim.lsp.config('swarm_lsp', { cmd = ... }).",
    })
    return
  end
  local shown = table.concat(cmd, ' ')
  if vim.fn.executable(cmd[1]) == 0 then
    health.error(('Server command not found: %s'):format(shown), INSTALL_ADVICE)
    return
  end
  health.ok(('Server command found: %s (%s)'):format(shown, vim.fn.exepath(cmd[1])))
  local asked = M.version_command(cmd)
  local started, process = pcall(vim.system, asked, { text = true })
  local done = started and process:wait(VERSION_TIMEOUT_MS) or nil
  if done and done.code == 0 and vim.trim(done.stdout or '') ~= '' then
    health.ok(('Version: %s'):format(vim.trim(done.stdout)))
  else
    local why = done and vim.trim((done.stderr or '') .. (done.stdout or '')) or tostring(process)
    health.warn(('`%s` failed: %s'):format(table.concat(asked, ' '), why), {
      'An older or broken install: reinstall with `pip install -U swarm-lsp`.',
    })
  end
end

local function text(value)
  return type(value) == 'string' and value or nil
end

local function check_folder(folder)
  local root = text(folder.root) or '?'
  if text(folder.error) then
    health.error(('%s: %s'):format(root, folder.error), { 'See the server log (:LspLog) and docs/configuration.md.' })
  end
  local settings = type(folder.settings) == 'table' and folder.settings or {}
  if settings.model then
    local loaded = folder.modelLoaded == true and 'loaded' or 'not loaded yet (it loads on the first request)'
    health.ok(
      ('%s: model %s, %s; %s voters, up to %s tokens'):format(
        root,
        settings.model,
        loaded,
        tostring(settings.voters),
        tostring(settings.max_tokens)
      )
    )
  end
  local index = folder.index
  if type(index) ~= 'table' then
    return
  end
  local updated = tonumber(index.updated_at)
  local when = updated and (', updated %s'):format(os.date('%Y-%m-%d %H:%M:%S', math.floor(updated))) or ''
  health.ok(
    ('Index: %d files, %d chunks, %d symbols%s'):format(index.files or 0, index.chunks or 0, index.symbols or 0, when)
  )
  if text(index.sync_error) then
    health.warn(('The last index sync failed: %s'):format(index.sync_error), { 'Fix the cause, then :SwarmReindex.' })
  end
  if (tonumber(index.skipped_files) or 0) > 0 then
    health.info(('%d files left out of the index (`swarm-lsp index --status` lists them).'):format(index.skipped_files))
  end
end

local function check_running()
  health.start('swarm-lsp: running server')
  local clients = vim.lsp.get_clients({ name = require('swarm_lsp').name })
  if #clients == 0 then
    health.info('Not running: it starts when you open a file of a configured filetype inside a project.')
    return
  end
  for _, client in ipairs(clients) do
    local params = { command = 'swarm.status', arguments = { vim.empty_dict() } }
    local response, err = client:request_sync('workspace/executeCommand', params, STATUS_TIMEOUT_MS)
    if not response or response.err then
      local why = err or (response and response.err and response.err.message) or 'no answer'
      health.warn(('swarm.status failed for client %d: %s'):format(client.id, why), { 'See :LspLog.' })
    else
      local status = response.result or {}
      health.ok(('Client %d: swarm-lsp %s running'):format(client.id, text(status.version) or '?'))
      for _, folder in ipairs(status.folders or {}) do
        check_folder(folder)
      end
      if type(status.running) == 'table' and #status.running > 0 then
        health.info('Running: ' .. table.concat(status.running, ', '))
      end
    end
  end
end

function M.check()
  check_neovim()
  check_command()
  check_running()
end

return M
