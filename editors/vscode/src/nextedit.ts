/**
 * Next edits in the editor, without `vscode`: what Tab does with the pending edits, and how an edit on the
 * cursor's line becomes an inline completion that replaces a range.
 *
 * An edit on the cursor's line is shown as ghost text (VS Code's inline completion with a range: the range
 * is widened to reach the cursor, as VS Code requires). A far edit (another line or file) is marked in the
 * gutter; Tab jumps to it, and Tab again there applies it. An edit computed for another version of its
 * document is stale: it is refused with the reason and the server is asked again.
 */

import { Methods } from "./protocol";

/** The method names come from the generated protocol module; the edit's shape is server/nextedit/protocol.py. */
export const NEXT_EDIT_METHOD = Methods.nextEdit;
export const DID_REJECT_NEXT_EDIT_METHOD = Methods.didRejectNextEdit;
/** The command every next edit carries; running it records the edit accepted (and applies it if needed). */
export const ACCEPT_NEXT_EDIT_COMMAND = "opportune.acceptNextEdit";

export interface LspPosition {
  line: number;
  character: number;
}

export interface LspRange {
  start: LspPosition;
  end: LspPosition;
}

/** One edit of an `opportune/nextEdit` answer. */
export interface NextEdit {
  id: string;
  /** `version` is null for a workspace file that is not open. */
  textDocument: { uri: string; version: number | null };
  range: LspRange;
  /** May hold snippet placeholders (`insertTextFormat` 2); `plainText` is the same without them. */
  newText: string;
  plainText: string;
  insertTextFormat: 1 | 2;
  kind: string;
  title: string;
  command: { title: string; command: string; arguments?: unknown[] };
}

/** `opportune/nextEdit` takes the params of `textDocument/inlineCompletion`. */
export interface NextEditParams {
  textDocument: { uri: string };
  position: LspPosition;
  context: { triggerKind: 1 | 2 };
}

export interface NextEditAnswer {
  edits: NextEdit[];
  /** Why there are none, for people. */
  reason: string;
}

/** What `opportune.acceptNextEdit` answers. */
export interface AcceptNextEditResult {
  accepted: boolean;
  reason: string;
}

export interface Here {
  uri: string;
  version: number;
  position: LspPosition;
}

export type TabAction =
  | { kind: "none" }
  | { kind: "jump"; edit: NextEdit }
  | { kind: "apply"; edit: NextEdit }
  | { kind: "stale"; edit: NextEdit; reason: string };

function before(a: LspPosition, b: LspPosition): boolean {
  return a.line < b.line || (a.line === b.line && a.character < b.character);
}

/** Whether `edit` is on the line of the cursor, in the cursor's document. */
export function isNear(edit: NextEdit, here: Here): boolean {
  return (
    edit.textDocument.uri === here.uri &&
    edit.range.start.line === here.position.line &&
    edit.range.end.line === here.position.line
  );
}

/** The reason `edit` no longer applies to the document at `version`, if it does not. */
export function staleReason(edit: NextEdit, version: number | undefined): string | undefined {
  const wanted = edit.textDocument.version;
  if (wanted === null || version === undefined || wanted === version) {
    return undefined;
  }
  return `stale: the document changed since this edit was computed (version ${wanted}, now ${version})`;
}

/** What Tab does with the first pending edit: jump to a far one, apply a near one, or refuse a stale one. */
export function tabAction(pending: readonly NextEdit[], here: Here): TabAction {
  const edit = pending[0];
  if (edit === undefined) {
    return { kind: "none" };
  }
  if (!isNear(edit, here)) {
    return { kind: "jump", edit };
  }
  const reason = staleReason(edit, here.version);
  return reason === undefined ? { kind: "apply", edit } : { kind: "stale", edit, reason };
}

/**
 * A near edit as an inline completion: the range to replace and its text, widened to the cursor (VS Code
 * shows an inline completion only when its range contains the cursor). `lineText` is the cursor's line.
 */
export function asInlineReplacement(
  edit: NextEdit,
  cursor: LspPosition,
  lineText: string,
): { range: LspRange; text: string } | undefined {
  const { start, end } = edit.range;
  if (start.line !== cursor.line || end.line !== cursor.line) {
    return undefined;
  }
  if (before(cursor, start)) {
    return {
      range: { start: cursor, end },
      text: lineText.slice(cursor.character, start.character) + edit.plainText,
    };
  }
  if (before(end, cursor)) {
    return {
      range: { start, end: cursor },
      text: edit.plainText + lineText.slice(end.character, cursor.character),
    };
  }
  return { range: { start, end }, text: edit.plainText };
}

/** The gutter hint of a far edit: what it does and how many are left. */
export function hint(edit: NextEdit, left: number): string {
  const shown = edit.plainText === "" ? "⌫" : edit.plainText;
  return ` → ${shown}  (${edit.title}; Tab to go, ${left} left)`;
}
