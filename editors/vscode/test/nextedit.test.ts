import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  asInlineReplacement,
  hint,
  isNear,
  staleReason,
  tabAction,
  type Here,
  type NextEdit,
} from "../src/nextedit";

function edit(line: number, start: number, end: number, text: string, version: number | null = 3): NextEdit {
  return {
    id: `e${line}`,
    textDocument: { uri: "file:///w/geo.py", version },
    range: { start: { line, character: start }, end: { line, character: end } },
    newText: text,
    plainText: text,
    insertTextFormat: 1,
    kind: "add_parameter",
    title: "update call to area(w, h, depth)",
    command: { title: "Accept next edit", command: "opportune.acceptNextEdit", arguments: [`e${line}`] },
  };
}

const here = (line: number, character: number, version = 3): Here => ({
  uri: "file:///w/geo.py",
  version,
  position: { line, character },
});

describe("next edits in VS Code", () => {
  it("jumps to a far edit, applies a near one, refuses a stale one", () => {
    const pending = [edit(4, 15, 15, ", depth")];
    assert.equal(tabAction(pending, here(0, 3)).kind, "jump");
    assert.equal(tabAction(pending, here(4, 2)).kind, "apply");
    const stale = tabAction(pending, here(4, 2, 5));
    assert.ok(stale.kind === "stale");
    assert.match(stale.reason, /^stale: .*version 3, now 5/);
    assert.equal(tabAction([], here(0, 0)).kind, "none");
  });

  it("treats an edit in a workspace file that is not open as never stale", () => {
    assert.equal(staleReason(edit(1, 0, 0, "x", null), 9), undefined);
  });

  it("widens a near edit's range to the cursor so VS Code can show it as ghost text", () => {
    const line = "print(area(1, 2))";
    const e = edit(4, 15, 15, ", depth");
    assert.deepEqual(asInlineReplacement(e, { line: 4, character: 6 }, line), {
      range: { start: { line: 4, character: 6 }, end: { line: 4, character: 15 } },
      text: "area(1, 2, depth",
    });
    assert.deepEqual(asInlineReplacement(e, { line: 4, character: 17 }, line), {
      range: { start: { line: 4, character: 15 }, end: { line: 4, character: 17 } },
      text: ", depth))",
    });
    assert.equal(asInlineReplacement(e, { line: 3, character: 0 }, line), undefined);
    assert.ok(isNear(e, here(4, 0)) && !isNear(e, here(5, 0)));
    assert.match(hint(e, 2), /, depth .*Tab to go, 2 left/);
  });
});
