/**
 * The Opportune extensions to LSP: method names, params and results.
 *
 * Generated from server/protocol.py by `python scripts/sync_editors.py`: edit that file, not this one.
 * This module imports nothing from `vscode`, so the node tests and the server integration test use the
 * same definitions as the extension.
 */

/**
 * The command every inline completion item carries, with the completion id as its only argument. A client
 * that runs it on accept (VS Code does) reports the acceptance with no code of its own.
 */
export const ACCEPT_COMMAND = "opportune.accept";

export const Methods = {
  didShowCompletion: "opportune/didShowCompletion",
  didPartiallyAcceptCompletion: "opportune/didPartiallyAcceptCompletion",
  didRejectCompletion: "opportune/didRejectCompletion",
  status: "opportune/status",
  setEnabled: "opportune/setEnabled",
  report: "opportune/report",
  nextEdit: "opportune/nextEdit",
  didRejectNextEdit: "opportune/didRejectNextEdit",
} as const;

/** Why a suggestion on screen went away without being accepted. */
export type RejectReason = "dismissed" | "typed_over" | "superseded" | "other";

/** `opportune/didShowCompletion`: the ghost text became visible. */
export interface DidShowCompletionParams {
  /** The completion id (the argument of the item's `opportune.accept` command). */
  id: string;
}

/** `opportune/didPartiallyAcceptCompletion`: a word or line of the suggestion was accepted. */
export interface DidPartiallyAcceptCompletionParams {
  /** The completion id. */
  id: string;
  /** Characters of `insertText` accepted so far (cumulative, not the last step). */
  acceptedLength: number;
}

/** `opportune/didRejectCompletion`: the suggestion went away without being accepted. */
export interface DidRejectCompletionParams {
  /** The completion id. */
  id: string;
  /**
   * Why: dismissed, typed over, superseded by another suggestion, or other. The server takes any string (a
   * newer client may know more reasons); clients send one of these.
   */
  reason?: RejectReason;
}

/** `opportune/status`: the server's state, for the editor's status bar (no parameters). */
export type StatusParams = Record<string, never>;

/** The answer to `opportune/status`: what the editor's status bar shows. */
export interface StatusResult {
  /** Completions are on. */
  enabled: boolean;
  /** The experiment running, or empty. */
  experiment: string;
  /** This install's arm in it, or empty. */
  arm: string;
  /** The model answering (a GGUF's name or a remote model id). */
  model: string;
  /** Latency of the last suggestion returned, if any. */
  lastLatencyMs: number | null;
  /** The model is loading or generating. */
  busy: boolean;
}

/** `opportune/setEnabled`: switch completions on or off without stopping the server. */
export interface SetEnabledParams {
  /** On (true) or off (false). */
  enabled?: boolean;
}

/** The answer to `opportune/setEnabled`. */
export interface SetEnabledResult {
  /** The state now in force. */
  enabled: boolean;
}

/** `opportune/report`: the CPO report of the server's telemetry store. */
export interface ReportParams {
  /** A look-back window such as "1d" or "7d", or an ISO date. */
  since?: string;
}

/** The answer to `opportune/report`. */
export interface ReportResult {
  /** The report for people (what `opportune report` prints). */
  text: string;
  /** The same numbers for machines (what `opportune report --json` prints). */
  data: Record<string, unknown>;
}

/** A document by URI. */
export interface TextDocumentRef {
  /** The document's URI. */
  uri: string;
}

/** A zero-based line and UTF-16 column, as LSP counts them. */
export interface LinePosition {
  /** Zero-based line. */
  line: number;
  /** Zero-based UTF-16 column. */
  character: number;
}

/**
 * `opportune/nextEdit`: the edits that follow from the one just made (the params of
 * `textDocument/inlineCompletion`).
 */
export interface NextEditParams {
  /** The document the cursor is in. */
  textDocument: TextDocumentRef;
  /** The cursor. */
  position: LinePosition;
  /** The inline completion context (trigger kind); not used yet. */
  context?: Record<string, unknown> | null;
}

/** The answer to `opportune/nextEdit` (the shape of each edit: `server/nextedit/protocol.py`). */
export interface NextEditResult {
  /**
   * Edits: id, textDocument {uri, version}, range, newText, plainText, insertTextFormat, kind, title,
   * command (`opportune.acceptNextEdit` with the edit id).
   */
  edits: Record<string, unknown>[];
  /** Why there are none, for people. */
  reason: string;
}

/** `opportune/didRejectNextEdit`: a next edit was dismissed. */
export interface DidRejectNextEditParams {
  /** The next edit's id. */
  id: string;
  /** Why, as for completions. */
  reason?: RejectReason;
}

/**
 * The completion id of an item, taken from its command's first argument.
 *
 * Items without the Opportune command (another server, or a server that changed shape) yield undefined
 * and are simply not tracked.
 */
export function completionIdOf(
  command: { command: string; arguments?: unknown[] } | undefined,
): string | undefined {
  if (command?.command !== ACCEPT_COMMAND) {
    return undefined;
  }
  const first = command.arguments?.[0];
  return typeof first === "string" && first.length > 0 ? first : undefined;
}
