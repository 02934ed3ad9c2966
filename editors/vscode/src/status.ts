/**
 * What the status bar item says, from the extension's state and the server's `opportune/status` answer.
 * Pure formatting, no `vscode` import, so it is tested with node's test runner.
 */

import type { StatusResult } from "./protocol";

export type ServerState = "starting" | "running" | "stopped" | "failed";

export interface StatusView {
  text: string;
  tooltip: string;
}

export function formatLatency(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) {
    return "–";
  }
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

export function statusView(
  enabled: boolean,
  state: ServerState,
  status: StatusResult | undefined,
): StatusView {
  if (state === "failed") {
    return {
      text: "$(error) Opportune",
      tooltip: "The Opportune server could not start or stopped. See the Opportune output. Click to toggle.",
    };
  }
  if (!enabled) {
    return {
      text: "$(circle-slash) Opportune: off",
      tooltip: "Opportune inline completions are off. Click to turn them on.",
    };
  }
  if (state === "starting" || status === undefined) {
    return { text: "$(loading~spin) Opportune", tooltip: "Starting the Opportune server…" };
  }
  const serverOn = status.enabled;
  const arm = status.arm === "" ? "default" : status.arm;
  const parts = [serverOn ? "$(sparkle) Opportune" : "$(circle-slash) Opportune: off", arm];
  if (status.lastLatencyMs !== null) {
    parts.push(formatLatency(status.lastLatencyMs));
  }
  const tooltip = [
    `Opportune: ${serverOn ? "on" : "off"}`,
    `Experiment: ${status.experiment === "" ? "none" : status.experiment}`,
    `Arm: ${arm}`,
    `Model: ${status.model === "" ? "unknown" : status.model}${status.busy ? " (busy: loading or generating)" : ""}`,
    `Last latency: ${formatLatency(status.lastLatencyMs)}`,
    "Click to toggle.",
  ].join("\n");
  return { text: parts.join(" · "), tooltip };
}

/** Validates an `opportune/status` answer, so a server of another version cannot break the status bar. */
export function parseStatus(value: unknown): StatusResult | undefined {
  if (typeof value !== "object" || value === null) {
    return undefined;
  }
  const record = value as Record<string, unknown>;
  const text = (key: string): string => (typeof record[key] === "string" ? record[key] : "");
  const latency = record.lastLatencyMs;
  return {
    enabled: record.enabled !== false,
    experiment: text("experiment"),
    arm: text("arm"),
    model: text("model"),
    lastLatencyMs: typeof latency === "number" && Number.isFinite(latency) ? latency : null,
    busy: record.busy === true,
  };
}
