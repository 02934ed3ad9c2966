/**
 * The Opportune extensions to LSP, as method names and parameter shapes.
 *
 * This module imports nothing from `vscode`, so the node tests and the server integration test use the
 * same definitions as the extension. The shapes follow the server's protocol (see editors/vscode/README.md).
 */

/** The command every completion item carries; running it (VS Code does, on accept) reports acceptance. */
export const ACCEPT_COMMAND = "opportune.accept";

export const Methods = {
  didShowCompletion: "opportune/didShowCompletion",
  didPartiallyAcceptCompletion: "opportune/didPartiallyAcceptCompletion",
  didRejectCompletion: "opportune/didRejectCompletion",
  report: "opportune/report",
  status: "opportune/status",
  setEnabled: "opportune/setEnabled",
} as const;

/** Why a suggestion that was on screen went away without being accepted. */
export type RejectReason = "dismissed" | "typed_over" | "superseded" | "other";

export interface DidShowCompletionParams {
  id: string;
}

export interface DidPartiallyAcceptCompletionParams {
  id: string;
  /** Characters of `insertText` accepted so far (cumulative, not the last step). */
  acceptedLength: number;
}

export interface DidRejectCompletionParams {
  id: string;
  reason: RejectReason;
}

export interface ReportParams {
  /** A look-back window such as "1d" or "7d". */
  since?: string;
  json?: boolean;
}

export interface ReportResult {
  text: string;
  data: Record<string, unknown>;
}

export interface StatusResult {
  enabled: boolean;
  experiment: string;
  arm: string;
  model: string;
  lastLatencyMs: number | null;
}

export interface SetEnabledParams {
  enabled: boolean;
}

export interface SetEnabledResult {
  enabled: boolean;
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
