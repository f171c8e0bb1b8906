-- swarm-lsp for Neovim 0.11+: the language server configured with vim.lsp.config / vim.lsp.enable,
-- plus what a generic client cannot do: prompting for a refactor instruction or a question, and
-- showing chat answers as they stream (the `swarm/chatChunk` notification, see docs/lsp.md).
--
--   require('swarm_lsp').setup({ cmd = { 'swarm-lsp', 'serve' } })
--
-- Commands: :SwarmExplain, :SwarmRefactor {instruction}, :SwarmAsk {question}, :SwarmChat {message},
-- :SwarmExplainCodebase, :SwarmRefactorCodebase {instruction}, :SwarmReindex, :SwarmStatus.
-- Each finished command fires `User SwarmLspResult` with the result as `data`.
local M = {}

local NAME = 'swarm_lsp'
local conversation = nil ---@type string?
local chat_buffer = nil ---@type integer?

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
  client:request('workspace/executeCommand', { command = command, arguments = { argument } }, function(err, result)
    if err then
      vim.notify(('swarm-lsp: %s'):format(err.message), vim.log.levels.ERROR)
      announce({ command = command, error = err.message })
      return
    end
    if type(result) == 'table' then
      if result.conversationId and result.conversationId ~= vim.NIL then
        conversation = result.conversationId
      end
      result.command = command
    end
    announce(result)
  end, bufnr)
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

local function show_chunk(_, params)
  if params.kind ~= 'chat' then
    return
  end
  if not chat_buffer or not vim.api.nvim_buf_is_valid(chat_buffer) then
    chat_buffer = vim.api.nvim_create_buf(false, true)
    vim.bo[chat_buffer].filetype = 'markdown'
    vim.api.nvim_buf_set_name(chat_buffer, 'swarm-lsp://chat')
  end
  local lines = vim.split(params.text, '\n', { plain = true })
  vim.api.nvim_buf_set_lines(chat_buffer, 0, -1, false, lines)
end

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
    run('swarm.chat', { message = opts.args, conversationId = conversation, uri = vim.uri_from_bufnr(0) })
  end, { nargs = '+', desc = 'swarm-lsp: chat (the conversation goes on until :SwarmChatNew)' })
  vim.api.nvim_create_user_command('SwarmChatNew', function()
    conversation = nil
  end, { desc = 'swarm-lsp: start a new conversation' })
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
  opts.handlers = vim.tbl_extend('keep', opts.handlers or {}, { ['swarm/chatChunk'] = show_chunk })
  vim.lsp.config(NAME, opts)
  vim.lsp.commands['swarm.refactor'] = prompting('instruction', 'Refactor: ')
  vim.lsp.commands['swarm.ask'] = prompting('question', 'Ask: ')
  user_commands()
  vim.lsp.enable(NAME)
end

return M
