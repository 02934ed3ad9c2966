--- Opportune for Neovim: ghost-text code completion from the Opportune language server.
---
--- Everything here works without `setup()`; the plugin file starts the server for the configured
--- filetypes and installs the `<Plug>` mappings and the `:Opportune` command. This module is the Lua API
--- behind them, for users who prefer their own mappings.

local config = require('opportune.config')
local lsp = require('opportune.lsp')
local state = require('opportune.state')
local tracker = require('opportune.tracker')

local M = {}

---@return table engine
local function engine()
  return lsp.engine()
end

--- Merges `opts` into `vim.g.opportune` (optional: assigning `vim.g.opportune` directly is the same).
--- Running servers receive changed `settings` through `workspace/didChangeConfiguration`.
---@param opts? opportune.Config
function M.setup(opts)
  local before = config.get()
  local merged = vim.tbl_deep_extend('force', vim.g.opportune or {}, opts or {})
  -- Lists and `false` are replaced, not merged.
  for key, value in pairs(opts or {}) do
    if vim.islist(value) or value == false then
      merged[key] = value
    end
  end
  vim.g.opportune = merged
  local after = config.get()
  require('opportune.keymaps').apply(after)
  if not vim.deep_equal(before.settings, after.settings) then
    for _, client in ipairs(lsp.clients()) do
      require('opportune.compat').notify(
        client,
        'workspace/didChangeConfiguration',
        { settings = { opportune = next(after.settings) and after.settings or vim.empty_dict() } }
      )
    end
  end
end

--- The suggestion visible in `bufnr` (default: current buffer): its completion id, insertText and the part
--- not yet in the buffer; nil when none is visible.
---@param bufnr? integer
---@return {id: string?, text: string, remaining: string}?
function M.suggestion(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local item = engine().visible(bufnr)
  if not item then
    return nil
  end
  local rest = tracker.remaining(item)
  if not rest or rest == '' then
    return nil
  end
  return { id = item.id, text = item.text, remaining = rest }
end

---@param bufnr? integer
---@return boolean
function M.visible(bufnr)
  return M.suggestion(bufnr) ~= nil
end

--- Accepts the whole visible suggestion; false when there is none.
---@return boolean
function M.accept()
  return engine().accept(vim.api.nvim_get_current_buf())
end

--- Accepts the next word of the visible suggestion; false when there is none.
---@return boolean
function M.accept_word()
  return engine().accept_partial(vim.api.nvim_get_current_buf(), 'word')
end

--- Accepts the rest of the current line of the visible suggestion; false when there is none.
---@return boolean
function M.accept_line()
  return engine().accept_partial(vim.api.nvim_get_current_buf(), 'line')
end

--- Hides the visible suggestion and reports it dismissed.
function M.dismiss()
  engine().dismiss(vim.api.nvim_get_current_buf(), 'dismissed')
end

---@return boolean
function M.is_enabled()
  return state.enabled()
end

--- Switches suggestions on or off at run time. Off keeps the server running (it is told through
--- `opportune/setEnabled`) but requests and shows nothing; on starts the server where it is missing.
---@param enabled boolean
function M.set_enabled(enabled)
  state.set(enabled)
  for _, client in ipairs(lsp.clients()) do
    local protocol = require('opportune.protocol')
    require('opportune.compat').request(
      client,
      protocol.methods.set_enabled,
      protocol.set_enabled_params(enabled),
      function() end
    )
    for _, bufnr in ipairs(vim.lsp.get_buffers_by_client_id(client.id)) do
      engine().set_enabled(bufnr, enabled)
    end
  end
  if enabled then
    lsp.start_all()
  end
end

function M.enable()
  M.set_enabled(true)
end

function M.disable()
  M.set_enabled(false)
end

function M.toggle()
  M.set_enabled(not state.enabled())
end

--- Sends a request to the server of the current buffer; `callback(err, result)`.
---@param method string
---@param params table
---@param callback fun(err: table|string|nil, result: any)
local function ask(method, params, callback)
  local client = lsp.client()
  if not client then
    callback('no Opportune server is running (is the filetype in vim.g.opportune.filetypes?)', nil)
    return
  end
  require('opportune.compat').request(client, method, params, function(err, result)
    callback(err, result)
  end, vim.api.nvim_get_current_buf())
end

--- The server's status (`opportune/status`).
---@param callback fun(err: table|string|nil, status: opportune.StatusResult?)
function M.status(callback)
  local protocol = require('opportune.protocol')
  ask(protocol.methods.status, protocol.status_params(), callback)
end

--- The CPO report of the server's telemetry store (`opportune/report`).
---@param opts? {since?: string}
---@param callback fun(err: table|string|nil, report: opportune.ReportResult?)
function M.report(opts, callback)
  local protocol = require('opportune.protocol')
  ask(protocol.methods.report, protocol.report_params(opts and opts.since), callback)
end

--- Stops the server(s) and starts them again for the open buffers.
---@param callback? fun()
function M.restart(callback)
  lsp.stop_all(function()
    lsp.start_all()
    if callback then
      callback()
    end
  end)
end

return M
