/**
 * Shown / partly accepted / rejected bookkeeping for the suggestions VS Code displays.
 *
 * VS Code's stable API tells an inline completion provider neither when its ghost text became visible nor
 * when it went away, so the outcome of each suggestion is reconstructed from what the extension does see:
 *
 * - a suggestion returned to VS Code and not replaced by a newer request within `shownDelayMs` is counted
 *   as shown (a response superseded sooner most likely never reached the screen, or was not seen);
 * - acceptance comes from the item's `opportune.accept` command, which VS Code runs after inserting the
 *   text; a partial accept (word, line) from our wrappers around VS Code's partial-accept commands;
 * - a newer request while a suggestion is on screen closes it: `superseded` when nothing was typed since
 *   (a re-request at the same place), `typed_over` when the typing diverged from its first character.
 *   When the user typed through part of it, nothing is reported: the server sees those edits and infers
 *   the typed-through characters itself, and an explicit rejection would override that inference;
 * - the cursor moving without an edit, Escape (our keybinding), or leaving the editor: `dismissed`;
 * - a suggestion partly accepted is never reported rejected afterwards: its partial outcome stands.
 *
 * Because the accept command and the request triggered by the inserted text race, a replaced suggestion
 * is only reported rejected after `settleMs`; an accept arriving meanwhile wins.
 *
 * The module imports nothing from `vscode` so that it is tested with node's test runner and a fake clock.
 */

import type {
  DidPartiallyAcceptCompletionParams,
  DidRejectCompletionParams,
  DidShowCompletionParams,
  RejectReason,
} from "./protocol";

/** Where the notifications go (the language client in the extension, a recorder in tests). */
export interface TrackerSink {
  didShow(params: DidShowCompletionParams): void;
  didPartiallyAccept(params: DidPartiallyAcceptCompletionParams): void;
  didReject(params: DidRejectCompletionParams): void;
}

/** Timer functions, injected so tests control time. */
export interface Timers {
  set(callback: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

export const realTimers: Timers = {
  set: (callback, ms) => setTimeout(callback, ms),
  clear: (handle) => {
    clearTimeout(handle as ReturnType<typeof setTimeout>);
  },
};

export interface Position {
  line: number;
  character: number;
}

/** Where a request was made: the document (any stable key, e.g. its URI), its version, the cursor. */
export interface RequestContext {
  documentKey: string;
  version: number;
  position: Position;
}

/** A suggestion as returned to VS Code. `anchor` is where `insertText` starts (its range's start). */
export interface ReturnedItem {
  id: string;
  insertText: string;
  anchor?: Position;
}

/**
 * Text between `from` (where the previous request was made) and the current cursor of the requesting
 * document, or undefined when the cursor is before `from` (the user deleted or moved back).
 */
export type TypedSince = (from: Position) => string | undefined;

export interface TrackerOptions {
  shownDelayMs: number;
  settleMs: number;
}

export const defaultTrackerOptions: TrackerOptions = { shownDelayMs: 150, settleMs: 400 };

type State = "pending" | "shown";

const SHOWN_IDS_KEPT = 64;

interface Tracked {
  id: string;
  insertText: string;
  anchor: Position;
  context: RequestContext;
  state: State;
  acceptedLength: number;
  timer: unknown;
  /** Set once the suggestion is closing: the reason reported if no accept arrives in time. */
  closeReason?: RejectReason;
}

/** The part of the suggestion after the request's cursor (`insertText` may start before it, at `anchor`). */
function remainingAt(tracked: Tracked): string {
  const { anchor, context, insertText } = tracked;
  const before = anchor.line === context.position.line ? context.position.character - anchor.character : 0;
  return insertText.slice(Math.max(0, before));
}

function samePosition(a: Position, b: Position): boolean {
  return a.line === b.line && a.character === b.character;
}

export class CompletionTracker {
  /** The suggestion VS Code is showing or about to show; at most one at a time. */
  private current: Tracked | undefined;
  /** Suggestions that went away, waiting `settleMs` for a late accept before being reported rejected. */
  private readonly closing = new Map<string, Tracked>();
  /** Ids already reported shown (the latest few), so that a suggestion answered again is not re-sent. */
  private readonly shownIds = new Set<string>();
  private generation = 0;
  private options: TrackerOptions;

  constructor(
    private readonly sink: TrackerSink,
    options: Partial<TrackerOptions> = {},
    private readonly timers: Timers = realTimers,
  ) {
    this.options = { ...defaultTrackerOptions, ...options };
  }

  setOptions(options: Partial<TrackerOptions>): void {
    this.options = { ...this.options, ...options };
  }

  /**
   * A new inline completion request starts. Whatever was on screen is replaced by its answer.
   * Returns a generation number to hand back to `itemsReturned`.
   */
  requestStarted(context: RequestContext, typedSince: TypedSince): number {
    this.generation += 1;
    const previous = this.current;
    if (previous !== undefined) {
      this.current = undefined;
      this.timers.clear(previous.timer);
      if (previous.state === "shown") {
        const reason = this.replacementReason(previous, context, typedSince);
        if (reason !== undefined) {
          this.close(previous, reason);
        }
      }
      // A pending suggestion replaced before `shownDelayMs` is treated as never seen: no event at all.
    }
    return this.generation;
  }

  /** The answer to the request of `generation` reached VS Code. VS Code shows the first item. */
  itemsReturned(generation: number, context: RequestContext, items: readonly ReturnedItem[]): void {
    if (generation !== this.generation) {
      return; // a newer request exists; VS Code ignores this answer too
    }
    const first = items[0];
    if (first === undefined) {
      return;
    }
    // The server answers a repeated request for the same keystroke with the same suggestion: it is still
    // the one on screen, so it is neither rejected nor shown a second time.
    const revived = this.closing.get(first.id);
    if (revived !== undefined) {
      this.timers.clear(revived.timer);
      this.closing.delete(first.id);
    }
    const alreadyShown = revived !== undefined || this.shownIds.has(first.id);
    const tracked: Tracked = {
      id: first.id,
      insertText: first.insertText,
      anchor: first.anchor ?? context.position,
      context,
      state: alreadyShown ? "shown" : "pending",
      acceptedLength: revived?.acceptedLength ?? 0,
      timer: undefined,
    };
    if (!alreadyShown) {
      tracked.timer = this.timers.set(() => {
        this.markShown(tracked);
      }, this.options.shownDelayMs);
    }
    this.current = tracked;
  }

  /**
   * The `opportune.accept` command ran for `id`. Returns true when the id was one we tracked.
   * An accept before the shown delay elapsed still means the suggestion was seen: shown is sent first.
   */
  accepted(id: string): boolean {
    const closing = this.closing.get(id);
    if (closing !== undefined) {
      this.timers.clear(closing.timer);
      this.closing.delete(id);
      return true;
    }
    const current = this.current;
    if (current?.id !== id) {
      return false;
    }
    this.timers.clear(current.timer);
    this.markShown(current);
    this.current = undefined;
    return true;
  }

  /**
   * Part of the visible suggestion (a word, a line) was accepted: `insertedChars` characters entered the
   * document. Reports the cumulative accepted length. Returns the id it applied to, if any.
   */
  partiallyAccepted(insertedChars: number): string | undefined {
    const current = this.current;
    if (current === undefined || insertedChars <= 0) {
      return undefined;
    }
    this.timers.clear(current.timer);
    this.markShown(current);
    current.acceptedLength = Math.min(current.insertText.length, current.acceptedLength + insertedChars);
    this.sink.didPartiallyAccept({ id: current.id, acceptedLength: current.acceptedLength });
    return current.id;
  }

  /**
   * The cursor or selection moved in `context.documentKey`. Without an edit in between (same document
   * version) and away from where the suggestion was requested, the ghost text is gone: dismissed.
   */
  cursorMoved(context: RequestContext): void {
    const current = this.current;
    if (
      current?.context.documentKey !== context.documentKey ||
      current.context.version !== context.version ||
      samePosition(current.context.position, context.position)
    ) {
      return;
    }
    this.dropCurrent("dismissed");
  }

  /** Escape while the suggestion was visible (the keybinding's when-clause guarantees it was). */
  dismissed(): void {
    const current = this.current;
    if (current === undefined) {
      return;
    }
    this.timers.clear(current.timer);
    this.markShown(current);
    this.dropCurrent("dismissed");
  }

  /** The user left the editor or closed the document the suggestion was in. */
  documentLeft(documentKey: string): void {
    if (this.current?.context.documentKey === documentKey) {
      this.dropCurrent("dismissed");
    }
  }

  /** The id VS Code is showing (or about to), for diagnostics and tests. */
  get currentId(): string | undefined {
    return this.current?.id;
  }

  /** Sends every outstanding outcome now (the extension or the server is stopping). */
  dispose(): void {
    for (const tracked of [...this.closing.values()]) {
      this.timers.clear(tracked.timer);
      this.closing.delete(tracked.id);
      this.sink.didReject({ id: tracked.id, reason: tracked.closeReason ?? "other" });
    }
    if (this.current !== undefined) {
      this.dropCurrent("other");
    }
  }

  /** Why a newer request replaced `previous`, or undefined to leave the outcome to the server. */
  private replacementReason(
    previous: Tracked,
    context: RequestContext,
    typedSince: TypedSince,
  ): RejectReason | undefined {
    if (previous.acceptedLength > 0) {
      return undefined; // partly accepted: that outcome stands
    }
    if (previous.context.documentKey !== context.documentKey) {
      return "dismissed";
    }
    const typed = typedSince(previous.context.position);
    if (typed === undefined) {
      return "typed_over"; // deleted or moved back before where it was offered
    }
    if (typed === "") {
      return "superseded";
    }
    return typed.startsWith(remainingAt(previous).slice(0, 1)) ? undefined : "typed_over";
  }

  private markShown(tracked: Tracked): void {
    if (tracked.state === "pending") {
      tracked.state = "shown";
      this.shownIds.add(tracked.id);
      if (this.shownIds.size > SHOWN_IDS_KEPT) {
        const oldest = this.shownIds.values().next();
        if (oldest.done !== true) {
          this.shownIds.delete(oldest.value);
        }
      }
      this.sink.didShow({ id: tracked.id });
    }
  }

  /** Ends the current suggestion now: rejected with `reason` if it was shown, forgotten otherwise. */
  private dropCurrent(reason: RejectReason): void {
    const current = this.current;
    if (current === undefined) {
      return;
    }
    this.current = undefined;
    this.timers.clear(current.timer);
    if (current.state === "shown" && current.acceptedLength === 0) {
      this.sink.didReject({ id: current.id, reason });
    }
  }

  private close(tracked: Tracked, reason: RejectReason): void {
    tracked.closeReason = reason;
    tracked.timer = this.timers.set(() => {
      if (this.closing.delete(tracked.id)) {
        this.sink.didReject({ id: tracked.id, reason });
      }
    }, this.options.settleMs);
    this.closing.set(tracked.id, tracked);
  }
}
