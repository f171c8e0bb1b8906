-- What the status line says: the server's work-done progress (indexing, swarm requests) folded into
-- one short string. Pure: init.lua feeds it the LspProgress events of swarm-lsp's clients.
local M = {}

local INDEXING = '^swarm%-lsp: indexing '

---@class swarm_lsp.Job
---@field title string
---@field message string
---@field percentage? integer
---@field order integer

---@class swarm_lsp.Activity
---@field jobs table<string, swarm_lsp.Job> by client id and progress token
---@field started integer
local Activity = {}
Activity.__index = Activity

---@return swarm_lsp.Activity
function M.new()
  return setmetatable({ jobs = {}, started = 0 }, Activity)
end

--- A progress token's key: progress tokens are per client.
---@param client_id integer
---@param token integer|string
function M.key(client_id, token)
  return ('%d:%s'):format(client_id, tostring(token))
end

--- One `$/progress` value (begin, report or end) of the job `key`.
---@param key string
---@param value {kind: string, title?: string, message?: string, percentage?: integer}
function Activity:apply(key, value)
  if value.kind == 'begin' then
    self.started = self.started + 1
    self.jobs[key] = {
      title = value.title or '',
      message = value.message or '',
      percentage = value.percentage,
      order = self.started,
    }
    return
  end
  local job = self.jobs[key]
  if not job then
    return
  end
  if value.kind == 'report' then
    job.message = value.message or job.message
    job.percentage = value.percentage or job.percentage
  elseif value.kind == 'end' then
    self.jobs[key] = nil
  end
end

--- Forget the jobs of clients that `gone` says have stopped (no end will come for them).
---@param gone fun(client_id: integer): boolean
function Activity:forget(gone)
  for key in pairs(self.jobs) do
    if gone(tonumber(key:match('^(%d+):'))) then
      self.jobs[key] = nil
    end
  end
end

--- What the voters are doing, not their text: "2 voters writing, 57 tokens: def f(..." -> "2 voters
--- writing".
---@param message string
function M.shorten(message)
  local head = vim.trim(message:match('^[^:,]*') or '')
  return #head > 40 and head:sub(1, 39) .. '…' or head
end

--- "swarm-lsp: indexing 40%", "swarm-lsp: 2 voters writing", both joined by ", ", or "" when idle.
function Activity:text()
  local jobs = vim.tbl_values(self.jobs)
  table.sort(jobs, function(a, b)
    return a.order < b.order
  end)
  local indexing, requests = nil, {}
  for _, job in ipairs(jobs) do
    if not indexing and job.title:find(INDEXING) then
      indexing = job
    else
      table.insert(requests, job)
    end
  end
  local parts = {}
  if indexing then
    table.insert(parts, indexing.percentage and ('indexing %d%%'):format(indexing.percentage) or 'indexing')
  end
  if #requests == 1 then
    local job = requests[1]
    local what = job.message ~= '' and M.shorten(job.message) or job.title:gsub('^swarm%-lsp: ', '')
    table.insert(parts, what)
  elseif #requests > 1 then
    table.insert(parts, ('%d requests'):format(#requests))
  end
  return #parts > 0 and 'swarm-lsp: ' .. table.concat(parts, ', ') or ''
end

return M
