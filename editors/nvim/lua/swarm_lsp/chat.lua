-- The chat buffer (swarm-lsp://chat, markdown, in a split): one conversation with swarm-lsp, turn by
-- turn. A turn's answer streams in from `swarm/chatChunk` (each chunk is the answer so far, so it
-- replaces the pending answer's lines), then the result replaces it with the voted answer, its
-- agreement and its sources. One answer is written at a time; <C-c> in the buffer or :SwarmStop
-- cancels it with `$/cancelRequest`.
local M = {}

local STOPPED = 'Stopped: the answer was cancelled.'

local buffer ---@type integer?
local conversation ---@type string?
local last_client ---@type vim.lsp.Client?

---@class swarm_lsp.Turn
---@field client vim.lsp.Client
---@field id? integer the request's id
---@field row integer where the answer starts (0-based); the answer runs to the end of the buffer
---@field on_done fun(result: table)

local pending ---@type swarm_lsp.Turn?

local function valid_buffer()
  return buffer and vim.api.nvim_buf_is_valid(buffer) and buffer or nil
end

--- Replace lines `first` (0-based) to the end with `lines`; the buffer is read-only otherwise, so a
--- pending answer's row stays where it was.
local function write(first, lines)
  local buf = valid_buffer()
  if not buf then
    return
  end
  local following = {}
  for _, win in ipairs(vim.api.nvim_list_wins()) do
    if vim.api.nvim_win_get_buf(win) == buf then
      local at_end = vim.api.nvim_win_get_cursor(win)[1] >= vim.api.nvim_buf_line_count(buf)
      if at_end or win ~= vim.api.nvim_get_current_win() then
        table.insert(following, win)
      end
    end
  end
  vim.bo[buf].modifiable = true
  vim.api.nvim_buf_set_lines(buf, first, -1, false, lines)
  vim.bo[buf].modifiable = false
  local last = vim.api.nvim_buf_line_count(buf)
  for _, win in ipairs(following) do
    vim.api.nvim_win_set_cursor(win, { last, 0 })
  end
end

local function split_lines(text)
  return vim.split(vim.trim(text or ''), '\n', { plain = true })
end

local function open_buffer()
  local buf = valid_buffer()
  if buf then
    return buf
  end
  buf = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_buf_set_name(buf, 'swarm-lsp://chat')
  vim.bo[buf].filetype = 'markdown'
  vim.bo[buf].modifiable = false
  require('swarm_lsp').map_sources(buf)
  vim.keymap.set('n', '<C-c>', M.stop, { buffer = buf, desc = 'swarm-lsp: stop the answer being written' })
  buffer = buf
  return buf
end

--- The chat buffer's window in this tab page, opened as a split on the right (without leaving the
--- current window) when there is none.
local function show(buf)
  for _, win in ipairs(vim.api.nvim_tabpage_list_wins(0)) do
    if vim.api.nvim_win_get_buf(win) == buf then
      return win
    end
  end
  local win = vim.api.nvim_open_win(buf, false, { split = 'right', win = -1 })
  vim.wo[win].wrap = true
  vim.wo[win].linebreak = true
  return win
end

--- "agreement 0.81 (majority, 2/2 voters)" or "LOW AGREEMENT 0.33: treat this answer with care (...)".
local function verdict(result)
  local agreement = tonumber(result.agreement) or 0
  local line = result.low_agreement == true
      and ('LOW AGREEMENT %.2f: treat this answer with care'):format(agreement)
    or ('agreement %.2f'):format(agreement)
  if type(result.strategy) == 'string' and tonumber(result.voters) then
    local finished = tonumber(result.finished_voters) or result.voters
    line = ('%s (%s, %d/%d voters)'):format(line, result.strategy, finished, result.voters)
  end
  return line
end

local function answer_lines(result)
  local lines = split_lines(type(result.answer) == 'string' and result.answer or '')
  if #lines == 1 and lines[1] == '' then
    lines = { '_(no answer)_' }
  end
  vim.list_extend(lines, { '', verdict(result) })
  local seen = {}
  for _, source in ipairs(type(result.sources) == 'table' and result.sources or {}) do
    if type(source) == 'string' and not seen[source] then
      if vim.tbl_isempty(seen) then
        vim.list_extend(lines, { '', 'Sources:' })
      end
      seen[source] = true
      table.insert(lines, '- ' .. source)
    end
  end
  if type(result.notes) == 'table' and #result.notes > 0 then
    vim.list_extend(lines, { '', 'Notes: ' .. table.concat(result.notes, '; ') })
  end
  return lines
end

local function finish(turn, err, result)
  if pending ~= turn then
    return -- stopped, or a new conversation began: the answer is not wanted any more
  end
  pending = nil
  if err then
    write(turn.row, { 'Error: ' .. (err.message or tostring(err)) })
    vim.notify('swarm-lsp: ' .. (err.message or tostring(err)), vim.log.levels.ERROR)
    turn.on_done({ command = 'swarm.chat', error = err.message })
    return
  end
  result = type(result) == 'table' and result or {}
  if type(result.conversationId) == 'string' then
    conversation = result.conversationId
  end
  write(turn.row, answer_lines(result))
  result.command = 'swarm.chat'
  turn.on_done(result)
end

--- Whether an answer is being written.
function M.busy()
  return pending ~= nil and not pending.client:is_stopped()
end

--- Send `argument` (message, uri, range) as the next turn of the conversation with `client`;
--- `on_done` gets the result (with `command`) or `{command, error}`.
---@param client vim.lsp.Client
---@param argument table
---@param on_done fun(result: table)
---@param bufnr? integer
---@return boolean sent
function M.send(client, argument, on_done, bufnr)
  if M.busy() then
    vim.notify('swarm-lsp: an answer is still being written (:SwarmStop stops it)', vim.log.levels.WARN)
    return false
  end
  last_client = client
  local buf = open_buffer()
  show(buf)
  local count = vim.api.nvim_buf_line_count(buf)
  local empty = count == 1 and vim.api.nvim_buf_get_lines(buf, 0, 1, false)[1] == ''
  local lines = empty and {} or { '' }
  vim.list_extend(lines, { '## You', '' })
  vim.list_extend(lines, split_lines(argument.message))
  vim.list_extend(lines, { '', '## swarm-lsp', '' })
  local first = empty and 0 or count
  local turn = { client = client, row = first + #lines, on_done = on_done }
  table.insert(lines, '_writing…_')
  write(first, lines)
  argument = vim.tbl_extend('force', argument, { conversationId = conversation })
  local params = { command = 'swarm.chat', arguments = { argument } }
  pending = turn
  local ok, id = client:request('workspace/executeCommand', params, function(err, result)
    finish(turn, err, result)
  end, bufnr)
  if not ok then
    pending = nil
    write(turn.row, { 'Error: the request could not be sent (is swarm-lsp running?)' })
    return false
  end
  turn.id = id
  return true
end

--- A `swarm/chatChunk` notification: the answer so far replaces the pending answer's lines. Fires
--- `User SwarmLspChatChunk` (data: the notification's params) once the buffer shows it.
function M.chunk(params)
  local turn = pending
  if not turn or params.kind ~= 'chat' or type(params.text) ~= 'string' then
    return
  end
  if conversation and params.conversationId ~= conversation then
    return
  end
  write(turn.row, split_lines(params.text))
  vim.api.nvim_exec_autocmds('User', { pattern = 'SwarmLspChatChunk', data = params })
end

--- Mark the pending answer stopped (what was written so far stays) and say so.
local function stopped(turn)
  pending = nil
  local buf = valid_buffer()
  local shown = buf and vim.api.nvim_buf_get_lines(buf, turn.row, -1, false) or {}
  if #shown == 1 and shown[1] == '_writing…_' then
    shown = {}
  end
  vim.list_extend(shown, #shown > 0 and { '', STOPPED } or { STOPPED })
  write(turn.row, shown)
  turn.on_done({ command = 'swarm.chat', cancelled = true })
end

--- Cancel the answer being written ($/cancelRequest; the server stops within one token step and
--- answers RequestCancelled, which Neovim does not pass on).
---@return boolean stopped whether an answer was being written
function M.stop()
  local turn = pending
  if not turn then
    return false
  end
  if turn.id then
    turn.client:cancel_request(turn.id)
  end
  stopped(turn)
  return true
end

--- The server answered request `id` of `client_id` (the LspRequest event, just before the request's
--- handler runs, which Neovim skips for RequestCancelled): when the handler did not take the pending
--- turn, the server cancelled it (a settings change in its folder, say).
function M.completed(client_id, id)
  local turn = pending
  if turn and turn.id == id and turn.client.id == client_id then
    vim.schedule(function()
      if pending == turn then
        stopped(turn)
      end
    end)
  end
end

--- Forget the conversation (the next message starts a new one) and empty the buffer.
function M.new()
  M.stop()
  conversation = nil
  write(0, {})
end

--- The chat buffer, or nil when there is none.
function M.buffer()
  return valid_buffer()
end

--- The conversation's id (nil until the first answer) and the client of its last turn.
---@return string?, vim.lsp.Client?
function M.conversation()
  return conversation, last_client
end

return M
