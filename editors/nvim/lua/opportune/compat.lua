--- Small shims over the API differences between Neovim 0.10, 0.11 and 0.12.
---
--- 0.11 turned the LSP client's functions into methods (`client:request(...)`); 0.10 only has the dot
--- form. 0.11 also changed the signature of `vim.str_byteindex`.

local M = {}

M.has_011 = vim.fn.has('nvim-0.11') == 1

---@param client vim.lsp.Client
---@param method string
---@param params table?
---@param handler? fun(err: table?, result: any, ctx: table)
---@param bufnr? integer
---@return boolean, integer?
function M.request(client, method, params, handler, bufnr)
  if M.has_011 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

---@param client vim.lsp.Client
---@param method string
---@param params table?
function M.notify(client, method, params)
  if M.has_011 then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

---@param client vim.lsp.Client
---@param id integer
function M.cancel_request(client, id)
  if M.has_011 then
    return client:cancel_request(id)
  end
  return client.cancel_request(id)
end

---@param client vim.lsp.Client
---@param force? boolean
function M.stop(client, force)
  if M.has_011 then
    return client:stop(force)
  end
  return client.stop(force)
end

---@param client vim.lsp.Client
---@return boolean
function M.is_stopped(client)
  if M.has_011 then
    return client:is_stopped()
  end
  return client.is_stopped()
end

--- Byte column (0-based) in `line` of an LSP character offset in the client's position encoding.
---@param line string
---@param character integer
---@param encoding string "utf-8"|"utf-16"|"utf-32"
---@return integer
function M.byte_col(line, character, encoding)
  if encoding == 'utf-8' then
    return math.min(character, #line)
  end
  local ok, col
  if M.has_011 then
    ok, col = pcall(vim.str_byteindex, line, encoding, character, false)
  else
    ok, col = pcall(vim.str_byteindex, line, character, encoding == 'utf-16')
  end
  return ok and col or #line
end

--- Number of characters (code points) in `s`: the unit of `acceptedLength` in the protocol.
---@param s string
---@return integer
function M.chars(s)
  return vim.fn.strchars(s)
end

return M
