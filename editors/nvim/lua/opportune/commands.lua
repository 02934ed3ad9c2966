--- `:Opportune {toggle|enable|disable|report|status|restart|trust}`.

local M = {}

--- Shows `text` in a scratch buffer in a centred floating window; `q` closes it.
---@param text string
---@param title string
---@return integer bufnr, integer winid
function M.show_text(text, title)
  local lines = vim.split(text, '\n', { plain = true })
  local bufnr = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_buf_set_lines(bufnr, 0, -1, false, lines)
  vim.bo[bufnr].modifiable = false
  vim.bo[bufnr].bufhidden = 'wipe'
  vim.bo[bufnr].filetype = 'opportune-report'
  local width = 20
  for _, line in ipairs(lines) do
    width = math.max(width, vim.fn.strdisplaywidth(line))
  end
  width = math.min(width + 2, math.max(20, vim.o.columns - 4))
  local height = math.min(#lines, math.max(3, vim.o.lines - 6))
  local winid = vim.api.nvim_open_win(bufnr, true, {
    relative = 'editor',
    width = width,
    height = height,
    row = math.floor((vim.o.lines - height) / 2),
    col = math.floor((vim.o.columns - width) / 2),
    style = 'minimal',
    border = 'rounded',
    title = ' ' .. title .. ' ',
    title_pos = 'center',
  })
  vim.keymap.set('n', 'q', '<Cmd>close<CR>', { buffer = bufnr, silent = true, nowait = true })
  return bufnr, winid
end

---@param err any
---@return string
local function describe(err)
  if type(err) == 'table' then
    return err.message or vim.inspect(err)
  end
  return tostring(err)
end

---@type table<string, fun(args: string[])>
M.subcommands = {
  toggle = function()
    local opportune = require('opportune')
    opportune.toggle()
    vim.notify('Opportune ' .. (opportune.is_enabled() and 'enabled' or 'disabled'))
  end,
  enable = function()
    require('opportune').enable()
  end,
  disable = function()
    require('opportune').disable()
  end,
  report = function(args)
    require('opportune').report({ since = args[1] }, function(err, result)
      if err or not result then
        vim.notify('opportune report: ' .. describe(err or 'no result'), vim.log.levels.ERROR)
        return
      end
      M.show_text(result.text or vim.inspect(result), 'Opportune report')
    end)
  end,
  status = function()
    local opportune = require('opportune')
    local lsp = require('opportune.lsp')
    local client = lsp.client()
    local head = {
      ('plugin: %s, ghost text: %s'):format(
        opportune.is_enabled() and 'enabled' or 'disabled',
        lsp.engine().name
      ),
      client and ('server: client %d, root %s'):format(client.id, client.config.root_dir or '?')
        or 'server: not running',
    }
    if not client then
      vim.notify(table.concat(head, '\n'))
      return
    end
    opportune.status(function(err, status)
      if err or not status then
        table.insert(head, 'status: ' .. describe(err or 'no result'))
      else
        table.insert(
          head,
          ('server %s, model %s, experiment %s, arm %s, last latency %s ms'):format(
            status.enabled and 'enabled' or 'disabled',
            tostring(status.model),
            tostring(status.experiment),
            tostring(status.arm),
            status.lastLatencyMs == vim.NIL and '-' or tostring(status.lastLatencyMs)
          )
        )
      end
      vim.notify(table.concat(head, '\n'))
    end)
  end,
  restart = function()
    require('opportune').restart(function()
      vim.notify('Opportune restarted')
    end)
  end,
  trust = function()
    local client = require('opportune.lsp').client()
    local root = client and client.config.root_dir
      or vim.fs.root(0, require('opportune.config').get().root_markers)
      or vim.fn.getcwd()
    require('opportune.trust').prompt(root)
  end,
}

---@param opts {fargs: string[]}
function M.run(opts)
  local name = opts.fargs[1] or 'status'
  local fn = M.subcommands[name]
  if not fn then
    vim.notify('Opportune: unknown subcommand ' .. name, vim.log.levels.ERROR)
    return
  end
  fn(vim.list_slice(opts.fargs, 2))
end

---@param arglead string
---@param cmdline string
---@return string[]
function M.complete(arglead, cmdline)
  local words = vim.split(cmdline, '%s+', { trimempty = true })
  if #words > 2 or (#words == 2 and arglead == '') then
    if words[2] == 'report' then
      return vim.tbl_filter(function(s)
        return vim.startswith(s, arglead)
      end, { '1d', '7d', '30d' })
    end
    return {}
  end
  local names = vim.tbl_keys(M.subcommands)
  table.sort(names)
  return vim.tbl_filter(function(s)
    return vim.startswith(s, arglead)
  end, names)
end

return M
