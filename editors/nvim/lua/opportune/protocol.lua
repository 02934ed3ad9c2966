--- Opportune's own LSP methods: their names, and a constructor for each one's params.
---
--- Generated from server/protocol.py by `python scripts/sync_editors.py`: edit that file, not this one.

local M = {}

--- The command every inline completion item carries, with the completion id as its only argument. A client
--- that runs it on accept (VS Code does) reports the acceptance with no code of its own.
M.ACCEPT_COMMAND = 'opportune.accept'

--- Method names.
M.methods = {
  did_show_completion = 'opportune/didShowCompletion',
  did_partially_accept_completion = 'opportune/didPartiallyAcceptCompletion',
  did_reject_completion = 'opportune/didRejectCompletion',
  status = 'opportune/status',
  set_enabled = 'opportune/setEnabled',
  report = 'opportune/report',
  next_edit = 'opportune/nextEdit',
  did_reject_next_edit = 'opportune/didRejectNextEdit',
}

--- Why a suggestion on screen went away without being accepted.
---@alias opportune.RejectReason "dismissed"|"typed_over"|"superseded"|"other"
M.reject_reasons = { 'dismissed', 'typed_over', 'superseded', 'other' }

--- An empty table is sent as a JSON object, never as an array.
---@param t table
---@return table
local function object(t)
  return next(t) == nil and vim.empty_dict() or t
end

--- The params of `opportune/didShowCompletion`: the ghost text became visible.
---@param id string The completion id (the argument of the item's `opportune.accept` command).
---@return table
function M.did_show_completion_params(id)
  return object({ id = id })
end

--- The params of `opportune/didPartiallyAcceptCompletion`: a word or line of the suggestion was accepted.
---@param id string The completion id.
---@param accepted_length integer Characters of `insertText` accepted so far (cumulative, not the last step).
---@return table
function M.did_partially_accept_completion_params(id, accepted_length)
  return object({ id = id, acceptedLength = accepted_length })
end

--- The params of `opportune/didRejectCompletion`: the suggestion went away without being accepted.
---@param id string The completion id.
---@param reason? opportune.RejectReason Why: dismissed, typed over, superseded by another suggestion, or other. The server takes any string (a newer client may know more reasons); clients send one of these.
---@return table
function M.did_reject_completion_params(id, reason)
  return object({ id = id, reason = reason })
end

--- The params of `opportune/status`: the server's state, for the editor's status bar (no parameters).
---@return table
function M.status_params()
  return object({})
end

---@class opportune.StatusResult
---@field enabled boolean Completions are on.
---@field experiment string The experiment running, or empty.
---@field arm string This install's arm in it, or empty.
---@field model string The model answering (a GGUF's name or a remote model id).
---@field lastLatencyMs number? Latency of the last suggestion returned, if any.
---@field busy boolean The model is loading or generating.

--- The params of `opportune/setEnabled`: switch completions on or off without stopping the server.
---@param enabled? boolean On (true) or off (false).
---@return table
function M.set_enabled_params(enabled)
  return object({ enabled = enabled })
end

---@class opportune.SetEnabledResult
---@field enabled boolean The state now in force.

--- The params of `opportune/report`: the CPO report of the server's telemetry store.
---@param since? string A look-back window such as "1d" or "7d", or an ISO date.
---@return table
function M.report_params(since)
  return object({ since = since })
end

---@class opportune.ReportResult
---@field text string The report for people (what `opportune report` prints).
---@field data table The same numbers for machines (what `opportune report --json` prints).

--- The params of `opportune/nextEdit`: the edits that follow from the one just made (the params of `textDocument/inlineCompletion`).
---@param text_document table The document the cursor is in.
---@param position table The cursor.
---@param context? table? The inline completion context (trigger kind); not used yet.
---@return table
function M.next_edit_params(text_document, position, context)
  return object({ textDocument = text_document, position = position, context = context })
end

---@class opportune.NextEditResult
---@field edits table[] Edits: id, textDocument {uri, version}, range, newText, plainText, insertTextFormat, kind, title, command (`opportune.acceptNextEdit` with the edit id).
---@field reason string Why there are none, for people.

--- The params of `opportune/didRejectNextEdit`: a next edit was dismissed.
---@param id string The next edit's id.
---@param reason? opportune.RejectReason Why, as for completions.
---@return table
function M.did_reject_next_edit_params(id, reason)
  return object({ id = id, reason = reason })
end

return M
