-- Source references as the server writes them (`pkg/util.py:10-14`, `README.md:3`,
-- `pkg/util.py (outline)`, relative to the workspace folder) and where they point. Pure: no editor
-- state, so it is tested on its own (tests/test_nvim_plugin.py).
local M = {}

---@class swarm_lsp.Source
---@field path string as written: relative to the workspace folder, or absolute
---@field line integer 1-based; 1 when the reference names no line
---@field end_line? integer
---@field label string the reference as written, without backticks

--- One reference; nil when `text` is not a file reference.
---@param text string
---@return swarm_lsp.Source?
function M.parse(text)
  local label = vim.trim(text):gsub('^`', ''):gsub('`$', '')
  if label == '' or label:match('^%a[%w+.-]*://') then
    return nil
  end
  local path, first, last = label:match('^(.-):(%d+)%-(%d+)$')
  if not path then
    path, first = label:match('^(.-):(%d+)$')
  end
  if path and path ~= '' then
    local line, end_line = tonumber(first), tonumber(last)
    if line < 1 or (end_line and end_line < line) then
      return nil
    end
    return { path = path, line = line, end_line = end_line, label = label }
  end
  path = label:match('^(.-) %([^()]+%)$') or label
  if path:find('%s') or not path:find('[./\\]') then
    return nil
  end
  return { path = path, line = 1, label = label }
end

--- The `path:line` references written in a line of text (plain or in backticks), each with the byte
--- columns it spans (1-based, inclusive), in order.
---@param text string
---@return {source: swarm_lsp.Source, first: integer, last: integer}[]
function M.references(text)
  local found = {}
  local function add(source, first, last)
    if source then
      table.insert(found, { source = source, first = first, last = last })
    end
  end
  -- `anything in backticks` that is a reference, `pkg/util.py (outline)` included.
  for first, inside, last in text:gmatch('()`([^`]+)`()') do
    add(M.parse(inside), first, last - 1)
  end
  local from = 1
  while true do
    local first, path_end, path = text:find('([%w_%.%-/\\]+):(%d+)', from)
    if not first then
      break
    end
    local last = path_end
    local range_end = text:match('^%-%d+', last + 1)
    if range_end then
      last = last + #range_end
    end
    local before, after = text:sub(first - 1, first - 1), text:sub(last + 1, last + 1)
    local inside_backticks = before == '`' and after == '`'
    if
      not inside_backticks
      and path:find('%.%w+$')
      and (before == '' or before:find('[%s(%[]'))
      and (after == '' or after:find('[%s),.;:%]]'))
    then
      add(M.parse(text:sub(first, last)), first, last)
    end
    from = last + 1
  end
  table.sort(found, function(a, b)
    return a.first < b.first
  end)
  return found
end

--- The reference a cursor at byte column `col` (0-based, as nvim_win_get_cursor gives it) points at
--- on `text`: the list item when it is one reference (`- pkg/util.py (outline)`, as the chat lists
--- sources), else the reference under the cursor, else the line's first.
---@param text string
---@param col? integer
---@return swarm_lsp.Source?
function M.at(text, col)
  local item = text:match('^%s*[-*+]%s+(.+)$')
  local whole = item and M.parse(item)
  if whole then
    return whole
  end
  local references = M.references(text)
  local cursor = (col or 0) + 1
  for _, reference in ipairs(references) do
    if reference.first <= cursor and cursor <= reference.last then
      return reference.source
    end
  end
  return references[1] and references[1].source
end

--- The absolute path of a reference inside `folder`; nil when it leaves the folder.
---@param folder string
---@param path string
---@return string?
function M.resolve(folder, path)
  folder = folder:gsub('[/\\]+$', '')
  if path:sub(1, 1) == '/' or path:match('^%a:[/\\]') then
    if not vim.startswith(path, folder .. '/') then
      return nil
    end
    path = path:sub(#folder + 2)
  end
  local parts = {}
  for part in path:gmatch('[^/\\]+') do
    if part == '..' then
      if #parts == 0 then
        return nil
      end
      table.remove(parts)
    elseif part ~= '.' then
      table.insert(parts, part)
    end
  end
  if #parts == 0 then
    return nil
  end
  return folder .. '/' .. table.concat(parts, '/')
end

return M
