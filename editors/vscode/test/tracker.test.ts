/** The shown / partial / rejected bookkeeping, on a manual clock. */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { CompletionTracker, type Position, type RequestContext, type TypedSince } from "../src/tracker";
import { ManualTimers, RecordingSink } from "./fakes";

const SHOWN = 150;
const SETTLE = 400;

function setup(): { tracker: CompletionTracker; sink: RecordingSink; timers: ManualTimers } {
  const sink = new RecordingSink();
  const timers = new ManualTimers();
  const tracker = new CompletionTracker(sink, { shownDelayMs: SHOWN, settleMs: SETTLE }, timers);
  return { tracker, sink, timers };
}

function at(character: number, version = 1, line = 0, documentKey = "file:///a.py"): RequestContext {
  return { documentKey, version, position: { line, character } };
}

/** A document line whose text after column `from` is `typed`. */
function typedLine(line: string): TypedSince {
  return (anchor: Position) => line.slice(anchor.character);
}

const nothingTyped: TypedSince = () => "";

describe("CompletionTracker", () => {
  it("reports an item as shown once it survives the shown delay, and only once", () => {
    const { tracker, sink, timers } = setup();
    const generation = tracker.requestStarted(at(4), nothingTyped);
    tracker.itemsReturned(generation, at(4), [{ id: "c1", insertText: "foo()" }]);
    timers.advance(SHOWN - 1);
    assert.deepEqual(sink.sent, []);
    timers.advance(1);
    assert.deepEqual(sink.sent, [{ kind: "show", id: "c1" }]);
    timers.advance(10_000);
    assert.equal(sink.sent.length, 1);
    assert.equal(tracker.currentId, "c1");
  });

  it("drops an item superseded before the shown delay without any event", () => {
    const { tracker, sink, timers } = setup();
    const first = tracker.requestStarted(at(4), nothingTyped);
    tracker.itemsReturned(first, at(4), [{ id: "c1", insertText: "foo()" }]);
    timers.advance(SHOWN / 2);
    const second = tracker.requestStarted(at(5, 2), typedLine("    f"));
    tracker.itemsReturned(second, at(5, 2), [{ id: "c2", insertText: "oo()" }]);
    timers.advance(SHOWN + SETTLE);
    assert.deepEqual(sink.sent, [{ kind: "show", id: "c2" }]);
  });

  it("ignores the answer of a request that a newer request replaced", () => {
    const { tracker, sink, timers } = setup();
    const stale = tracker.requestStarted(at(4), nothingTyped);
    const fresh = tracker.requestStarted(at(5, 2), nothingTyped);
    tracker.itemsReturned(stale, at(4), [{ id: "old", insertText: "x" }]);
    tracker.itemsReturned(fresh, at(5, 2), [{ id: "new", insertText: "y" }]);
    timers.advance(SHOWN);
    assert.deepEqual(sink.sent, [{ kind: "show", id: "new" }]);
  });

  it("tracks only the first item, the one VS Code shows", () => {
    const { tracker, sink, timers } = setup();
    const generation = tracker.requestStarted(at(0), nothingTyped);
    tracker.itemsReturned(generation, at(0), [
      { id: "first", insertText: "a" },
      { id: "second", insertText: "b" },
    ]);
    timers.advance(SHOWN);
    assert.deepEqual(sink.sent, [{ kind: "show", id: "first" }]);
    assert.equal(tracker.accepted("second"), false);
  });

  it("rejects a shown item as superseded when re-requested with nothing typed, after the settle time", () => {
    const { tracker, sink, timers } = setup();
    const first = tracker.requestStarted(at(4), nothingTyped);
    tracker.itemsReturned(first, at(4), [{ id: "c1", insertText: "foo()" }]);
    timers.advance(SHOWN);
    tracker.requestStarted(at(4), typedLine("    "));
    timers.advance(SETTLE - 1);
    assert.deepEqual(sink.sent, [{ kind: "show", id: "c1" }]);
    timers.advance(1);
    assert.deepEqual(sink.sent.at(-1), { kind: "reject", id: "c1", reason: "superseded" });
  });

  it("leaves a typed-through suggestion to the server's inference", () => {
    const { tracker, sink, timers } = setup();
    const first = tracker.requestStarted(at(4), nothingTyped);
    tracker.itemsReturned(first, at(4), [{ id: "c1", insertText: "foo()" }]);
    timers.advance(SHOWN);
    tracker.requestStarted(at(6, 3), typedLine("    fo"));
    timers.advance(SETTLE * 2);
    assert.deepEqual(sink.sent, [{ kind: "show", id: "c1" }]);
    // Typed through one character, then diverged: still the server's to infer (a partial typed-through).
    const second = tracker.requestStarted(at(6, 3), nothingTyped);
    tracker.itemsReturned(second, at(6, 3), [{ id: "c2", insertText: "o()" }]);
    timers.advance(SHOWN);
    tracker.requestStarted(at(8, 5), typedLine("    fooX"));
    timers.advance(SETTLE * 2);
    assert.deepEqual(sink.sent, [
      { kind: "show", id: "c1" },
      { kind: "show", id: "c2" },
    ]);
  });

  it("rejects a shown item as typed_over when the typing diverged from its first character", () => {
    const { tracker, sink, timers } = setup();
    const first = tracker.requestStarted(at(4), nothingTyped);
    tracker.itemsReturned(first, at(4), [{ id: "c1", insertText: "foo()" }]);
    timers.advance(SHOWN);
    tracker.requestStarted(at(6, 3), typedLine("    xy"));
    timers.advance(SETTLE);
    assert.deepEqual(sink.sent.at(-1), { kind: "reject", id: "c1", reason: "typed_over" });
  });

  it("counts deleting back past the request position as typed_over", () => {
    const { tracker, sink, timers } = setup();
    const first = tracker.requestStarted(at(4), nothingTyped);
    tracker.itemsReturned(first, at(4), [{ id: "c1", insertText: "foo()" }]);
    timers.advance(SHOWN);
    tracker.requestStarted(at(3, 2), () => undefined);
    timers.advance(SETTLE);
    assert.deepEqual(sink.sent.at(-1), { kind: "reject", id: "c1", reason: "typed_over" });
  });

  it("compares the typing with the part of the item after the cursor when its range starts earlier", () => {
    const { tracker, sink, timers } = setup();
    const first = tracker.requestStarted(at(6), nothingTyped);
    // The item replaces the already typed "fo" (columns 4-6): insertText starts at column 4.
    tracker.itemsReturned(first, at(6), [
      { id: "c1", insertText: "foo()", anchor: { line: 0, character: 4 } },
    ]);
    timers.advance(SHOWN);
    // "f" matches the item's first character but not what follows the cursor ("o()").
    tracker.requestStarted(at(7, 2), typedLine("    fof"));
    timers.advance(SETTLE);
    assert.deepEqual(sink.sent.at(-1), { kind: "reject", id: "c1", reason: "typed_over" });
  });

  it("lets an accept that arrives after the next request win over the pending rejection", () => {
    const { tracker, sink, timers } = setup();
    const first = tracker.requestStarted(at(4), nothingTyped);
    tracker.itemsReturned(first, at(4), [{ id: "c1", insertText: "foo()" }]);
    timers.advance(SHOWN);
    // A request at the same place is about to reject it as superseded, when the accept command arrives.
    tracker.requestStarted(at(4), nothingTyped);
    timers.advance(SETTLE / 2);
    assert.equal(tracker.accepted("c1"), true);
    timers.advance(SETTLE * 2);
    assert.deepEqual(sink.sent, [{ kind: "show", id: "c1" }]);
  });

  it("sends shown before accepting an item accepted within the shown delay", () => {
    const { tracker, sink, timers } = setup();
    const generation = tracker.requestStarted(at(0), nothingTyped);
    tracker.itemsReturned(generation, at(0), [{ id: "quick", insertText: "pass" }]);
    timers.advance(10);
    assert.equal(tracker.accepted("quick"), true);
    timers.advance(10_000);
    assert.deepEqual(sink.sent, [{ kind: "show", id: "quick" }]);
    assert.equal(tracker.currentId, undefined);
    assert.equal(timers.pending, 0);
  });

  it("reports cumulative partial acceptance, capped at the item's length", () => {
    const { tracker, sink, timers } = setup();
    const generation = tracker.requestStarted(at(0), nothingTyped);
    tracker.itemsReturned(generation, at(0), [{ id: "c1", insertText: "return a + b" }]);
    timers.advance(SHOWN);
    assert.equal(tracker.partiallyAccepted(7), "c1");
    assert.equal(tracker.partiallyAccepted(2), "c1");
    assert.equal(tracker.partiallyAccepted(100), "c1");
    assert.equal(tracker.partiallyAccepted(0), undefined);
    assert.deepEqual(sink.sent, [
      { kind: "show", id: "c1" },
      { kind: "partial", id: "c1", acceptedLength: 7 },
      { kind: "partial", id: "c1", acceptedLength: 9 },
      { kind: "partial", id: "c1", acceptedLength: 12 },
    ]);
  });

  it("keeps a suggestion the server answers again for the same keystroke, without a second shown", () => {
    const { tracker, sink, timers } = setup();
    const first = tracker.requestStarted(at(4), nothingTyped);
    tracker.itemsReturned(first, at(4), [{ id: "c1", insertText: "foo()" }]);
    timers.advance(SHOWN);
    const again = tracker.requestStarted(at(4), nothingTyped);
    tracker.itemsReturned(again, at(4), [{ id: "c1", insertText: "foo()" }]);
    timers.advance(SETTLE * 2);
    assert.deepEqual(sink.sent, [{ kind: "show", id: "c1" }]);
    assert.equal(tracker.currentId, "c1");
    // It is still tracked: Escape now rejects it once.
    tracker.dismissed();
    assert.deepEqual(sink.sent.at(-1), { kind: "reject", id: "c1", reason: "dismissed" });
    assert.equal(sink.sent.length, 2);
  });

  it("does not report shown twice for an id answered again after typing through", () => {
    const { tracker, sink, timers } = setup();
    const first = tracker.requestStarted(at(4), nothingTyped);
    tracker.itemsReturned(first, at(4), [{ id: "c1", insertText: "foo()" }]);
    timers.advance(SHOWN);
    const next = tracker.requestStarted(at(5, 2), typedLine("    f"));
    tracker.itemsReturned(next, at(5, 2), [{ id: "c1", insertText: "oo()" }]);
    timers.advance(SHOWN + SETTLE);
    assert.deepEqual(sink.sent, [{ kind: "show", id: "c1" }]);
  });

  it("never rejects a partly accepted item: its partial outcome stands", () => {
    const { tracker, sink, timers } = setup();
    const first = tracker.requestStarted(at(0), nothingTyped);
    tracker.itemsReturned(first, at(0), [{ id: "c1", insertText: "return a + b" }]);
    timers.advance(SHOWN);
    tracker.partiallyAccepted(7);
    tracker.requestStarted(at(9, 3), typedLine("return xy"));
    timers.advance(SETTLE);
    const second = tracker.requestStarted(at(0, 4), nothingTyped);
    tracker.itemsReturned(second, at(0, 4), [{ id: "c2", insertText: "pass" }]);
    timers.advance(SHOWN);
    tracker.partiallyAccepted(2);
    tracker.dismissed();
    tracker.dispose();
    assert.deepEqual(sink.sent, [
      { kind: "show", id: "c1" },
      { kind: "partial", id: "c1", acceptedLength: 7 },
      { kind: "show", id: "c2" },
      { kind: "partial", id: "c2", acceptedLength: 2 },
    ]);
  });

  it("partial accept with nothing on screen sends nothing", () => {
    const { tracker, sink } = setup();
    assert.equal(tracker.partiallyAccepted(3), undefined);
    assert.deepEqual(sink.sent, []);
  });

  it("treats a cursor move without an edit as a dismissal, but not an edit's own cursor move", () => {
    const { tracker, sink, timers } = setup();
    const generation = tracker.requestStarted(at(4, 7), nothingTyped);
    tracker.itemsReturned(generation, at(4, 7), [{ id: "c1", insertText: "foo()" }]);
    timers.advance(SHOWN);
    tracker.cursorMoved(at(4, 7)); // the selection event of the request position itself
    tracker.cursorMoved(at(5, 8)); // typing: a new version, the next request decides
    assert.deepEqual(sink.sent, [{ kind: "show", id: "c1" }]);
    tracker.cursorMoved(at(9, 7)); // arrow key: same version, elsewhere
    assert.deepEqual(sink.sent.at(-1), { kind: "reject", id: "c1", reason: "dismissed" });
    assert.equal(tracker.currentId, undefined);
  });

  it("ignores cursor moves in another document", () => {
    const { tracker, sink, timers } = setup();
    const generation = tracker.requestStarted(at(4), nothingTyped);
    tracker.itemsReturned(generation, at(4), [{ id: "c1", insertText: "foo()" }]);
    timers.advance(SHOWN);
    tracker.cursorMoved(at(0, 1, 0, "file:///other.py"));
    assert.equal(tracker.currentId, "c1");
    assert.equal(sink.sent.length, 1);
  });

  it("a cursor move before the shown delay forgets the item silently", () => {
    const { tracker, sink, timers } = setup();
    const generation = tracker.requestStarted(at(4), nothingTyped);
    tracker.itemsReturned(generation, at(4), [{ id: "c1", insertText: "foo()" }]);
    tracker.cursorMoved(at(0));
    timers.advance(10_000);
    assert.deepEqual(sink.sent, []);
  });

  it("Escape dismisses immediately and counts the item as shown even before the delay", () => {
    const { tracker, sink, timers } = setup();
    const generation = tracker.requestStarted(at(4), nothingTyped);
    tracker.itemsReturned(generation, at(4), [{ id: "c1", insertText: "foo()" }]);
    timers.advance(20);
    tracker.dismissed();
    timers.advance(10_000);
    assert.deepEqual(sink.sent, [
      { kind: "show", id: "c1" },
      { kind: "reject", id: "c1", reason: "dismissed" },
    ]);
  });

  it("leaving the document dismisses its shown suggestion only", () => {
    const { tracker, sink, timers } = setup();
    const generation = tracker.requestStarted(at(4), nothingTyped);
    tracker.itemsReturned(generation, at(4), [{ id: "c1", insertText: "foo()" }]);
    timers.advance(SHOWN);
    tracker.documentLeft("file:///other.py");
    assert.equal(tracker.currentId, "c1");
    tracker.documentLeft("file:///a.py");
    assert.deepEqual(sink.sent.at(-1), { kind: "reject", id: "c1", reason: "dismissed" });
  });

  it("a request in another document dismisses the suggestion of the first", () => {
    const { tracker, sink, timers } = setup();
    const generation = tracker.requestStarted(at(4), nothingTyped);
    tracker.itemsReturned(generation, at(4), [{ id: "c1", insertText: "foo()" }]);
    timers.advance(SHOWN);
    tracker.requestStarted(at(0, 1, 0, "file:///b.py"), nothingTyped);
    timers.advance(SETTLE);
    assert.deepEqual(sink.sent.at(-1), { kind: "reject", id: "c1", reason: "dismissed" });
  });

  it("dispose flushes closing items with their own reason and the current one as other", () => {
    const { tracker, sink, timers } = setup();
    const first = tracker.requestStarted(at(4), nothingTyped);
    tracker.itemsReturned(first, at(4), [{ id: "c1", insertText: "foo()" }]);
    timers.advance(SHOWN);
    const second = tracker.requestStarted(at(5, 2), typedLine("    x"));
    tracker.itemsReturned(second, at(5, 2), [{ id: "c2", insertText: "yz" }]);
    timers.advance(SHOWN);
    tracker.dispose();
    assert.deepEqual(sink.sent, [
      { kind: "show", id: "c1" },
      { kind: "show", id: "c2" },
      { kind: "reject", id: "c1", reason: "typed_over" },
      { kind: "reject", id: "c2", reason: "other" },
    ]);
    assert.equal(timers.pending, 0);
  });

  it("an empty answer leaves nothing to track", () => {
    const { tracker, sink, timers } = setup();
    const generation = tracker.requestStarted(at(4), nothingTyped);
    tracker.itemsReturned(generation, at(4), []);
    timers.advance(10_000);
    assert.equal(tracker.currentId, undefined);
    assert.deepEqual(sink.sent, []);
  });

  it("setOptions changes the shown delay for later items", () => {
    const { tracker, sink, timers } = setup();
    tracker.setOptions({ shownDelayMs: 0 });
    const generation = tracker.requestStarted(at(4), nothingTyped);
    tracker.itemsReturned(generation, at(4), [{ id: "c1", insertText: "foo()" }]);
    timers.advance(0);
    assert.deepEqual(sink.sent, [{ kind: "show", id: "c1" }]);
  });
});
