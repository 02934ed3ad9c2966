/** Test doubles for the pure modules: a manual clock and a recording notification sink. */

import type {
  DidPartiallyAcceptCompletionParams,
  DidRejectCompletionParams,
  DidShowCompletionParams,
} from "../src/protocol";
import type { Timers, TrackerSink } from "../src/tracker";

interface Scheduled {
  due: number;
  callback: () => void;
}

export class ManualTimers implements Timers {
  now = 0;
  private nextHandle = 1;
  private readonly scheduled = new Map<number, Scheduled>();

  set(callback: () => void, ms: number): unknown {
    const handle = this.nextHandle++;
    this.scheduled.set(handle, { due: this.now + ms, callback });
    return handle;
  }

  clear(handle: unknown): void {
    if (typeof handle === "number") {
      this.scheduled.delete(handle);
    }
  }

  /** Moves time forward, running due callbacks in order of their due time. */
  advance(ms: number): void {
    const target = this.now + ms;
    for (;;) {
      let next: [number, Scheduled] | undefined;
      for (const entry of this.scheduled) {
        if (entry[1].due <= target && (next === undefined || entry[1].due < next[1].due)) {
          next = entry;
        }
      }
      if (next === undefined) {
        break;
      }
      this.scheduled.delete(next[0]);
      this.now = next[1].due;
      next[1].callback();
    }
    this.now = target;
  }

  get pending(): number {
    return this.scheduled.size;
  }
}

export type Sent =
  | ({ kind: "show" } & DidShowCompletionParams)
  | ({ kind: "partial" } & DidPartiallyAcceptCompletionParams)
  | ({ kind: "reject" } & DidRejectCompletionParams);

export class RecordingSink implements TrackerSink {
  readonly sent: Sent[] = [];

  didShow(params: DidShowCompletionParams): void {
    this.sent.push({ kind: "show", ...params });
  }

  didPartiallyAccept(params: DidPartiallyAcceptCompletionParams): void {
    this.sent.push({ kind: "partial", ...params });
  }

  didReject(params: DidRejectCompletionParams): void {
    this.sent.push({ kind: "reject", ...params });
  }
}
