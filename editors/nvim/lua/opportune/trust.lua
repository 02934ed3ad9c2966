--- Workspace trust through Neovim's own mechanism (`:trust`, `vim.secure`, the one Neovim has for exrc).
---
--- A workspace `opportune.toml` (in the project root or a parent) may not choose the backend, endpoint,
--- key variable, listeners, model path or telemetry store until the user trusts that file: the server
--- refuses those keys and says so. When Neovim's trust database holds the file with its current content
--- (`:trust` on it, or `:Opportune trust`), the plugin tells the server by the file's sha256, and the
--- server checks that hash against the file it reads.

local M = {}

--- The workspace `opportune.toml` the server will read for `root`, if any.
---@param root string
---@return string?
function M.workspace_config(root)
  local found = vim.fs.find('opportune.toml', { upward = true, path = root, type = 'file', limit = 1 })
  return found[1]
end

---@param path string
---@return string?
local function read(path)
  local f = io.open(path, 'rb')
  if not f then
    return nil
  end
  local content = f:read('*a')
  f:close()
  return content
end

--- The sha256 of `path` when Neovim's trust database allows it with exactly its current content; never
--- prompts (the prompt is `:Opportune trust`).
---@param path string
---@return string?
function M.trusted_sha256(path)
  local real = vim.uv.fs_realpath(path)
  local db = read(vim.fn.stdpath('state') .. '/trust')
  if not real or not db then
    return nil
  end
  local recorded
  for line in vim.gsplit(db, '\n', { plain = true, trimempty = true }) do
    local hash, file = line:match('^(%S+) (.+)$')
    if file == real then
      recorded = hash -- the last line for a file wins, as in vim.secure
    end
  end
  if not recorded or recorded == '!' then
    return nil
  end
  local content = read(real)
  if not content or vim.fn.sha256(content) ~= recorded then
    return nil -- changed since it was trusted
  end
  return recorded
end

--- Settings to add to the server's `initializationOptions` for `root`: the trusted file's hash, if any.
---@param root string
---@return table?
function M.options(root)
  local path = M.workspace_config(root)
  local sha = path and M.trusted_sha256(path)
  if not sha then
    return nil
  end
  return { workspaceConfigSha256 = sha }
end

--- `:Opportune trust`: Neovim's own prompt (view, allow, deny) for the workspace `opportune.toml`; on
--- allow the server is restarted with it trusted.
---@param root string
function M.prompt(root)
  local path = M.workspace_config(root)
  if not path then
    vim.notify('opportune: no opportune.toml in ' .. root .. ' or its parents')
    return
  end
  if vim.secure.read(path) == nil then
    vim.notify('opportune: ' .. path .. ' is not trusted', vim.log.levels.WARN)
    return
  end
  require('opportune').restart(function()
    vim.notify('opportune: ' .. path .. ' trusted; server restarted')
  end)
end

return M
