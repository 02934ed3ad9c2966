--- Options of the Opportune plugin: types, defaults and validation.
---
--- Users configure the plugin by assigning a (partial) table to `vim.g.opportune`, before or after the
--- plugin loads; nothing requires a `setup()` call. `require('opportune').setup(opts)` exists only as a
--- convenience that merges `opts` into `vim.g.opportune`.

local M = {}

---@class opportune.Keymaps
---Insert-mode key that accepts the whole suggestion. When no suggestion is visible the key does what it
---did before (a literal <Tab> for the default). `false` leaves the key alone.
---(default: "<Tab>")
---@field accept? string|false
---Insert-mode key that accepts the next word of the suggestion. (default: "<M-Right>")
---@field accept_word? string|false
---Insert-mode key that accepts the rest of the current line of the suggestion. (default: "<M-Down>")
---@field accept_line? string|false
---Insert-mode key that hides the suggestion and reports it as dismissed. (default: "<C-]>")
---@field dismiss? string|false

---@class opportune.Config
---Command that starts the language server (a list, no shell). (default: { "opportune", "serve" })
---@field cmd? string[]
---Extra environment for the server process. (default: {})
---@field cmd_env? table<string, string>
---Filetypes in which the server is started.
---(default: python, javascript(react), typescript(react), go, rust, java, c, cpp, lua, sh)
---@field filetypes? string[]
---Files or folders whose nearest ancestor directory is the workspace root; the current directory when none
---is found. (default: { ".git", "pyproject.toml", "package.json", "go.mod", "Cargo.toml", "opportune.toml" })
---@field root_markers? string[]
---Start the server and show suggestions. At run time `:Opportune disable` pauses suggestions without
---stopping the server. (default: true)
---@field enabled? boolean
---Server settings, sent as `initializationOptions` and, when changed by `setup()`, as
---`workspace/didChangeConfiguration { settings = { opportune = … } }`. Same keys as the `opportune.toml`
---sections, e.g. `{ completion = { deadlineMs = 300 }, telemetry = { db = "…" } }`. (default: {})
---@field settings? table
---Milliseconds of quiet typing before a suggestion is requested, for the plugin's own ghost text (Neovim
---0.10/0.11, or `engine = "plugin"`). Neovim's built-in inline completion uses its own fixed delay.
---(default: 75)
---@field debounce? integer
---Which ghost text to use: "auto" (Neovim's built-in `vim.lsp.inline_completion` where it exists, the
---plugin's own otherwise), "builtin" or "plugin". (default: "auto")
---@field engine? "auto"|"builtin"|"plugin"
---Default insert-mode keys; `false` sets none (the `<Plug>` mappings always exist).
---@field keymaps? opportune.Keymaps|false
---Ask the server for next edits when leaving insert mode and preview the next one at its place; map
---`<Plug>(opportune-next-edit)` to jump to it and apply it. (default: true)
---@field next_edits? boolean

---@type opportune.Config
M.defaults = {
  cmd = { 'opportune', 'serve' },
  cmd_env = {},
  filetypes = {
    'python',
    'javascript',
    'javascriptreact',
    'typescript',
    'typescriptreact',
    'go',
    'rust',
    'java',
    'c',
    'cpp',
    'lua',
    'sh',
  },
  root_markers = { '.git', 'pyproject.toml', 'package.json', 'go.mod', 'Cargo.toml', 'opportune.toml' },
  enabled = true,
  settings = {},
  debounce = 75,
  engine = 'auto',
  keymaps = {
    accept = '<Tab>',
    accept_word = '<M-Right>',
    accept_line = '<M-Down>',
    dismiss = '<C-]>',
  },
  next_edits = true,
}

--- Checks the user's table; returns a list of problems (empty when valid).
---@param user table
---@return string[]
function M.problems(user)
  local problems = {}
  ---@param key string
  ---@param ok boolean
  ---@param expected string
  local function check(key, ok, expected)
    if not ok then
      local got = vim.inspect(user[key])
      table.insert(problems, ('vim.g.opportune.%s: expected %s, got %s'):format(key, expected, got))
    end
  end
  local function list_of_strings(v)
    if type(v) ~= 'table' then
      return false
    end
    for _, s in ipairs(v) do
      if type(s) ~= 'string' then
        return false
      end
    end
    return true
  end
  if type(user) ~= 'table' then
    return { 'vim.g.opportune: expected a table, got ' .. type(user) }
  end
  local known = vim.tbl_keys(M.defaults)
  for key in pairs(user) do
    if not vim.tbl_contains(known, key) then
      table.insert(problems, ('vim.g.opportune.%s: unknown option'):format(tostring(key)))
    end
  end
  if user.cmd ~= nil then
    check('cmd', list_of_strings(user.cmd) and #user.cmd > 0, 'a non-empty list of strings')
  end
  if user.next_edits ~= nil then
    check('next_edits', type(user.next_edits) == 'boolean', 'a boolean')
  end
  if user.cmd_env ~= nil then
    check('cmd_env', type(user.cmd_env) == 'table', 'a table')
  end
  if user.filetypes ~= nil then
    check('filetypes', list_of_strings(user.filetypes), 'a list of strings')
  end
  if user.root_markers ~= nil then
    check('root_markers', list_of_strings(user.root_markers), 'a list of strings')
  end
  if user.enabled ~= nil then
    check('enabled', type(user.enabled) == 'boolean', 'a boolean')
  end
  if user.settings ~= nil then
    check('settings', type(user.settings) == 'table', 'a table')
  end
  if user.debounce ~= nil then
    check('debounce', type(user.debounce) == 'number' and user.debounce >= 0, 'a number >= 0')
  end
  if user.engine ~= nil then
    local engines = { 'auto', 'builtin', 'plugin' }
    check('engine', vim.tbl_contains(engines, user.engine), '"auto", "builtin" or "plugin"')
  end
  if user.keymaps ~= nil and user.keymaps ~= false then
    check('keymaps', type(user.keymaps) == 'table', 'a table or false')
    if type(user.keymaps) == 'table' then
      for name, lhs in pairs(user.keymaps) do
        if not M.defaults.keymaps[name] then
          table.insert(problems, ('vim.g.opportune.keymaps.%s: unknown key'):format(tostring(name)))
        elseif lhs ~= false and type(lhs) ~= 'string' then
          table.insert(problems, ('vim.g.opportune.keymaps.%s: expected a key or false'):format(name))
        end
      end
    end
  end
  return problems
end

--- The effective options: defaults overlaid with `vim.g.opportune`. Invalid values are reported once and
--- replaced by their defaults, so a typo never leaves the editor without the plugin.
---@return opportune.Config
function M.get()
  local user = vim.g.opportune
  if user == nil then
    user = {}
  end
  local problems = M.problems(user)
  if #problems > 0 then
    vim.notify_once('opportune: ' .. table.concat(problems, '\n'), vim.log.levels.WARN)
    if type(user) ~= 'table' then
      user = {}
    end
  end
  local valid = {}
  for key, value in pairs(user) do
    if M.defaults[key] ~= nil and #M.problems({ [key] = value }) == 0 then
      valid[key] = value
    end
  end
  -- Lists replace the default list rather than being merged index by index.
  local merged = vim.tbl_extend('force', vim.deepcopy(M.defaults), valid)
  if valid.keymaps ~= nil and valid.keymaps ~= false then
    merged.keymaps = vim.tbl_extend('force', vim.deepcopy(M.defaults.keymaps), valid.keymaps)
  end
  return merged
end

return M
