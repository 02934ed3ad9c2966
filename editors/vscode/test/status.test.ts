/** The status bar text and the validation of `opportune/status` answers. */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { completionIdOf } from "../src/protocol";
import { formatLatency, parseStatus, statusView } from "../src/status";

describe("status bar", () => {
  const status = {
    enabled: true,
    experiment: "debounce-2025",
    arm: "fast",
    model: "gemma3",
    lastLatencyMs: 87.4,
    busy: false,
  };

  it("shows on/off, the arm and the last latency", () => {
    const view = statusView(true, "running", status);
    assert.equal(view.text, "$(sparkle) Opportune · fast · 87 ms");
    assert.match(view.tooltip, /Experiment: debounce-2025/);
    assert.match(view.tooltip, /Model: gemma3/);
  });

  it("says off when the setting or the server says so", () => {
    assert.match(statusView(false, "stopped", undefined).text, /off/);
    assert.match(statusView(true, "running", { ...status, enabled: false }).text, /off/);
  });

  it("shows starting, failure and a missing latency", () => {
    assert.match(statusView(true, "starting", undefined).text, /loading/);
    assert.match(statusView(true, "failed", status).text, /error/);
    const view = statusView(true, "running", { ...status, arm: "", lastLatencyMs: null });
    assert.equal(view.text, "$(sparkle) Opportune · default");
  });

  it("says in the tooltip when the model is busy", () => {
    assert.doesNotMatch(statusView(true, "running", status).tooltip, /busy/);
    assert.match(statusView(true, "running", { ...status, busy: true }).tooltip, /Model: gemma3 \(busy/);
  });

  it("formats latencies", () => {
    assert.equal(formatLatency(null), "–");
    assert.equal(formatLatency(12.6), "13 ms");
    assert.equal(formatLatency(1530), "1.5 s");
  });

  it("parses status answers defensively", () => {
    assert.equal(parseStatus(null), undefined);
    assert.equal(parseStatus("x"), undefined);
    assert.deepEqual(parseStatus({ enabled: false, arm: 3, lastLatencyMs: "fast" }), {
      enabled: false,
      experiment: "",
      arm: "",
      model: "",
      lastLatencyMs: null,
      busy: false,
    });
    assert.deepEqual(parseStatus(status), status);
  });
});

describe("completionIdOf", () => {
  it("takes the id from the opportune.accept command only", () => {
    assert.equal(completionIdOf({ command: "opportune.accept", arguments: ["abc"] }), "abc");
    assert.equal(completionIdOf({ command: "other", arguments: ["abc"] }), undefined);
    assert.equal(completionIdOf({ command: "opportune.accept", arguments: [] }), undefined);
    assert.equal(completionIdOf({ command: "opportune.accept", arguments: [42] }), undefined);
    assert.equal(completionIdOf(undefined), undefined);
  });
});
