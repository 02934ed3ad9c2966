--- The plugin's own ghost text, for Neovim 0.10/0.11 (or `engine = "plugin"`).
---
--- In insert mode, after `debounce` ms without a keystroke, it requests `textDocument/inlineCompletion`
--- (cancelling the previous request) and draws the first item as an inline virtual text on the cursor line
--- plus virtual lines below. While the user types characters of the suggestion it stays on screen, shrinking
--- (typeahead); anything else hides it and is reported to the tracker.

local compat = require('opportune.compat')
local tracker = require('opportune.tracker')

local M = {}

M.name = 'plugin'

local METHOD = 'textDocument/inlineCompletion'
local ns = vim.api.nvim_create_namespace('opportune.ghost')

---@class (private) opportune.ghost.BufState
---@field client_id integer
---@field timer uv.uv_timer_t?
---@field request_id integer? In-flight request
---@field seq integer Number of the latest request
---@field tick integer changedtick last handled
---@field cursor integer[] Cursor last handled
---@field enabled boolean

---@type table<integer, opportune.ghost.BufState>
local buffers = {}

---@param bufnr integer
local function hide(bufnr)
  if vim.api.nvim_buf_is_valid(bufnr) then
    vim.api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
  end
end

--- Draws `rest` at the cursor.
---@param bufnr integer
---@param rest string
local function draw(bufnr, rest)
  hide(bufnr)
  local cursor = vim.api.nvim_win_get_cursor(0)
  local lines = vim.split(rest, '\n', { plain = true })
  local virt_lines = {}
  for i = 2, #lines do
    table.insert(virt_lines, { { lines[i], 'OpportuneGhost' } })
  end
  local opts = { hl_mode = 'combine', virt_lines = #virt_lines > 0 and virt_lines or nil }
  if lines[1] ~= '' then
    opts.virt_text = { { lines[1], 'OpportuneGhost' } }
    opts.virt_text_pos = 'inline'
  end
  vim.api.nvim_buf_set_extmark(bufnr, ns, cursor[1] - 1, cursor[2], opts)
end

---@param bufnr integer
---@return boolean
local function active(bufnr)
  return vim.api.nvim_get_current_buf() == bufnr and vim.api.nvim_get_mode().mode:sub(1, 1) == 'i'
end

---@param st opportune.ghost.BufState
local function stop_timer(st)
  if st.timer then
    st.timer:stop()
    if not st.timer:is_closing() then
      st.timer:close()
    end
    st.timer = nil
  end
end

---@param st opportune.ghost.BufState
local function cancel(st)
  stop_timer(st)
  if st.request_id then
    local client = vim.lsp.get_client_by_id(st.client_id)
    if client then
      compat.cancel_request(client, st.request_id)
    end
    st.request_id = nil
  end
end

---@param bufnr integer
---@param item opportune.Item
local function on_item(bufnr, item)
  if not active(bufnr) then
    return
  end
  local rest = tracker.remaining(item)
  if rest == nil or rest == '' then
    return -- stale: the user has typed something else since the request
  end
  tracker.show(item)
  draw(bufnr, rest)
end

---@param bufnr integer
local function request(bufnr)
  local st = buffers[bufnr]
  if not st or not st.enabled or not active(bufnr) then
    return
  end
  local client = vim.lsp.get_client_by_id(st.client_id)
  if not client or compat.is_stopped(client) then
    return
  end
  cancel(st)
  local cursor = vim.api.nvim_win_get_cursor(0)
  local anchor = { cursor[1] - 1, cursor[2] }
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = 2 } -- Automatic
  st.seq = st.seq + 1
  local seq = st.seq
  local ok, id = compat.request(client, METHOD, params, function(err, result)
    if buffers[bufnr] ~= st then
      return
    end
    if st.seq == seq then
      st.request_id = nil
    end
    if err or result == nil then
      return
    end
    local items = result.items or result
    -- An empty answer leaves a suggestion that still matches on screen.
    if items[1] then
      on_item(bufnr, tracker.item(items[1], client, bufnr, anchor))
    end
  end, bufnr)
  if ok then
    st.request_id = id
  end
end

---@param bufnr integer
local function schedule(bufnr)
  local st = buffers[bufnr]
  if not st or not st.enabled then
    return
  end
  stop_timer(st)
  local delay = require('opportune.config').get().debounce
  st.timer = vim.defer_fn(function()
    st.timer = nil
    request(bufnr)
  end, delay)
end

--- A keystroke or cursor move in insert mode.
---@param bufnr integer
local function on_change(bufnr)
  local st = buffers[bufnr]
  if not st then
    return
  end
  local tick = vim.api.nvim_buf_get_changedtick(bufnr)
  local cursor = vim.api.nvim_win_get_cursor(0)
  local edited = tick ~= st.tick
  local moved = cursor[1] ~= st.cursor[1] or cursor[2] ~= st.cursor[2]
  if not edited and not moved then
    return -- the other of TextChangedI/CursorMovedI for the same keystroke
  end
  st.tick, st.cursor = tick, cursor
  local item = tracker.current(bufnr)
  if item then
    local rest = edited and tracker.remaining(item) or nil
    if rest == nil then
      hide(bufnr)
      tracker.clear(bufnr, edited and 'typed_over' or 'other')
    elseif rest == '' then
      hide(bufnr)
      tracker.forget(bufnr)
    else
      draw(bufnr, rest)
    end
  end
  schedule(bufnr)
end

---@param bufnr integer
---@return opportune.Item?
function M.visible(bufnr)
  local item = tracker.current(bufnr)
  if item and #vim.api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, {}) > 0 then
    return item
  end
  return nil
end

---@param bufnr integer
---@return boolean
function M.accept(bufnr)
  local item = M.visible(bufnr)
  local rest = item and tracker.remaining(item)
  if not item or not rest or rest == '' then
    return false
  end
  hide(bufnr)
  tracker.forget(bufnr)
  tracker.insert_at_cursor(rest)
  if item.command then
    require('opportune.lsp').run_accept(item.command, item.client_id, bufnr)
  end
  return true
end

---@param bufnr integer
---@param kind "word"|"line"
---@return boolean
function M.accept_partial(bufnr, kind)
  local item = M.visible(bufnr)
  local rest = item and tracker.remaining(item)
  if not item or not rest or rest == '' then
    return false
  end
  local chunk = tracker.chunk(rest, kind)
  if chunk == rest then
    return M.accept(bufnr)
  end
  local typed = tracker.typed(item) or ''
  tracker.insert_at_cursor(chunk)
  tracker.partial(item, compat.chars(typed .. chunk))
  -- Redraw the rest now rather than on the next autocommand.
  on_change(bufnr)
  return true
end

---@param bufnr integer
---@param reason? "dismissed"|"typed_over"|"superseded"|"other"
function M.dismiss(bufnr, reason)
  hide(bufnr)
  tracker.clear(bufnr, reason or 'dismissed')
  local st = buffers[bufnr]
  if st then
    cancel(st)
  end
end

---@param bufnr integer
---@param client vim.lsp.Client
function M.attach(bufnr, client)
  if buffers[bufnr] then
    cancel(buffers[bufnr])
  end
  buffers[bufnr] = {
    client_id = client.id,
    seq = 0,
    tick = vim.api.nvim_buf_get_changedtick(bufnr),
    cursor = { 0, 0 },
    enabled = require('opportune.state').enabled(),
  }
  local group = vim.api.nvim_create_augroup('opportune.ghost.' .. bufnr, { clear = true })
  vim.api.nvim_create_autocmd({ 'TextChangedI', 'CursorMovedI' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      on_change(bufnr)
    end,
  })
  vim.api.nvim_create_autocmd('InsertEnter', {
    group = group,
    buffer = bufnr,
    callback = function()
      local st = buffers[bufnr]
      if st then
        st.tick = vim.api.nvim_buf_get_changedtick(bufnr)
        st.cursor = vim.api.nvim_win_get_cursor(0)
      end
      schedule(bufnr)
    end,
  })
  vim.api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group,
    buffer = bufnr,
    callback = function(ev)
      M.dismiss(bufnr, ev.event == 'InsertLeave' and 'dismissed' or 'other')
    end,
  })
end

---@param bufnr integer
function M.detach(bufnr)
  local st = buffers[bufnr]
  if st then
    cancel(st)
  end
  hide(bufnr)
  tracker.clear(bufnr, 'other')
  buffers[bufnr] = nil
  pcall(vim.api.nvim_del_augroup_by_name, 'opportune.ghost.' .. bufnr)
end

---@param bufnr integer
---@param enabled boolean
function M.set_enabled(bufnr, enabled)
  local st = buffers[bufnr]
  if not st then
    return
  end
  st.enabled = enabled
  if not enabled then
    M.dismiss(bufnr, 'other')
  end
end

return M
