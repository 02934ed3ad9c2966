-- Minimal init for the headless Neovim tests: the plugin from the checkout on the runtimepath, options
-- from the environment the test sets, nothing else (run with `nvim --headless --clean -u init.lua`).

local plugin = assert(os.getenv('OPPORTUNE_NVIM_PLUGIN'), 'OPPORTUNE_NVIM_PLUGIN is not set')
vim.opt.runtimepath:prepend(plugin)
vim.opt.swapfile = false
vim.opt.shadafile = 'NONE'
vim.opt.expandtab = true
vim.opt.shiftwidth = 4
-- No automatic indent: the test types the indentation itself, as a user would on a plain editor.
vim.cmd('filetype indent off')
vim.opt.autoindent = false
vim.opt.smartindent = false

local opts = {}
local cmd = os.getenv('OPPORTUNE_NVIM_CMD')
if cmd and cmd ~= '' then
  opts.cmd = vim.json.decode(cmd)
end
local engine = os.getenv('OPPORTUNE_NVIM_ENGINE')
if engine and engine ~= '' then
  opts.engine = engine
end
local settings = os.getenv('OPPORTUNE_NVIM_SETTINGS')
if settings and settings ~= '' then
  opts.settings = vim.json.decode(settings)
end
vim.g.opportune = opts
