--- Run-time switch set by `:Opportune enable|disable|toggle`, over the `enabled` option.

local M = {}

---@type boolean? nil: follow vim.g.opportune.enabled
local override = nil

---@param cfg? opportune.Config
---@return boolean
function M.enabled(cfg)
  if override ~= nil then
    return override
  end
  cfg = cfg or require('opportune.config').get()
  return cfg.enabled
end

---@param enabled boolean
function M.set(enabled)
  override = enabled
end

return M
