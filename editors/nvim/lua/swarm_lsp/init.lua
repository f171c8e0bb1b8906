-- swarm-lsp for Neovim 0.11+: the language server configured with vim.lsp.config / vim.lsp.enable,
-- plus what a generic client cannot do: prompting for a refactor instruction or a question, a chat
-- buffer that streams answers (the `swarm/chatChunk` notification, see docs/lsp.md) and can be
-- stopped, sources that open at their line, progress for the status line, and :checkhealth.
--
--   require('swarm_lsp').setup({ cmd = { 'swarm-lsp', 'serve' } })
--
-- Commands:
--   :SwarmChat {message}    the next turn of the conversation, streamed into the swarm-lsp://chat
--                           buffer (a split); <C-c> there stops the answer
--   :SwarmChatNew           start a new conversation (stops an answer being written)
--   :SwarmStop              cancel the chat answer being written, else the plugin's running requests
--   :SwarmExplain, :SwarmRefactor {instruction}, :SwarmAsk {question},
--   :SwarmExplainCodebase [question], :SwarmRefactorCodebase {instruction}, :SwarmReindex,
--   :SwarmStatus            as the server's commands of the same names
--   :checkhealth swarm_lsp  the server command and its version, Neovim's version, the model, the index
-- In the chat buffer and in the answer documents the server shows, <CR> and gd on a source
-- (`pkg/util.py:10-14`, `README.md:3`, `pkg/util.py (outline)`) open that file at its line.
-- require('swarm_lsp').status() is "swarm-lsp: indexing 40%", "swarm-lsp: 2 voters writing" or ""
-- (idle), kept up to date from LspProgress (the status line is redrawn when it changes):
--   vim.o.statusline = "%f %m%=%{v:lua.require'swarm_lsp'.status()} %l:%c"
--   lualine: sections = { lualine_x = { function() return require('swarm_lsp').status() end } }
-- Each finished command fires `User SwarmLspResult` with the result as `data` (a stopped chat answer:
-- `{command = 'swarm.chat', cancelled = true}`); each streamed chat chunk, once shown, fires
-- `User SwarmLspChatChunk` with the notification's params.
local activity = require('swarm_lsp.activity')
local chat = require('swarm_lsp.chat')
local sources = require('swarm_lsp.sources')

local M = {}

local NAME = 'swarm_lsp'
M.name = NAME

local progress = activity.new()
local shown_status = ''
--- The plugin's running requests other than the chat's, for :SwarmStop: key -> {client, id}.
local running = {} ---@type table<string, {client: vim.lsp.Client, id: integer, command: string}>

local function client_for(bufnr)
  return vim.lsp.get_clients({ bufnr = bufnr or 0, name = NAME })[1]
    or vim.lsp.get_clients({ name = NAME })[1]
end

local function announce(result)
  vim.api.nvim_exec_autocmds('User', { pattern = 'SwarmLspResult', data = result })
end

--- Send workspace/executeCommand directly (not through client:exec_cmd, which would find the
--- client-side command below again).
local function execute(client, command, argument, bufnr)
  local key
  local ok, id = client:request(
    'workspace/executeCommand',
    { command = command, arguments = { argument } },
    function(err, result)
      if key then
        running[key] = nil
      end
      if err then
        vim.notify(('swarm-lsp: %s'):format(err.message), vim.log.levels.ERROR)
        announce({ command = command, error = err.message })
        return
      end
      if type(result) == 'table' then
        result.command = command
      end
      announce(result)
    end,
    bufnr
  )
  if ok and id then
    key = ('%d:%d'):format(client.id, id)
    running[key] = { client = client, id = id, command = command }
  end
end

--- A code action's command that needs the user's words first: ask, then run it on the server.
local function prompting(field, prompt)
  return function(command, ctx)
    local client = vim.lsp.get_client_by_id(ctx.client_id)
    local argument = vim.deepcopy((command.arguments or {})[1] or {})
    vim.ui.input({ prompt = prompt }, function(input)
      if not input or input == '' then
        return
      end
      argument[field] = input
      execute(client, command.command, argument, ctx.bufnr)
    end)
  end
end

-- ------------------------------------------------------------------------------- source links

--- The chat buffer and the answer documents: buffers whose sources <CR> opens.
local function is_result_buffer(buf)
  return vim.b[buf].swarm_lsp_result == true
end

--- The workspace folders to resolve sources against: the chat's client's first, then every
--- swarm-lsp client's.
local function folders()
  local found, seen = {}, {}
  local _, chat_client = chat.conversation()
  local clients = vim.lsp.get_clients({ name = NAME })
  if chat_client and vim.api.nvim_get_current_buf() == chat.buffer() then
    table.insert(clients, 1, chat_client)
  end
  for _, client in ipairs(clients) do
    local roots = vim.tbl_map(function(folder)
      return vim.uri_to_fname(folder.uri)
    end, client.workspace_folders or {})
    table.insert(roots, client.root_dir)
    for _, root in ipairs(roots) do
      if root and not seen[root] then
        seen[root] = true
        table.insert(found, root)
      end
    end
  end
  return found
end

--- Where a source opens: the previous window or another window holding code, else the current
--- window (an answer document), else a new split beside the chat.
local function window_for_source()
  local current = vim.api.nvim_get_current_win()
  local function holds_code(win)
    local buf = vim.api.nvim_win_get_buf(win)
    return win ~= current
      and vim.api.nvim_win_get_config(win).relative == ''
      and vim.bo[buf].buftype == ''
      and not is_result_buffer(buf)
  end
  local previous = vim.fn.win_getid(vim.fn.winnr('#'))
  if previous ~= 0 and holds_code(previous) then
    return previous
  end
  for _, win in ipairs(vim.api.nvim_tabpage_list_wins(0)) do
    if holds_code(win) then
      return win
    end
  end
  if vim.bo.buftype == '' then
    return current
  end
  return vim.api.nvim_open_win(0, false, { split = 'left', win = current })
end

--- Open the source on the cursor's line (`pkg/util.py:10-14`, `README.md:3`, `pkg/util.py
--- (outline)`) at its line, in the workspace folder that holds it; a path leaving the folder is
--- refused. Returns 'opened', 'none' (no source there) or 'missing' (not a file of the workspace).
---@return 'opened'|'none'|'missing'
function M.open_source()
  local col = vim.api.nvim_win_get_cursor(0)[2]
  local source = sources.at(vim.api.nvim_get_current_line(), col)
  if not source then
    return 'none'
  end
  for _, folder in ipairs(folders()) do
    local path = sources.resolve(folder, source.path)
    local stat = path and vim.uv.fs_stat(path)
    if stat and stat.type == 'file' then
      vim.api.nvim_set_current_win(window_for_source())
      vim.cmd.edit(vim.fn.fnameescape(path))
      local line = math.min(source.line, vim.api.nvim_buf_line_count(0))
      vim.api.nvim_win_set_cursor(0, { line, 0 })
      vim.cmd('normal! zz')
      return 'opened'
    end
  end
  vim.notify(('swarm-lsp: %s is not a file in this workspace'):format(source.label), vim.log.levels.WARN)
  return 'missing'
end

--- <CR> and gd on a source in `buf` open it (<CR> elsewhere moves down as usual).
---@param buf integer
function M.map_sources(buf)
  vim.b[buf].swarm_lsp_result = true
  vim.keymap.set('n', '<CR>', function()
    if M.open_source() == 'none' then
      vim.cmd('normal! ' .. vim.keycode('<CR>'))
    end
  end, { buffer = buf, desc = 'swarm-lsp: open the source on this line' })
  vim.keymap.set('n', 'gd', function()
    if M.open_source() == 'none' then
      vim.notify('swarm-lsp: no source (path:line) on this line', vim.log.levels.INFO)
    end
  end, { buffer = buf, desc = 'swarm-lsp: open the source on this line' })
end

--- window/showDocument: a chat's answer document is already in the chat buffer; other answer
--- documents open as usual, with their sources linked.
local function show_document(err, params, ctx)
  local path = vim.startswith(params.uri, 'file:') and vim.uri_to_fname(params.uri) or ''
  local answer = path:find('/answers/[^/]+%.md$') ~= nil
  if answer and vim.fs.basename(path):find('^chat%-') and chat.buffer() then
    return { success = true }
  end
  local shown = vim.lsp.handlers['window/showDocument'](err, params, ctx)
  local buf = answer and vim.fn.bufnr(path) or -1
  if buf > 0 then
    M.map_sources(buf)
  end
  return shown
end

-- ------------------------------------------------------------------- status line, ended requests

--- What swarm-lsp is doing, for the status line: "swarm-lsp: indexing 40%", "swarm-lsp: 2 voters
--- writing" (both, joined by ", "), or "" when idle.
---@return string
function M.status()
  progress:forget(function(client_id)
    local client = vim.lsp.get_client_by_id(client_id)
    return not client or client:is_stopped()
  end)
  return progress:text()
end

--- Progress of swarm-lsp's clients feeds status(); a chat request that ends without its handler
--- running was cancelled (Neovim keeps RequestCancelled from handlers).
local function follow_requests()
  local group = vim.api.nvim_create_augroup('swarm_lsp_requests', { clear = true })
  vim.api.nvim_create_autocmd('LspRequest', {
    group = group,
    callback = function(event)
      if event.data.request.type == 'complete' then
        chat.completed(event.data.client_id, event.data.request_id)
      end
    end,
  })
  vim.api.nvim_create_autocmd('LspProgress', {
    group = group,
    callback = function(event)
      local client = vim.lsp.get_client_by_id(event.data.client_id)
      local params = event.data.params
      if not client or client.name ~= NAME or type(params.value) ~= 'table' then
        return
      end
      progress:apply(activity.key(client.id, params.token), params.value)
      local now = M.status()
      if now ~= shown_status then
        shown_status = now
        vim.cmd.redrawstatus()
      end
    end,
  })
end

-- ------------------------------------------------------------------------------- commands

local function selection_argument(opts)
  local argument = { uri = vim.uri_from_bufnr(0) }
  if opts.range and opts.range > 0 then
    local last = vim.api.nvim_buf_get_lines(0, opts.line2 - 1, opts.line2, false)[1] or ''
    argument.range = {
      start = { line = opts.line1 - 1, character = 0 },
      ['end'] = { line = opts.line2 - 1, character = #last },
    }
  end
  return argument
end

--- The file the chat is about: the current buffer, or from the chat buffer the previous window's.
local function file_buffer()
  for _, buf in ipairs({ 0, vim.fn.winbufnr(vim.fn.winnr('#')) }) do
    if buf >= 0 and vim.bo[buf].buftype == '' and vim.api.nvim_buf_get_name(buf) ~= '' then
      return buf == 0 and vim.api.nvim_get_current_buf() or buf
    end
  end
end

--- :SwarmStop: the chat answer being written, else the plugin's other running requests.
local function stop()
  if chat.stop() then
    return
  end
  local cancelled = 0
  for key, request in pairs(running) do
    running[key] = nil
    if request.client.requests[request.id] then -- still waiting for its answer
      request.client:cancel_request(request.id)
      announce({ command = request.command, cancelled = true })
      cancelled = cancelled + 1
    end
  end
  if cancelled == 0 then
    vim.notify('swarm-lsp: nothing is running', vim.log.levels.INFO)
  end
end

local function user_commands()
  local function run(command, argument)
    local client = client_for(0)
    if not client then
      vim.notify('swarm-lsp is not running for this buffer', vim.log.levels.WARN)
      return
    end
    execute(client, command, argument, 0)
  end
  vim.api.nvim_create_user_command('SwarmExplain', function(opts)
    run('swarm.explain', selection_argument(opts))
  end, { range = true, desc = 'swarm-lsp: explain the selection (or the file)' })
  vim.api.nvim_create_user_command('SwarmRefactor', function(opts)
    local argument = selection_argument(opts)
    argument.instruction = opts.args
    run('swarm.refactor', argument)
  end, { range = true, nargs = '+', desc = 'swarm-lsp: refactor the selection as instructed' })
  vim.api.nvim_create_user_command('SwarmAsk', function(opts)
    run('swarm.ask', { question = opts.args, uri = vim.uri_from_bufnr(0) })
  end, { nargs = '+', desc = 'swarm-lsp: ask about the codebase' })
  vim.api.nvim_create_user_command('SwarmChat', function(opts)
    local buf = file_buffer()
    local client = client_for(buf)
    if not client then
      vim.notify('swarm-lsp is not running (open a file of the project first)', vim.log.levels.WARN)
      return
    end
    local argument = { message = opts.args, uri = buf and vim.uri_from_bufnr(buf) or nil }
    chat.send(client, argument, announce, buf)
  end, { nargs = '+', desc = 'swarm-lsp: chat (the conversation goes on until :SwarmChatNew)' })
  vim.api.nvim_create_user_command('SwarmChatNew', chat.new, { desc = 'swarm-lsp: start a new conversation' })
  vim.api.nvim_create_user_command('SwarmStop', stop, { desc = 'swarm-lsp: stop the answer being written' })
  vim.api.nvim_create_user_command('SwarmExplainCodebase', function(opts)
    run('swarm.explainCodebase', { question = opts.args ~= '' and opts.args or nil })
  end, { nargs = '*', desc = 'swarm-lsp: explain the codebase' })
  vim.api.nvim_create_user_command('SwarmRefactorCodebase', function(opts)
    run('swarm.refactorCodebase', { instruction = opts.args })
  end, { nargs = '+', desc = 'swarm-lsp: one instruction across the codebase' })
  vim.api.nvim_create_user_command('SwarmReindex', function()
    run('swarm.reindex', {})
  end, { desc = 'swarm-lsp: reindex the workspace' })
  vim.api.nvim_create_user_command('SwarmStatus', function()
    run('swarm.status', {})
  end, { desc = 'swarm-lsp: index, settings and running requests' })
end

--- Ghost text from the server (textDocument/inlineCompletion) in the buffers it attaches to, on
--- Neovim 0.12+ (vim.lsp.inline_completion). Accept with `vim.lsp.inline_completion.get()`, mapped
--- to <Tab> in insert mode unless `inline_completion_key` says otherwise (false: no mapping).
local function enable_inline_completion(key)
  if not (vim.lsp.inline_completion and vim.lsp.inline_completion.enable) then
    return
  end
  vim.api.nvim_create_autocmd('LspAttach', {
    group = vim.api.nvim_create_augroup('swarm_lsp_inline', { clear = true }),
    callback = function(event)
      local client = vim.lsp.get_client_by_id(event.data.client_id)
      if not client or client.name ~= NAME then
        return
      end
      vim.lsp.inline_completion.enable(true, { bufnr = event.buf })
      if key then
        vim.keymap.set('i', key, function()
          if not vim.lsp.inline_completion.get() then
            return key
          end
        end, { buffer = event.buf, expr = true, desc = 'swarm-lsp: accept the inline completion' })
      end
    end,
  })
end

--- Configure and enable the server. `opts` is merged into the vim.lsp.config of 'swarm_lsp', except
--- `inline_completion` (default true: ghost text on Neovim 0.12+) and `inline_completion_key`
--- (default '<Tab>'; false maps nothing).
---@param opts? vim.lsp.Config|{inline_completion?: boolean, inline_completion_key?: string|false}
function M.setup(opts)
  opts = opts or {}
  local inline, key = opts.inline_completion, opts.inline_completion_key
  opts.inline_completion, opts.inline_completion_key = nil, nil
  if inline ~= false then
    enable_inline_completion(key == nil and '<Tab>' or key)
  end
  opts.handlers = vim.tbl_extend('keep', opts.handlers or {}, {
    ['swarm/chatChunk'] = function(_, params)
      chat.chunk(params)
    end,
    ['window/showDocument'] = show_document,
  })
  vim.lsp.config(NAME, opts)
  vim.lsp.commands['swarm.refactor'] = prompting('instruction', 'Refactor: ')
  vim.lsp.commands['swarm.ask'] = prompting('question', 'Ask: ')
  user_commands()
  follow_requests()
  vim.lsp.enable(NAME)
end

return M
