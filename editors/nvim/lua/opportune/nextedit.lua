--- Next edits: the edits that follow from the one just made (a signature changed, a name renamed), from the
--- server's `opportune/nextEdit`. A preview of the next one is drawn as virtual text at its place;
--- `<Plug>(opportune-next-edit)` jumps there, and pressed again there, applies it.
---
--- Applying checks the edit's document version against the buffer's first: an edit computed for a buffer
--- that changed since is refused with the reason and asked for again, never applied on top of other text.
--- After each apply the server is asked again, so an edit is never applied twice.

local compat = require('opportune.compat')
local lsp = require('opportune.lsp')

local M = {}

local ns = vim.api.nvim_create_namespace('opportune-next-edit')

---@class opportune.NextEdit
---@field id string
---@field textDocument {uri: string, version: integer?}
---@field range lsp.Range
---@field newText string
---@field plainText string
---@field title string
---@field command lsp.Command

---@type opportune.NextEdit[]
M.pending = {}
M.reason = ''

local function clear_preview()
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_valid(bufnr) then
      vim.api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
    end
  end
end

--- Draws the first pending edit as virtual text at the end of its line: `→ newText  (title)`.
local function preview()
  clear_preview()
  local edit = M.pending[1]
  if not edit then
    return
  end
  local bufnr = vim.uri_to_bufnr(edit.textDocument.uri)
  if not vim.api.nvim_buf_is_loaded(bufnr) then
    return
  end
  local line = edit.range.start.line
  if line >= vim.api.nvim_buf_line_count(bufnr) then
    return
  end
  local shown = edit.plainText ~= '' and edit.plainText or '⌫'
  pcall(vim.api.nvim_buf_set_extmark, bufnr, ns, line, 0, {
    virt_text = { { ('  → %s  (%s, %d left)'):format(shown, edit.title, #M.pending), 'OpportuneNextEdit' } },
    virt_text_pos = 'eol',
    hl_mode = 'combine',
  })
end

--- Asks the server for next edits at the cursor; `on_done(edits)` gets the list (empty when none).
---@param bufnr? integer
---@param on_done? fun(edits: opportune.NextEdit[])
function M.request(bufnr, on_done)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local client = lsp.client(bufnr)
  if not client then
    if on_done then
      on_done({})
    end
    return
  end
  local win = vim.fn.bufwinid(bufnr)
  local cursor = win ~= -1 and vim.api.nvim_win_get_cursor(win) or { 1, 0 }
  local line = vim.api.nvim_buf_get_lines(bufnr, cursor[1] - 1, cursor[1], false)[1] or ''
  local character = vim.str_utfindex(line, 'utf-16', math.min(cursor[2], #line), false)
  local params = {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    position = { line = cursor[1] - 1, character = character },
    context = { triggerKind = 1 },
  }
  compat.request(client, require('opportune.protocol').methods.next_edit, params, function(err, result)
    if err or type(result) ~= 'table' then
      M.pending, M.reason = {}, err and tostring(err.message or err) or ''
    else
      M.pending, M.reason = result.edits or {}, result.reason or ''
    end
    preview()
    if on_done then
      on_done(M.pending)
    end
  end, bufnr)
end

---@param edit opportune.NextEdit
---@return integer bufnr
local function buffer_of(edit)
  local bufnr = vim.uri_to_bufnr(edit.textDocument.uri)
  if not vim.api.nvim_buf_is_loaded(bufnr) then
    vim.fn.bufload(bufnr)
  end
  return bufnr
end

--- Whether the cursor is on the edit's line in its buffer.
---@param edit opportune.NextEdit
local function at(edit)
  return vim.api.nvim_get_current_buf() == vim.uri_to_bufnr(edit.textDocument.uri)
    and vim.api.nvim_win_get_cursor(0)[1] - 1 == edit.range.start.line
end

--- Applies `edit` if its buffer is still at the version it was computed for; returns an error message
--- otherwise. Runs the edit's command afterwards (the server records the acceptance).
---@param edit opportune.NextEdit
---@return string? problem
function M.apply(edit)
  local bufnr = buffer_of(edit)
  local version = edit.textDocument.version
  local current = vim.lsp.util.buf_versions[bufnr]
  if version ~= nil and version ~= vim.NIL and current ~= nil and current ~= version then
    return ('stale: %s changed since this edit was computed (version %s, now %s)'):format(
      vim.fn.fnamemodify(vim.uri_to_fname(edit.textDocument.uri), ':t'),
      tostring(version),
      tostring(current)
    )
  end
  vim.lsp.util.apply_text_edits({ { range = edit.range, newText = edit.plainText } }, bufnr, 'utf-16')
  local client = lsp.client(bufnr)
  if client and edit.command then
    compat.request(
      client,
      'workspace/executeCommand',
      { command = edit.command.command, arguments = edit.command.arguments },
      function() end,
      bufnr
    )
  end
  return nil
end

--- `<Plug>(opportune-next-edit)`: jump to the next edit, or apply it when the cursor is already there, then
--- ask again for what is left. With nothing pending, asks first.
function M.jump_or_apply()
  local edit = M.pending[1]
  if not edit then
    M.request(nil, function(edits)
      if edits[1] then
        M.jump_or_apply()
      else
        vim.notify('opportune: no next edit' .. (M.reason ~= '' and (' (' .. M.reason .. ')') or ''))
      end
    end)
    return
  end
  if not at(edit) then
    local bufnr = buffer_of(edit)
    vim.api.nvim_win_set_buf(0, bufnr)
    local line = vim.api.nvim_buf_get_lines(bufnr, edit.range.start.line, edit.range.start.line + 1, false)[1]
      or ''
    local col = vim.str_byteindex(line, 'utf-16', edit.range.start.character, false)
    vim.api.nvim_win_set_cursor(0, { edit.range.start.line + 1, col })
    return
  end
  local problem = M.apply(edit)
  table.remove(M.pending, 1)
  if problem then
    vim.notify('opportune: ' .. problem .. '; asking again', vim.log.levels.WARN)
  end
  -- The buffer changed: what is left is asked for again (versions and places moved).
  vim.schedule(function()
    M.request(vim.api.nvim_get_current_buf())
  end)
end

--- Forgets the pending edits and their preview.
function M.dismiss()
  local client = lsp.client()
  for _, edit in ipairs(M.pending) do
    if client then
      compat.notify(client, require('opportune.protocol').methods.did_reject_next_edit, { id = edit.id, reason = 'dismissed' })
    end
  end
  M.pending = {}
  clear_preview()
end

return M
