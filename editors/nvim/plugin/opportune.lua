-- Opportune: ghost-text completion from the Opportune language server.
-- Loaded at startup; cheap: it only defines the command, the <Plug> mappings and autocommands, and
-- requires the rest when a buffer of a configured filetype opens.

if vim.g.loaded_opportune then
  return
end
if vim.fn.has('nvim-0.10') ~= 1 then
  vim.notify_once('opportune: Neovim 0.10 or newer is required', vim.log.levels.WARN)
  return
end
vim.g.loaded_opportune = true

local function set_highlight()
  local target = vim.fn.hlexists('ComplHint') == 1 and 'ComplHint' or 'Comment'
  vim.api.nvim_set_hl(0, 'OpportuneGhost', { link = target, default = true })
  vim.api.nvim_set_hl(0, 'OpportuneNextEdit', { link = 'DiagnosticHint', default = true })
end
set_highlight()

local group = vim.api.nvim_create_augroup('opportune', { clear = true })

vim.api.nvim_create_autocmd('ColorScheme', { group = group, callback = set_highlight })

vim.api.nvim_create_autocmd('FileType', {
  group = group,
  callback = function(ev)
    require('opportune.lsp').start(ev.buf)
  end,
})

vim.api.nvim_create_autocmd('LspAttach', {
  group = group,
  callback = function(ev)
    local client = vim.lsp.get_client_by_id(ev.data.client_id)
    if client and client.name == 'opportune' then
      require('opportune.lsp').engine().attach(ev.buf, client)
    end
  end,
})

vim.api.nvim_create_autocmd('LspDetach', {
  group = group,
  callback = function(ev)
    local client = vim.lsp.get_client_by_id(ev.data.client_id)
    if client and client.name == 'opportune' then
      require('opportune.lsp').engine().detach(ev.buf)
    end
  end,
})

vim.api.nvim_create_user_command('Opportune', function(opts)
  require('opportune.commands').run(opts)
end, {
  nargs = '*',
  desc = 'Opportune: toggle|enable|disable|report [since]|status|restart',
  complete = function(arglead, cmdline)
    return require('opportune.commands').complete(arglead, cmdline)
  end,
})

-- Next edits: asked for when the user leaves insert mode (an edit just ended), previewed at their place.
vim.api.nvim_create_autocmd('InsertLeave', {
  group = group,
  callback = function(ev)
    if require('opportune.config').get().next_edits and #require('opportune.lsp').clients(ev.buf) > 0 then
      require('opportune.nextedit').request(ev.buf)
    end
  end,
})
vim.keymap.set('n', '<Plug>(opportune-next-edit)', function()
  require('opportune.nextedit').jump_or_apply()
end, { silent = true, desc = 'Jump to the next Opportune next edit, or apply it when there' })
vim.keymap.set('n', '<Plug>(opportune-next-edit-dismiss)', function()
  require('opportune.nextedit').dismiss()
end, { silent = true, desc = 'Dismiss the Opportune next edits' })

local keymaps = require('opportune.keymaps')
keymaps.define_plugs()
keymaps.apply(require('opportune.config').get())

-- Buffers opened before the plugin loaded (e.g. `nvim file.py` with lazy loading).
vim.schedule(function()
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr) and vim.bo[bufnr].filetype ~= '' then
      require('opportune.lsp').start(bufnr)
    end
  end
end)
