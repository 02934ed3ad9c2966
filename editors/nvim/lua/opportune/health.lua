--- `:checkhealth opportune`: Neovim version and ghost-text engine, options, the server executable and its
--- version, and the client of the current buffer.

local M = {}

local health = vim.health

--- The command that prints the server's version: `cmd` up to its `serve` subcommand, then `--version`.
---@param cmd string[]
---@return string[]
function M.version_cmd(cmd)
  local out = {}
  for _, part in ipairs(cmd) do
    if part == 'serve' then
      break
    end
    table.insert(out, part)
  end
  table.insert(out, '--version')
  return out
end

function M.check()
  local config = require('opportune.config')
  local lsp = require('opportune.lsp')

  health.start('Neovim')
  local v = vim.version()
  local version = ('%d.%d.%d'):format(v.major, v.minor, v.patch)
  if vim.fn.has('nvim-0.10') ~= 1 then
    health.error('Neovim ' .. version .. ': Opportune needs 0.10 or newer')
    return
  end
  health.ok('Neovim ' .. version)
  if require('opportune.builtin').available() then
    health.ok('built-in inline completion (vim.lsp.inline_completion) is available')
  else
    health.info('no vim.lsp.inline_completion (Neovim < 0.12): the plugin draws its own ghost text')
  end

  health.start('Options (vim.g.opportune)')
  local problems = config.problems(vim.g.opportune or {})
  if #problems == 0 then
    health.ok('valid')
  else
    for _, problem in ipairs(problems) do
      health.warn(problem, 'The default is used instead.')
    end
  end
  local cfg = config.get()
  health.info('ghost text engine: ' .. lsp.engine(cfg).name)
  health.info('filetypes: ' .. table.concat(cfg.filetypes, ', '))
  health.info('suggestions ' .. (require('opportune.state').enabled(cfg) and 'enabled' or 'disabled'))

  health.start('Server')
  local exe = cfg.cmd[1]
  if vim.fn.executable(exe) ~= 1 then
    health.error(
      ('`%s` is not executable'):format(exe),
      { 'Install the Opportune server (it provides the opportune command) or set vim.g.opportune.cmd.' }
    )
  else
    health.ok(('`%s` found: %s'):format(exe, vim.fn.exepath(exe)))
    local vcmd = M.version_cmd(cfg.cmd)
    local ok, result = pcall(function()
      return vim.system(vcmd, { text = true, env = cfg.cmd_env }):wait(15000)
    end)
    if not ok then
      health.error('`' .. table.concat(vcmd, ' ') .. '` failed: ' .. tostring(result))
    elseif result.code ~= 0 then
      health.error(
        ('`%s` exited with %d'):format(table.concat(vcmd, ' '), result.code),
        { vim.trim(result.stderr or '') }
      )
    else
      local text = vim.trim((result.stdout or '') ~= '' and result.stdout or result.stderr or '')
      health.ok('version: ' .. (text ~= '' and text or '(no output)'))
    end
  end

  health.start('Client')
  local clients = lsp.clients()
  if #clients == 0 then
    health.info('no Opportune client is running (open a file of a configured filetype)')
  end
  for _, client in ipairs(clients) do
    local buffers = vim.lsp.get_buffers_by_client_id(client.id)
    health.ok(
      ('client %d (root %s) attached to %d buffer(s)'):format(
        client.id,
        client.config.root_dir or '?',
        #buffers
      )
    )
    if client.server_capabilities and client.server_capabilities.inlineCompletionProvider then
      health.ok('the server offers textDocument/inlineCompletion')
    else
      health.error('the server does not offer textDocument/inlineCompletion')
    end
  end
  -- `:checkhealth` runs in its own buffer; the buffer it was called from is the alternate one.
  local origin = vim.fn.bufnr('#')
  if origin > 0 then
    if #lsp.clients(origin) > 0 then
      health.ok(('attached to buffer %d (%s)'):format(origin, vim.api.nvim_buf_get_name(origin)))
    else
      health.info(('not attached to buffer %d'):format(origin))
    end
  end
end

return M
