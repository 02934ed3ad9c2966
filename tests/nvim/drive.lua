-- Drives a headless Neovim like a user: runs the steps given as JSON in $OPPORTUNE_NVIM_STEPS, with real
-- pauses between keystrokes, and writes what it saw to $OPPORTUNE_NVIM_OUT as JSON, then quits.
--
-- Keys go through nvim_input, i.e. the same input queue as a terminal's keystrokes, so mappings, insert
-- mode and autocommands behave as for a user. The steps run in a coroutine resumed by timers, because
-- typed input is only processed while Neovim's main loop waits for input, not while a script runs.
--
-- Steps (each a JSON object with one action key, and optionally "name" to label its record):
--   {"open": path}                      :edit the file, wait for the Opportune client to attach
--   {"input": keys}                     nvim_input(keys) then a short pause
--   {"type": text, "pause": ms}         type text one character at a time
--   {"wait_suggestion": ms, "more": s}  wait for ghost text; while none, type the next character of `more`
--   {"key": keys, "change": bool}       press keys with the suggestion on screen; with change, wait for
--                                       the line to change
--   {"sleep": ms}
--   {"lua": code}                       run code, record what it returns
--   {"status": true} / {"report": since}
--   {"stop": true}                      stop the server cleanly (it flushes its telemetry) and wait

local out_path = os.getenv('OPPORTUNE_NVIM_OUT') or error('OPPORTUNE_NVIM_OUT is not set')
local steps = vim.json.decode(os.getenv('OPPORTUNE_NVIM_STEPS') or error('OPPORTUNE_NVIM_STEPS is not set'))

local results = { steps = {}, log = {} }
local t0 = vim.uv.hrtime()
local co

local function log(msg)
  table.insert(results.log, ('%.2f %s'):format((vim.uv.hrtime() - t0) / 1e9, msg))
end

local function finish(err)
  if err then
    results.error = tostring(err)
    log('error: ' .. tostring(err))
  end
  results.messages = vim.api.nvim_exec2('messages', { output = true }).output
  local f = assert(io.open(out_path, 'w'))
  f:write(vim.json.encode(results))
  f:close()
  vim.cmd(err and 'cquit! 3' or 'qall!')
end

local function resume()
  local ok, err = coroutine.resume(co)
  if not ok then
    finish(debug.traceback(co, err))
  elseif coroutine.status(co) == 'dead' then
    finish(nil)
  end
end

local function sleep(ms)
  vim.defer_fn(resume, ms)
  coroutine.yield()
end

--- Polls `pred` every 25 ms for at most `timeout` ms; returns its first truthy value or nil.
local function wait_for(pred, timeout)
  local deadline = vim.uv.now() + timeout
  while true do
    local value = pred()
    if value then
      return value
    end
    if vim.uv.now() >= deadline then
      return nil
    end
    sleep(25)
  end
end

local function client()
  return require('opportune.lsp').client(vim.api.nvim_get_current_buf())
end

local function line()
  return vim.api.nvim_get_current_line()
end

local function snapshot(extra)
  local s = require('opportune').suggestion()
  local rec = {
    line = line(),
    lines = vim.api.nvim_buf_get_lines(0, 0, -1, false),
    mode = vim.api.nvim_get_mode().mode,
    suggestion = s,
    t = (vim.uv.hrtime() - t0) / 1e9,
  }
  for k, v in pairs(extra or {}) do
    rec[k] = v
  end
  return rec
end

local function fate(id)
  local c = client()
  if not c or not id then
    return nil
  end
  return require('opportune.tracker').fate(c.id, id)
end

local function type_text(text, pause)
  for _, ch in ipairs(vim.fn.split(text, '\\zs')) do
    vim.api.nvim_input(ch == '<' and '<lt>' or ch)
    sleep(pause)
  end
end

local last_id = nil

local actions = {}

function actions.open(step)
  vim.cmd.edit(vim.fn.fnameescape(step.open))
  local bufnr = vim.api.nvim_get_current_buf()
  local c = wait_for(function()
    return require('opportune.lsp').clients(bufnr)[1]
  end, step.timeout or 60000)
  if not c then
    error('the Opportune client did not attach to ' .. step.open)
  end
  -- Wait for `initialize` to complete so that keystrokes reach a running server.
  local ready = wait_for(function()
    return c.initialized and c.server_capabilities ~= nil
  end, step.timeout or 60000)
  return {
    attached = true,
    initialized = ready ~= nil,
    engine = require('opportune.lsp').engine().name,
    inline = c.server_capabilities and c.server_capabilities.inlineCompletionProvider ~= nil,
  }
end

function actions.input(step)
  vim.api.nvim_input(step.input)
  sleep(step.pause or 150)
  return snapshot()
end

function actions.type(step)
  type_text(step.type, step.pause or 120)
  return snapshot()
end

function actions.wait_suggestion(step)
  local more = vim.fn.split(step.more or '', '\\zs')
  local typed_more = ''
  local waited = 0
  local per_try = step.per_try or step.wait_suggestion
  while true do
    local s = wait_for(require('opportune').suggestion, per_try)
    waited = waited + per_try
    if s then
      last_id = s.id
      return snapshot({ typed_more = typed_more, fate = fate(s.id) })
    end
    if #more == 0 or waited >= step.wait_suggestion then
      return snapshot({ typed_more = typed_more, timeout = true })
    end
    local ch = table.remove(more, 1)
    typed_more = typed_more .. ch
    vim.api.nvim_input(ch == '<' and '<lt>' or ch)
    sleep(step.pause or 120)
  end
end

function actions.key(step)
  local before = snapshot()
  vim.api.nvim_input(step.key)
  if step.change then
    wait_for(function()
      return line() ~= before.line or #vim.api.nvim_buf_get_lines(0, 0, -1, false) ~= #before.lines
    end, step.timeout or 5000)
  end
  sleep(step.pause or 200)
  -- The suggestion the key acted on: the one on screen just before it.
  local id = before.suggestion and before.suggestion.id or last_id
  return snapshot({ before = before, id = id, fate = fate(id) })
end

function actions.lua(step)
  return { value = assert(loadstring(step.lua))() }
end

function actions.sleep(step)
  sleep(step.sleep)
  return snapshot({ id = last_id, fate = fate(last_id) })
end

local function ask(fn, ...)
  local reply = nil
  local args = { ... }
  table.insert(args, function(err, result)
    local message = err and (type(err) == 'table' and (err.message or vim.inspect(err)) or tostring(err))
    reply = { err = message, result = result }
  end)
  fn(unpack(args))
  wait_for(function()
    return reply
  end, 15000)
  return reply or { err = 'timeout' }
end

function actions.status()
  return ask(require('opportune').status)
end

function actions.report(step)
  local since = step.report ~= true and step.report or nil
  return ask(require('opportune').report, { since = since })
end

function actions.stop(step)
  local c = client()
  if not c then
    return { stopped = false }
  end
  -- Let pending requests (the accept command) complete before shutdown.
  wait_for(function()
    for _, r in pairs(c.requests or {}) do
      if r.type == 'pending' then
        return false
      end
    end
    return true
  end, 10000)
  local done = false
  require('opportune.lsp').stop_all(function()
    done = true
  end)
  wait_for(function()
    return done
  end, step.timeout or 20000)
  return { stopped = done }
end

co = coroutine.create(function()
  for i, step in ipairs(steps) do
    local name = nil
    for k in pairs(step) do
      -- "name" labels the step's record; the other key is the action.
      if actions[k] then
        name = k
      end
    end
    if not name then
      error('unknown step ' .. vim.inspect(step))
    end
    log(('step %d: %s'):format(i, name))
    local rec = actions[name](step)
    rec.action = name
    rec.name = step.name
    results.steps[i] = rec
  end
end)

vim.schedule(resume)
