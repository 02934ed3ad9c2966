--- The `<Plug>` mappings and the default insert-mode keys.
---
--- A default key acts only while a suggestion is visible. Otherwise it does what it did before: the key's
--- previous global insert-mode mapping (Neovim's own <Tab> snippet jump, another plugin's, the user's) is
--- chained, and without one the key is typed as such (a literal <Tab>).

local M = {}

---@type table<string, {plug: string, fn: string, desc: string}>
M.actions = {
  accept = { plug = '<Plug>(opportune-accept)', fn = 'accept', desc = 'Accept the Opportune suggestion' },
  accept_word = {
    plug = '<Plug>(opportune-accept-word)',
    fn = 'accept_word',
    desc = 'Accept the next word of the Opportune suggestion',
  },
  accept_line = {
    plug = '<Plug>(opportune-accept-line)',
    fn = 'accept_line',
    desc = 'Accept the next line of the Opportune suggestion',
  },
  dismiss = { plug = '<Plug>(opportune-dismiss)', fn = 'dismiss', desc = 'Dismiss the Opportune suggestion' },
}

local DESC_PREFIX = 'opportune: '

--- Defines the `<Plug>` mappings (insert mode).
function M.define_plugs()
  for _, action in pairs(M.actions) do
    vim.keymap.set('i', action.plug, ('<Cmd>lua require("opportune").%s()<CR>'):format(action.fn), {
      silent = true,
      desc = action.desc,
    })
  end
end

---@type table<string, string> lhs we mapped, by action
local mapped = {}

---@type table<string, table> maparg() of the mapping each of our keys replaced, by lhs
local restore = {}

---@type table<string, fun()> non-expr callbacks of the mappings we replaced, by action
local chained = {}

--- What a default key does when no suggestion is visible: whatever the key's previous insert-mode mapping
--- did (e.g. Neovim's own <Tab> for snippet jumps), else the plain key. Returns the keys for our `expr`
--- mapping to produce.
---@param name string action name
---@param lhs string
---@param previous table maparg() dictionary of the previous mapping, or empty
---@return fun(): string
local function fallback(name, lhs, previous)
  if vim.tbl_isempty(previous) then
    return function()
      return lhs
    end
  end
  if previous.callback then
    if previous.expr == 1 then
      return function()
        return previous.callback() or ''
      end
    end
    -- Not an expression: it may edit the buffer, which an expression mapping may not, so run it as a
    -- command key.
    chained[name] = previous.callback
    return function()
      return ('<Cmd>lua require("opportune.keymaps").chained.%s()<CR>'):format(name)
    end
  end
  local rhs = previous.rhs or ''
  if previous.expr == 1 then
    return function()
      local ok, keys = pcall(vim.api.nvim_eval, rhs)
      return ok and keys or ''
    end
  end
  if previous.noremap == 1 then
    return function()
      return rhs
    end
  end
  return function()
    vim.api.nvim_feedkeys(vim.keycode(rhs), 'm', false)
    return ''
  end
end

M.chained = chained

--- Sets (or removes) the default keys according to `cfg.keymaps`.
---@param cfg opportune.Config
function M.apply(cfg)
  for name, lhs in pairs(mapped) do
    local current = vim.fn.maparg(lhs, 'i', false, true)
    if type(current.desc) == 'string' and vim.startswith(current.desc, DESC_PREFIX) then
      pcall(vim.keymap.del, 'i', lhs)
      if restore[lhs] then
        pcall(vim.fn.mapset, 'i', false, restore[lhs])
      end
    end
    mapped[name] = nil
    restore[lhs] = nil
  end
  if cfg.keymaps == false then
    return
  end
  for name, action in pairs(M.actions) do
    local lhs = cfg.keymaps[name]
    if type(lhs) == 'string' and lhs ~= '' then
      local previous = vim.fn.maparg(lhs, 'i', false, true)
      if previous.buffer == 1 then
        previous = {} -- a buffer-local mapping shadows ours anyway
      end
      local otherwise = fallback(name, lhs, previous)
      vim.keymap.set('i', lhs, function()
        if require('opportune').visible() then
          return ('<Cmd>lua require("opportune").%s()<CR>'):format(action.fn)
        end
        return otherwise()
      end, { expr = true, silent = true, desc = DESC_PREFIX .. action.desc })
      mapped[name] = lhs
      restore[lhs] = not vim.tbl_isempty(previous) and previous or nil
    end
  end
end

return M
