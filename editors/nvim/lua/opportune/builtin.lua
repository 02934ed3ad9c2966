--- Ghost text through Neovim's built-in `vim.lsp.inline_completion` (Neovim 0.12+).
---
--- The built-in module requests, draws and accepts suggestions, and runs `item.command` after a full
--- accept (reaching `opportune.lsp.run_accept` through the client's command table, so acceptance is
--- reported once). It has no hooks for "shown" or "rejected", so this module
---   * wraps the client's `request` to see each inlineCompletion response after the built-in handler has
---     drawn it, and checks the built-in's extmark namespace to know the suggestion is really visible;
---   * watches insert-mode edits to report suggestions typed over, and InsertLeave for dismissals;
---   * implements word/line accept and dismiss with `vim.lsp.inline_completion.get{ on_accept = … }`, the
---     public way to take the current item off the built-in's hands.

local compat = require('opportune.compat')
local tracker = require('opportune.tracker')

local M = {}

M.name = 'builtin'

local METHOD = 'textDocument/inlineCompletion'
local BUILTIN_NS = 'nvim.lsp.inline_completion'

---@return boolean
function M.available()
  local ok, ic = pcall(function()
    return vim.lsp.inline_completion
  end)
  return ok and type(ic) == 'table' and type(ic.get) == 'function' and type(ic.enable) == 'function'
end

--- Whether the built-in module currently draws non-empty ghost text in `bufnr`.
---@param bufnr integer
---@return boolean
local function drawn(bufnr)
  local ns = vim.api.nvim_get_namespaces()[BUILTIN_NS]
  if not ns or not vim.api.nvim_buf_is_valid(bufnr) then
    return false
  end
  for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { details = true })) do
    local details = mark[4] or {}
    for _, chunk in ipairs(details.virt_text or {}) do
      if chunk[1] ~= '' then
        return true
      end
    end
    for _, line in ipairs(details.virt_lines or {}) do
      if #line > 0 then
        return true
      end
    end
  end
  return false
end

--- Called after the built-in handler has processed a response.
---@param err table?
---@param result lsp.InlineCompletionList|lsp.InlineCompletionItem[]|nil
---@param ctx lsp.HandlerContext
local function on_response(err, result, ctx)
  if err or result == nil then
    return
  end
  local bufnr = ctx.bufnr
  local client = vim.lsp.get_client_by_id(ctx.client_id)
  if not client or not bufnr or not vim.api.nvim_buf_is_valid(bufnr) then
    return
  end
  local items = result.items or result
  local first = items[1]
  if first == nil or not drawn(bufnr) then
    -- The built-in handler replaced what was on screen with nothing.
    tracker.clear(bufnr, 'superseded')
    return
  end
  local win = vim.fn.bufwinid(bufnr)
  local cursor = win ~= -1 and vim.api.nvim_win_get_cursor(win) or { 1, 0 }
  tracker.show(tracker.item(first, client, bufnr, { cursor[1] - 1, cursor[2] }))
end

--- Wraps `client:request` so that inlineCompletion responses reach `on_response` too.
---@param client vim.lsp.Client
function M.on_init(client)
  local request = client.request
  ---@diagnostic disable-next-line: duplicate-set-field
  client.request = function(self, method, params, handler, bufnr)
    if method == METHOD and type(handler) == 'function' then
      local inner = handler
      handler = function(err, result, ctx, cfg)
        inner(err, result, ctx, cfg)
        local ok, msg = pcall(on_response, err, result, ctx)
        if not ok then
          vim.notify_once('opportune: ' .. tostring(msg), vim.log.levels.DEBUG)
        end
      end
    end
    return request(self, method, params, handler, bufnr)
  end
end

--- Takes the current item off the built-in module (hides it) and calls `fn` with it, if any.
---@param bufnr integer
---@param fn? fun(item: table)
---@return boolean
local function take(bufnr, fn)
  return vim.lsp.inline_completion.get({
    bufnr = bufnr,
    on_accept = function(item)
      if fn then
        fn(item)
      end
    end,
  })
end

---@param bufnr integer
---@return opportune.Item?
function M.visible(bufnr)
  local item = tracker.current(bufnr)
  if item and drawn(bufnr) then
    return item
  end
  return nil
end

---@param bufnr integer
---@return boolean
function M.accept(bufnr)
  if not M.visible(bufnr) then
    return false
  end
  -- The built-in inserts the item and runs its command (reported by opportune.lsp.run_accept).
  tracker.forget(bufnr)
  return vim.lsp.inline_completion.get({ bufnr = bufnr })
end

---@param bufnr integer
---@param kind "word"|"line"
---@return boolean
function M.accept_partial(bufnr, kind)
  local item = M.visible(bufnr)
  if not item then
    return false
  end
  local rest = tracker.remaining(item)
  if not rest or rest == '' then
    return false
  end
  local chunk = tracker.chunk(rest, kind)
  if chunk == rest then
    return M.accept(bufnr)
  end
  local typed = tracker.typed(item) or ''
  tracker.forget(bufnr)
  return take(bufnr, function()
    tracker.insert_at_cursor(chunk)
    tracker.partial(item, compat.chars(typed .. chunk))
  end)
end

---@param bufnr integer
---@param reason? "dismissed"|"typed_over"|"superseded"|"other"
function M.dismiss(bufnr, reason)
  tracker.clear(bufnr, reason or 'dismissed')
  if drawn(bufnr) then
    take(bufnr)
  end
end

--- An edit in insert mode: a suggestion that no longer matches what was typed is reported typed over
--- and hidden (the built-in would go on drawing it); one typed through to its end is left to the server.
---@param bufnr integer
local function on_edit(bufnr)
  local item = tracker.current(bufnr)
  if not item then
    return
  end
  local rest = tracker.remaining(item)
  if rest == nil then
    M.dismiss(bufnr, 'typed_over')
  elseif rest == '' then
    tracker.forget(bufnr)
  end
end

---@param bufnr integer
---@param _client vim.lsp.Client
function M.attach(bufnr, _client)
  local group = vim.api.nvim_create_augroup('opportune.builtin.' .. bufnr, { clear = true })
  vim.api.nvim_create_autocmd('TextChangedI', {
    group = group,
    buffer = bufnr,
    callback = function()
      on_edit(bufnr)
    end,
  })
  vim.api.nvim_create_autocmd('InsertLeave', {
    group = group,
    buffer = bufnr,
    callback = function()
      tracker.clear(bufnr, 'dismissed')
    end,
  })
  M.set_enabled(bufnr, require('opportune.state').enabled())
end

---@param bufnr integer
function M.detach(bufnr)
  tracker.clear(bufnr, 'other')
  pcall(vim.api.nvim_del_augroup_by_name, 'opportune.builtin.' .. bufnr)
end

---@param bufnr integer
---@param enabled boolean
function M.set_enabled(bufnr, enabled)
  if not enabled then
    M.dismiss(bufnr, 'other')
  end
  vim.lsp.inline_completion.enable(enabled, { bufnr = bufnr })
end

return M
