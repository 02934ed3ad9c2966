--- What happened to each suggestion on screen, reported to the server as telemetry.
---
--- Both ghost-text engines (Neovim's built-in one and the plugin's own) tell the tracker when a suggestion
--- becomes visible and when it goes away; the tracker sends exactly one outcome per completion id:
--- `opportune/didShowCompletion` once, then either `opportune/didPartiallyAcceptCompletion` (word/line
--- accepts, possibly several), an accept (the item's `opportune.accept` command, run by the engine) or
--- `opportune/didRejectCompletion` with the reason. A suggestion the user typed through to its end gets no
--- report: the server infers that one from the edits.

local compat = require('opportune.compat')
local protocol = require('opportune.protocol')

local M = {}

---@class opportune.Item
---@field id string? Completion id (the argument of the item's `opportune.accept` command)
---@field client_id integer
---@field bufnr integer
---@field text string The item's insertText
---@field row integer 0-based row where `text` starts
---@field col integer 0-based byte column where `text` starts
---@field command lsp.Command?

---@type table<integer, opportune.Item?> Suggestion visible in each buffer
local current = {}

--- Fate of each completion id reported so far: "shown", "partial", "accepted" or "rejected". Bounded: the
--- oldest ids are forgotten, since an outcome arrives within seconds of the suggestion.
---@type table<string, string>
local fate = {}
---@type string[]
local order = {}
local MAX_REMEMBERED = 512

---@param client_id integer
---@param id string
---@return string
local function key(client_id, id)
  return client_id .. ':' .. id
end

---@param k string
---@param value string
local function remember(k, value)
  if fate[k] == nil then
    table.insert(order, k)
    if #order > MAX_REMEMBERED then
      fate[table.remove(order, 1)] = nil
    end
  end
  fate[k] = value
end

---@param item opportune.Item
---@param method string
---@param params table
local function notify(item, method, params)
  local client = vim.lsp.get_client_by_id(item.client_id)
  if client and not compat.is_stopped(client) then
    compat.notify(client, method, params)
  end
end

--- Turns an `InlineCompletionItem` into an `opportune.Item` anchored in the buffer: at the start of its
--- range when it has one, else at `anchor` (the cursor when it was requested).
---@param raw lsp.InlineCompletionItem
---@param client vim.lsp.Client
---@param bufnr integer
---@param anchor integer[] {row, col}, 0-based row and byte column
---@return opportune.Item
function M.item(raw, client, bufnr, anchor)
  local text = raw.insertText
  if type(text) == 'table' then
    -- A snippet (StringValue): shown and inserted as its plain text.
    text = text.value or ''
  end
  local row, col = anchor[1], anchor[2]
  if raw.range then
    row = raw.range.start.line
    local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
    col = compat.byte_col(line, raw.range.start.character, client.offset_encoding or 'utf-16')
  end
  local command = raw.command
  local id = nil
  if command and command.command == protocol.ACCEPT_COMMAND and command.arguments then
    id = command.arguments[1]
    if type(id) ~= 'string' then
      id = id ~= nil and tostring(id) or nil
    end
  end
  return {
    id = id,
    client_id = client.id,
    bufnr = bufnr,
    text = text,
    row = row,
    col = col,
    command = command,
  }
end

--- The part of the suggestion already in the buffer (from its anchor to the cursor), or nil when the cursor
--- is before the anchor or in another window.
---@param item opportune.Item
---@return string?
function M.typed(item)
  local win = vim.api.nvim_get_current_win()
  if vim.api.nvim_win_get_buf(win) ~= item.bufnr then
    return nil
  end
  local cursor = vim.api.nvim_win_get_cursor(win)
  local crow, ccol = cursor[1] - 1, cursor[2]
  if crow < item.row or (crow == item.row and ccol < item.col) then
    return nil
  end
  local ok, lines = pcall(vim.api.nvim_buf_get_text, item.bufnr, item.row, item.col, crow, ccol, {})
  if not ok then
    return nil
  end
  return table.concat(lines, '\n')
end

--- The part of the suggestion not yet in the buffer, or nil when what was typed since it was anchored
--- differs from it.
---@param item opportune.Item
---@return string?
function M.remaining(item)
  local typed = M.typed(item)
  if typed == nil or item.text:sub(1, #typed) ~= typed then
    return nil
  end
  return item.text:sub(#typed + 1)
end

---@param bufnr integer
---@return opportune.Item?
function M.current(bufnr)
  return current[bufnr]
end

---@param item opportune.Item
---@param reason opportune.RejectReason
local function reject(item, reason)
  if not item.id then
    return
  end
  local k = key(item.client_id, item.id)
  if fate[k] == 'shown' then
    remember(k, 'rejected')
    notify(item, protocol.methods.did_reject_completion, protocol.did_reject_completion_params(item.id, reason))
  end
end

--- `item` is now visible. A different suggestion visible before it in the buffer is reported superseded.
---@param item opportune.Item
function M.show(item)
  local previous = current[item.bufnr]
  if previous and (previous.id ~= item.id or previous.client_id ~= item.client_id) then
    reject(previous, 'superseded')
  end
  current[item.bufnr] = item
  if item.id then
    local k = key(item.client_id, item.id)
    if fate[k] == nil then
      remember(k, 'shown')
      notify(item, protocol.methods.did_show_completion, protocol.did_show_completion_params(item.id))
    end
  end
end

--- The suggestion in `bufnr` is gone from the screen for `reason`.
---@param bufnr integer
---@param reason opportune.RejectReason
function M.clear(bufnr, reason)
  local item = current[bufnr]
  current[bufnr] = nil
  if item then
    reject(item, reason)
  end
end

--- Stops tracking the suggestion in `bufnr` without reporting anything (accepted, or typed through).
---@param bufnr integer
function M.forget(bufnr)
  current[bufnr] = nil
end

--- The completion was accepted whole; the accept command reports it to the server.
---@param client_id integer
---@param id string
function M.accepted(client_id, id)
  remember(key(client_id, id), 'accepted')
  for bufnr, item in pairs(current) do
    if item.id == id and item.client_id == client_id then
      current[bufnr] = nil
    end
  end
end

--- The first `accepted_length` characters of the item's insertText are now in the buffer after a word or
--- line accept.
---@param item opportune.Item
---@param accepted_length integer
function M.partial(item, accepted_length)
  if not item.id then
    return
  end
  remember(key(item.client_id, item.id), 'partial')
  notify(
    item,
    protocol.methods.did_partially_accept_completion,
    protocol.did_partially_accept_completion_params(item.id, accepted_length)
  )
end

--- Fate of a completion id as reported so far (for :Opportune status and tests).
---@param client_id integer
---@param id string
---@return string?
function M.fate(client_id, id)
  return fate[key(client_id, id)]
end

--- Next piece of `rest` for a word accept (leading whitespace and one word or run of punctuation) or a line
--- accept (to the end of the line; a leading line break and the whole next line).
---@param rest string
---@param kind "word"|"line"
---@return string
function M.chunk(rest, kind)
  if kind == 'line' then
    local body = rest:match('^\n[^\n]*') or rest:match('^[^\n]*')
    return body ~= '' and body or rest
  end
  local word = rest:match('^%s*[%w_]+') or rest:match('^%s*[^%w_%s]+') or rest
  return word
end

--- Inserts `text` at the cursor of the current window and puts the cursor after it.
---@param text string
function M.insert_at_cursor(text)
  local win = vim.api.nvim_get_current_win()
  local bufnr = vim.api.nvim_win_get_buf(win)
  local cursor = vim.api.nvim_win_get_cursor(win)
  local row, col = cursor[1] - 1, cursor[2]
  local lines = vim.split(text, '\n', { plain = true })
  vim.api.nvim_buf_set_text(bufnr, row, col, row, col, lines)
  local last = lines[#lines]
  vim.api.nvim_win_set_cursor(win, { row + #lines, (#lines == 1 and col or 0) + #last })
end

return M
