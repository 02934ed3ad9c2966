--- Starting, finding and stopping the Opportune language server client.
---
--- `vim.lsp.start` is used on every supported version (0.10+): it attaches the buffer to a running client
--- with the same root or starts one, so one server serves each workspace.

local compat = require('opportune.compat')
local config = require('opportune.config')

local M = {}

M.name = 'opportune'

--- The engine that draws ghost text for this Neovim and these options.
---@param cfg? opportune.Config
---@return table engine module (opportune.builtin or opportune.ghost)
function M.engine(cfg)
  cfg = cfg or config.get()
  local builtin = require('opportune.builtin')
  if cfg.engine == 'plugin' or (cfg.engine == 'auto' and not builtin.available()) then
    return require('opportune.ghost')
  end
  if cfg.engine == 'builtin' and not builtin.available() then
    vim.notify_once('opportune: this Neovim has no vim.lsp.inline_completion; using the plugin ghost text')
    return require('opportune.ghost')
  end
  return builtin
end

--- Runs the item's `opportune.accept` command: the suggestion was accepted whole. Registered as the client
--- command handler, so Neovim's built-in inline completion (which runs `item.command` after inserting)
--- and the plugin's own ghost text both report acceptance through here, once.
---@param command lsp.Command
---@param client_id integer
---@param bufnr integer
function M.run_accept(command, client_id, bufnr)
  local client = vim.lsp.get_client_by_id(client_id)
  if not client then
    return
  end
  local id = command.arguments and command.arguments[1]
  if id ~= nil then
    require('opportune.tracker').accepted(client_id, tostring(id))
  end
  compat.request(
    client,
    'workspace/executeCommand',
    { command = command.command, arguments = command.arguments },
    function() end,
    bufnr
  )
end

---@param cfg opportune.Config
---@param bufnr integer
---@return vim.lsp.ClientConfig
function M.client_config(cfg, bufnr)
  local capabilities = vim.lsp.protocol.make_client_capabilities()
  capabilities.textDocument = capabilities.textDocument or {}
  capabilities.textDocument.inlineCompletion = capabilities.textDocument.inlineCompletion
    or { dynamicRegistration = false }
  local root = vim.fs.root(bufnr, cfg.root_markers) or vim.fn.getcwd()
  local settings = cfg.settings or {}
  -- A workspace opportune.toml the user trusted with Neovim's `:trust` (never asked here).
  local trust = require('opportune.trust').options(root)
  if trust then
    settings = vim.tbl_deep_extend('force', settings, { trust = trust })
  end
  local engine = M.engine(cfg)
  local env = nil
  if cfg.cmd_env and next(cfg.cmd_env) then
    env = cfg.cmd_env
  end
  return {
    name = M.name,
    cmd = cfg.cmd,
    cmd_env = env,
    root_dir = root,
    capabilities = capabilities,
    -- An empty Lua table would be sent as a JSON array; send nothing instead.
    init_options = next(settings) and settings or nil,
    settings = next(settings) and { opportune = settings } or nil,
    commands = {
      [require('opportune.protocol').ACCEPT_COMMAND] = function(command, ctx)
        M.run_accept(command, ctx.client_id, ctx.bufnr)
      end,
    },
    on_init = function(client)
      if engine.on_init then
        engine.on_init(client)
      end
    end,
  }
end

--- Starts (or reuses) the server for `bufnr` when its filetype is configured and the plugin is enabled.
---@param bufnr integer
---@return integer? client_id
function M.start(bufnr)
  local cfg = config.get()
  if not require('opportune.state').enabled(cfg) then
    return nil
  end
  if not vim.api.nvim_buf_is_valid(bufnr) or vim.bo[bufnr].buftype ~= '' then
    return nil
  end
  if not vim.tbl_contains(cfg.filetypes, vim.bo[bufnr].filetype) then
    return nil
  end
  if vim.fn.executable(cfg.cmd[1]) ~= 1 then
    local msg = 'opportune: `%s` not found; install the server or set vim.g.opportune.cmd'
      .. ' (see :checkhealth opportune)'
    vim.notify_once(msg:format(cfg.cmd[1]), vim.log.levels.WARN)
    return nil
  end
  return vim.lsp.start(M.client_config(cfg, bufnr), { bufnr = bufnr })
end

--- Starts the server for every loaded buffer that should have it.
function M.start_all()
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr) then
      M.start(bufnr)
    end
  end
end

--- The Opportune clients, all or those attached to `bufnr`.
---@param bufnr? integer
---@return vim.lsp.Client[]
function M.clients(bufnr)
  return vim.lsp.get_clients({ name = M.name, bufnr = bufnr })
end

--- The client for `bufnr`, else any running Opportune client.
---@param bufnr? integer
---@return vim.lsp.Client?
function M.client(bufnr)
  return M.clients(bufnr or vim.api.nvim_get_current_buf())[1] or M.clients()[1]
end

--- Stops every Opportune client, then calls `on_stopped` once they have exited (or after 5 s).
---@param on_stopped? fun()
function M.stop_all(on_stopped)
  local clients = M.clients()
  for _, client in ipairs(clients) do
    compat.stop(client)
  end
  local waited = 0
  local function poll()
    local running = vim.tbl_filter(function(c)
      return not compat.is_stopped(c)
    end, clients)
    if #running == 0 or waited >= 5000 then
      for _, c in ipairs(running) do
        compat.stop(c, true)
      end
      if on_stopped then
        on_stopped()
      end
      return
    end
    waited = waited + 50
    vim.defer_fn(poll, 50)
  end
  poll()
end

return M
