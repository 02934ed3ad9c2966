/**
 * Waiting for the local dashboard to answer before opening it in the browser. No `vscode` import.
 */

import * as http from "node:http";

/** True when `url` answers an HTTP GET (any status) within `timeoutMs`. */
export function answers(url: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const request = http.get(url, { timeout: timeoutMs }, (response) => {
      response.resume(); // drain, so the socket is released
      resolve(true);
    });
    request.on("timeout", () => {
      request.destroy();
      resolve(false);
    });
    request.on("error", () => {
      resolve(false);
    });
  });
}

/** Polls `url` until it answers or `totalMs` passes; true when it answered. */
export async function waitUntilAnswers(url: string, totalMs: number, intervalMs = 250): Promise<boolean> {
  const deadline = Date.now() + totalMs;
  while (Date.now() < deadline) {
    if (await answers(url, Math.min(1000, Math.max(1, deadline - Date.now())))) {
      return true;
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  return false;
}
