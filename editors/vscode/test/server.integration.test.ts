/**
 * The extension's conversation with the REAL server, over the JSON-RPC library VS Code's language client
 * is built on (vscode-languageserver-protocol), with the extension's own settings mapping and suggestion
 * bookkeeping (src/settings.ts, src/tracker.ts) producing the notifications.
 *
 * It starts `opportune serve --backend fake --db <tmp>` (or the real embedded model with
 * OPPORTUNE_TEST_BACKEND=llama), types into a document keystroke by keystroke as VS Code would report it,
 * asks for inline completions, accepts one through `workspace/executeCommand opportune.accept` (what VS Code
 * does on Tab), partly accepts one, dismisses one, lets one be superseded, and then checks what the server's
 * telemetry store recorded, through `opportune report --json`.
 *
 * The server command: OPPORTUNE_SERVER (a path, or a JSON array like ["python", "-m", "opportune.server.cli"]),
 * default `opportune` on the PATH.
 */

import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";

import { TextDocument } from "vscode-languageserver-textdocument";
import {
  DidChangeConfigurationNotification,
  DidChangeTextDocumentNotification,
  DidOpenTextDocumentNotification,
  ExecuteCommandRequest,
  ExitNotification,
  InitializeRequest,
  InitializedNotification,
  InlineCompletionRequest,
  InlineCompletionTriggerKind,
  LogMessageNotification,
  ShowMessageNotification,
  ShutdownRequest,
  StreamMessageReader,
  StreamMessageWriter,
  TextDocumentSyncKind,
  createProtocolConnection,
  type InitializeResult,
  type InlineCompletionItem,
  type Position,
  type ProtocolConnection,
  type ShowMessageParams,
} from "vscode-languageserver-protocol/node";

import {
  ACCEPT_NEXT_EDIT_COMMAND,
  NEXT_EDIT_METHOD,
  tabAction,
  type AcceptNextEditResult,
  type Here,
  type NextEditAnswer,
} from "../src/nextedit";
import {
  ACCEPT_COMMAND,
  Methods,
  completionIdOf,
  type ReportResult,
  type StatusResult,
} from "../src/protocol";
import { readSettings, toServerOptions } from "../src/settings";
import { CompletionTracker, type RequestContext, type ReturnedItem } from "../src/tracker";
import { RecordingSink, type Sent } from "./fakes";

const BACKEND = process.env.OPPORTUNE_TEST_BACKEND ?? "fake";
const REAL_MODEL = BACKEND !== "fake";
const REQUEST_TIMEOUT_MS = REAL_MODEL ? 60_000 : 10_000;
const SHOWN_DELAY_MS = 40;
const SETTLE_MS = 80;

function serverCommand(): string[] {
  const raw = process.env.OPPORTUNE_SERVER?.trim();
  if (raw === undefined || raw === "") {
    return ["opportune"];
  }
  if (raw.startsWith("[")) {
    const parsed: unknown = JSON.parse(raw);
    if (!Array.isArray(parsed) || parsed.length === 0 || !parsed.every((p) => typeof p === "string")) {
      throw new Error(`OPPORTUNE_SERVER must be a path or a JSON array of strings, not ${raw}`);
    }
    return parsed;
  }
  return [raw];
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`${what}: no answer within ${ms} ms`));
    }, ms);
  });
  return Promise.race([promise, timeout]).finally(() => {
    clearTimeout(timer);
  });
}

/** The document as the editor holds it, sending each edit as an incremental didChange. */
class Editor {
  private doc: TextDocument;
  private offset: number;

  constructor(
    private readonly connection: ProtocolConnection,
    readonly uri: string,
    text: string,
  ) {
    this.doc = TextDocument.create(uri, "python", 1, text);
    this.offset = text.length;
  }

  async open(): Promise<void> {
    await this.connection.sendNotification(DidOpenTextDocumentNotification.type, {
      textDocument: {
        uri: this.uri,
        languageId: "python",
        version: this.doc.version,
        text: this.doc.getText(),
      },
    });
  }

  get cursor(): Position {
    return this.doc.positionAt(this.offset);
  }

  get version(): number {
    return this.doc.version;
  }

  get text(): string {
    return this.doc.getText();
  }

  /** Text between `from` and the cursor; undefined when the cursor is before it. */
  typedSince(from: Position): string | undefined {
    const start = this.doc.offsetAt(from);
    return start > this.offset ? undefined : this.doc.getText().slice(start, this.offset);
  }

  /** One change inserting `text` at the cursor (a keystroke, or an accepted suggestion). */
  async insert(text: string): Promise<void> {
    const at = this.cursor;
    const change = { range: { start: at, end: at }, text };
    this.doc = TextDocument.update(this.doc, [change], this.doc.version + 1);
    this.offset += text.length;
    await this.connection.sendNotification(DidChangeTextDocumentNotification.type, {
      textDocument: { uri: this.uri, version: this.doc.version },
      contentChanges: [change],
    });
  }

  /** Types `text` one character per change, with a human pause between keystrokes. */
  async type(text: string, pauseMs = 15): Promise<void> {
    for (const ch of text) {
      await this.insert(ch);
      await sleep(pauseMs);
    }
  }
}

function returned(item: InlineCompletionItem): ReturnedItem | undefined {
  const id = completionIdOf(item.command);
  if (id === undefined) {
    return undefined;
  }
  const insertText = typeof item.insertText === "string" ? item.insertText : item.insertText.value;
  return { id, insertText, anchor: item.range?.start };
}

describe(
  `the extension against the real server (${BACKEND} backend)`,
  { timeout: REAL_MODEL ? 600_000 : 120_000 },
  () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "opportune-vscode-"));
    const db = path.join(tmp, "telemetry.db");
    const stderrPath = path.join(tmp, "server.stderr.log");
    const command = serverCommand();
    const messages: ShowMessageParams[] = [];
    const sink = new RecordingSink();
    let child: ChildProcess;
    let exited: Promise<number | null>;
    let connection: ProtocolConnection;
    let tracker: CompletionTracker;
    let editor: Editor;
    let init: InitializeResult;
    // The notifications the tracker sent, in order, for the final cross-check with the store.
    const sent: Sent[] = sink.sent;

    function serverLog(): string {
      try {
        return fs.readFileSync(stderrPath, "utf8").slice(-4000);
      } catch {
        return "(no server log)";
      }
    }

    /** What the extension's middleware does around `provideInlineCompletionItems`. */
    async function complete(
      trigger: InlineCompletionTriggerKind = InlineCompletionTriggerKind.Automatic,
    ): Promise<InlineCompletionItem[]> {
      const context: RequestContext = {
        documentKey: editor.uri,
        version: editor.version,
        position: editor.cursor,
      };
      const generation = tracker.requestStarted(context, (from) => editor.typedSince(from));
      const result = await withTimeout(
        connection.sendRequest(InlineCompletionRequest.type, {
          textDocument: { uri: editor.uri },
          position: editor.cursor,
          context: { triggerKind: trigger },
        }),
        REQUEST_TIMEOUT_MS,
        "textDocument/inlineCompletion",
      );
      const items = result === null ? [] : Array.isArray(result) ? result : result.items;
      tracker.itemsReturned(
        generation,
        context,
        items.map(returned).filter((item): item is ReturnedItem => item !== undefined),
      );
      return items;
    }

    /** Asks until the server offers a suggestion (the real model may need a warm-up). */
    async function completeSomething(): Promise<InlineCompletionItem> {
      for (let attempt = 0; attempt < (REAL_MODEL ? 5 : 2); attempt++) {
        const items = await complete(
          attempt === 0 ? InlineCompletionTriggerKind.Automatic : InlineCompletionTriggerKind.Invoked,
        );
        const first = items[0];
        if (first !== undefined) {
          return first;
        }
      }
      assert.fail(
        `no suggestion at ${JSON.stringify(editor.cursor)} after:\n${editor.text}\n--- server log:\n${serverLog()}`,
      );
    }

    function idOf(item: InlineCompletionItem): string {
      const id = completionIdOf(item.command);
      assert.ok(id !== undefined, `item without an ${ACCEPT_COMMAND} command: ${JSON.stringify(item)}`);
      return id;
    }

    function textOf(item: InlineCompletionItem): string {
      return typeof item.insertText === "string" ? item.insertText : item.insertText.value;
    }

    before(async () => {
      const [program, ...prefix] = command;
      assert.ok(program !== undefined);
      const args = [...prefix, "serve", "--db", db];
      if (BACKEND === "fake") {
        args.push("--backend", "fake");
      } else if (BACKEND !== "llama") {
        args.push("--backend", BACKEND);
      }
      const env: NodeJS.ProcessEnv = { ...process.env, XDG_STATE_HOME: path.join(tmp, "state") };
      delete env.OPPORTUNE_CONFIG;
      const stderr = fs.openSync(stderrPath, "w");
      // stderr goes to a file: a piped stderr nobody reads would block the server once the pipe fills.
      child = spawn(program, args, { cwd: tmp, env, stdio: ["pipe", "pipe", stderr] });
      fs.closeSync(stderr);
      exited = new Promise((resolve) => {
        child.on("exit", (code) => {
          resolve(code);
        });
      });
      // Fail at once, naming the command, when the executable cannot be started.
      await new Promise<void>((resolve, reject) => {
        child.once("spawn", resolve);
        child.once("error", (error) => {
          const message = `cannot start ${command.join(" ")}: ${error.message} (set OPPORTUNE_SERVER)`;
          console.error(message); // node 20's runner may report only the cancelled tests
          reject(new Error(message));
        });
      });
      assert.ok(child.stdout !== null && child.stdin !== null);
      connection = createProtocolConnection(
        new StreamMessageReader(child.stdout),
        new StreamMessageWriter(child.stdin),
      );
      connection.onNotification(ShowMessageNotification.type, (params) => {
        messages.push(params);
      });
      connection.onNotification(LogMessageNotification.type, () => undefined);
      connection.listen();

      tracker = new CompletionTracker(
        {
          didShow: (params) => {
            sink.didShow(params);
            void connection.sendNotification(Methods.didShowCompletion, params);
          },
          didPartiallyAccept: (params) => {
            sink.didPartiallyAccept(params);
            void connection.sendNotification(Methods.didPartiallyAcceptCompletion, params);
          },
          didReject: (params) => {
            sink.didReject(params);
            void connection.sendNotification(Methods.didRejectCompletion, params);
          },
        },
        { shownDelayMs: SHOWN_DELAY_MS, settleMs: SETTLE_MS },
      );

      // Every section the extension can send, so that the server's validation sees each key we use.
      const { settings, problems } = readSettings(
        (key) =>
          ({
            "completion.deadlineMs": REAL_MODEL ? 5000 : 2000,
            "completion.maxTokens": 24,
            "completion.debounceMs": 0,
            "completion.contextTokens": 256,
            "completion.multiline": "never",
            "model.threads": 2,
            "telemetry.enabled": true,
            "telemetry.storeText": false,
          })[key],
      );
      assert.deepEqual(problems, []);
      init = await withTimeout(
        connection.sendRequest(InitializeRequest.type, {
          processId: process.pid,
          clientInfo: { name: "Visual Studio Code", version: "1.91.0" },
          // eslint-disable-next-line @typescript-eslint/no-deprecated -- still a required field of the type
          rootUri: null,
          workspaceFolders: null,
          initializationOptions: toServerOptions(settings),
          capabilities: {
            textDocument: {
              synchronization: { dynamicRegistration: false, didSave: false },
              inlineCompletion: { dynamicRegistration: false },
            },
            workspace: { executeCommand: { dynamicRegistration: false }, configuration: false },
            window: { showMessage: {} },
          },
        }),
        REQUEST_TIMEOUT_MS,
        "initialize",
      ).catch((error: unknown) => {
        throw new Error(`${String(error)}\n--- server log:\n${serverLog()}`);
      });
      await connection.sendNotification(InitializedNotification.type, {});

      editor = new Editor(
        connection,
        "file:///project/arith.py",
        [
          "import math",
          "",
          "",
          "def add(a, b):",
          "    return a + b",
          "",
          "",
          "def scale(values, factor):",
          "    return [v * factor for v in values]",
          "",
          "",
          "def norm(x, y):",
          "    return math.sqrt(x * x + y * y)",
          "",
          "",
          "",
        ].join("\n"),
      );
      await editor.open();
    });

    after(async () => {
      if (child.exitCode === null) {
        child.kill();
      }
      await exited;
      fs.rmSync(tmp, { recursive: true, force: true });
    });

    it("announces inline completion, incremental sync and the accept command", () => {
      const capabilities = init.capabilities;
      assert.ok(capabilities.inlineCompletionProvider, "no inlineCompletionProvider");
      const sync = capabilities.textDocumentSync;
      const change = typeof sync === "object" ? sync.change : sync;
      assert.equal(change, TextDocumentSyncKind.Incremental);
      // vscode-languageclient registers a VS Code command for each of these; VS Code's accept runs it.
      assert.ok(
        capabilities.executeCommandProvider?.commands.includes(ACCEPT_COMMAND),
        `executeCommandProvider must list ${ACCEPT_COMMAND}: ${JSON.stringify(capabilities.executeCommandProvider)}`,
      );
    });

    it("accepts the extension's initializationOptions without a complaint", () => {
      assert.deepEqual(messages, []);
    });

    let accepted = "";
    it("offers a suggestion that VS Code can accept with the opportune.accept command", async () => {
      await editor.type("def add_more(a, b):\n    ret");
      const item = await completeSomething();
      const id = idOf(item);
      const text = textOf(item);
      assert.ok(text.length > 0);
      if (!REAL_MODEL) {
        assert.equal(text, "urn a + b", "the fake backend copies the earlier body");
      }
      if (item.range !== undefined) {
        assert.deepEqual(item.range.end, editor.cursor, "the range ends at the cursor");
      }
      await sleep(SHOWN_DELAY_MS * 3);
      assert.deepEqual(sent.at(-1), { kind: "show", id });

      // VS Code inserts the text, then runs the item's command, which the language client forwards.
      await editor.insert(text);
      assert.equal(tracker.accepted(id), true);
      const result: unknown = await withTimeout(
        connection.sendRequest(ExecuteCommandRequest.type, { command: ACCEPT_COMMAND, arguments: [id] }),
        REQUEST_TIMEOUT_MS,
        "workspace/executeCommand",
      );
      assert.equal(result ?? null, null);
      accepted = text;
    });

    let partialLength = 0;
    it("reports a partial accept", async () => {
      await editor.type("\n\n\ndef scale_all(values, factor):\n    ret");
      const item = await completeSomething();
      const id = idOf(item);
      await sleep(SHOWN_DELAY_MS * 3);
      assert.deepEqual(sent.at(-1), { kind: "show", id });
      // VS Code's "accept next word": the first word of the suggestion enters the document.
      const word = /^\w+\s*/.exec(textOf(item))?.[0] ?? textOf(item).slice(0, 1);
      await editor.insert(word);
      assert.equal(tracker.partiallyAccepted(word.length), id);
      partialLength = word.length;
      assert.deepEqual(sent.at(-1), { kind: "partial", id, acceptedLength: word.length });
      // Typing on over the rest does not turn the partial accept into a rejection.
      await editor.type("§");
      await complete();
      await sleep(SETTLE_MS * 3);
      assert.ok(!sent.some((s) => s.kind === "reject" && s.id === id), JSON.stringify(sent));
    });

    it("reports a dismissal (Escape)", async () => {
      await editor.type("\n\n\ndef norm_all(x, y):\n    ret");
      const item = await completeSomething();
      const id = idOf(item);
      await sleep(SHOWN_DELAY_MS * 3);
      tracker.dismissed();
      assert.deepEqual(sent.at(-1), { kind: "reject", id, reason: "dismissed" });
    });

    it("reports a suggestion replaced at the same place as superseded, unless the server answers it again", async () => {
      await editor.type("\n\n\ndef add_again(a, b):\n    ret");
      const item = await completeSomething();
      const id = idOf(item);
      await sleep(SHOWN_DELAY_MS * 3);
      // The same keystroke asked again: the server repeats its answer, which stays on screen.
      const again = await complete(InlineCompletionTriggerKind.Invoked);
      await sleep(SETTLE_MS * 3);
      const repeated = again[0] !== undefined && completionIdOf(again[0].command) === id;
      const rejections = sent.filter((s) => s.kind === "reject" && s.id === id);
      if (repeated) {
        assert.deepEqual(rejections, []);
        assert.equal(sent.filter((s) => s.kind === "show" && s.id === id).length, 1);
      } else {
        assert.deepEqual(rejections, [{ kind: "reject", id, reason: "superseded" }]);
      }
      tracker.dismissed();
    });

    it("does not report a suggestion superseded before it could be seen", async () => {
      await editor.type("\n\n\ndef scale_again(values, factor):\n    re");
      const first = await complete();
      // A keystroke that diverges at once: the server infers a plain rejection for the unseen suggestion.
      await editor.insert("z");
      await complete();
      await sleep(SHOWN_DELAY_MS * 3);
      const firstId = first[0] === undefined ? undefined : completionIdOf(first[0].command);
      if (firstId !== undefined) {
        assert.ok(!sent.some((s) => s.id === firstId), `${firstId} was reported: ${JSON.stringify(sent)}`);
      }
      tracker.dismissed();
    });

    it("answers opportune/status with the fields the status bar shows", async () => {
      const status = await withTimeout(
        connection.sendRequest<StatusResult>(Methods.status, {}),
        REQUEST_TIMEOUT_MS,
        Methods.status,
      );
      assert.equal(status.enabled, true);
      assert.equal(typeof status.experiment, "string");
      assert.equal(typeof status.arm, "string");
      assert.equal(typeof status.model, "string");
      assert.ok(status.model.length > 0);
      assert.equal(typeof status.lastLatencyMs, "number");
    });

    it("switches completions off and on with opportune/setEnabled", async () => {
      const off = await connection.sendRequest<{ enabled: boolean }>(Methods.setEnabled, { enabled: false });
      assert.deepEqual(off, { enabled: false });
      const status = await connection.sendRequest<StatusResult>(Methods.status, {});
      assert.equal(status.enabled, false);
      await editor.type("\n\n\ndef add_off(a, b):\n    ret");
      const items = await complete(InlineCompletionTriggerKind.Invoked);
      assert.deepEqual(items, [], "no suggestion while switched off");
      const on = await connection.sendRequest<{ enabled: boolean }>(Methods.setEnabled, { enabled: true });
      assert.deepEqual(on, { enabled: true });
    });

    it("takes the extension's settings through didChangeConfiguration without a complaint", async () => {
      const { settings } = readSettings(
        (key) => ({ "completion.maxTokens": 16, "completion.debounceMs": 0 })[key],
      );
      await connection.sendNotification(DidChangeConfigurationNotification.type, {
        settings: { opportune: toServerOptions(settings) },
      });
      // A request after the notification proves it was processed before we look at the messages.
      await connection.sendRequest(Methods.status, {});
      assert.deepEqual(messages, []);
    });

    it("answers opportune/report with the text the report command shows", async () => {
      const report = await withTimeout(
        connection.sendRequest<ReportResult>(Methods.report, { since: "1d" }),
        REQUEST_TIMEOUT_MS,
        Methods.report,
      );
      assert.equal(typeof report.text, "string");
      assert.ok(report.text.length > 0);
      assert.equal(typeof report.data, "object");
    });

    it("offers next edits after a signature change: Tab jumps, applies, and the accept is recorded once", async () => {
      const uri = "file:///project/geo.py";
      let doc = TextDocument.create(
        uri,
        "python",
        1,
        "def area(w, h):\n    return w * h\n\n\nprint(area(1, 2))\n",
      );
      await connection.sendNotification(DidOpenTextDocumentNotification.type, {
        textDocument: { uri, languageId: "python", version: 1, text: doc.getText() },
      });
      const change = async (range: { start: Position; end: Position }, text: string): Promise<void> => {
        doc = TextDocument.update(doc, [{ range, text }], doc.version + 1);
        await connection.sendNotification(DidChangeTextDocumentNotification.type, {
          textDocument: { uri, version: doc.version },
          contentChanges: [{ range, text }],
        });
      };
      const at = { line: 0, character: 13 };
      await change({ start: at, end: at }, ", depth");
      const ask = (): Promise<NextEditAnswer> =>
        withTimeout(
          connection.sendRequest<NextEditAnswer>(NEXT_EDIT_METHOD, {
            textDocument: { uri },
            position: { line: 0, character: 20 },
            context: { triggerKind: 2 },
          }),
          REQUEST_TIMEOUT_MS,
          NEXT_EDIT_METHOD,
        );
      const result = await ask();
      assert.equal(result.edits.length, 1, JSON.stringify(result));
      const edit = result.edits[0];
      assert.ok(edit !== undefined);
      assert.equal(edit.command.command, ACCEPT_NEXT_EDIT_COMMAND);
      // From the signature, Tab jumps to the call; there, Tab applies it.
      const here = (line: number, character: number): Here => ({
        uri,
        version: doc.version,
        position: { line, character },
      });
      assert.equal(tabAction(result.edits, here(0, 20)).kind, "jump");
      const action = tabAction(result.edits, here(edit.range.start.line, edit.range.start.character));
      assert.equal(action.kind, "apply");
      await change(edit.range, edit.plainText);
      assert.equal(doc.getText().split("\n")[4], "print(area(1, 2, depth))");
      const accept = (): Promise<AcceptNextEditResult> =>
        connection.sendRequest(ExecuteCommandRequest.type, {
          command: ACCEPT_NEXT_EDIT_COMMAND,
          arguments: [edit.id],
        }) as Promise<AcceptNextEditResult>;
      assert.deepEqual(await accept(), { accepted: true, reason: "" });
      const again = await accept();
      assert.equal(again.accepted, false);
      assert.match(again.reason, /already applied/);
      // Nothing is left, and an edit kept from before is refused as stale.
      assert.deepEqual((await ask()).edits, []);
      assert.equal(tabAction(result.edits, here(4, 15)).kind, "stale");
    });

    it("shuts down cleanly", async () => {
      tracker.dispose();
      await withTimeout(connection.sendRequest(ShutdownRequest.type), REQUEST_TIMEOUT_MS, "shutdown");
      await connection.sendNotification(ExitNotification.type);
      const code = await withTimeout(exited, 20_000, "exit");
      connection.dispose();
      assert.equal(code, 0, serverLog());
    });

    it("recorded the shown, accepted and partly accepted suggestions in the telemetry store", () => {
      const [program, ...prefix] = command;
      assert.ok(program !== undefined);
      const result = spawnSync(program, [...prefix, "report", "--db", db, "--json"], {
        cwd: tmp,
        env: { ...process.env, XDG_STATE_HOME: path.join(tmp, "state") },
        encoding: "utf8",
        maxBuffer: 16 * 1024 * 1024,
        timeout: 120_000,
      });
      assert.equal(result.status, 0, result.stderr);
      const report = JSON.parse(result.stdout) as {
        groups: {
          funnel: {
            opportunities: number;
            attempts: number;
            shown: number;
            accepted: number;
            accepted_chars: number;
          };
        }[];
      };
      const funnel = report.groups[0]?.funnel;
      assert.ok(funnel !== undefined, result.stdout);
      const shownIds = new Set(sent.filter((s) => s.kind === "show").map((s) => s.id));
      assert.equal(
        funnel.shown,
        shownIds.size,
        `shown: ${JSON.stringify(funnel)} vs ${JSON.stringify(sent)}`,
      );
      // One full accept and one partial accept; the dismissed and superseded ones are not accepted.
      assert.equal(funnel.accepted, 2, JSON.stringify(funnel));
      assert.equal(funnel.accepted_chars, accepted.length + partialLength, JSON.stringify(funnel));
      assert.ok(funnel.attempts >= shownIds.size, JSON.stringify(funnel));
      assert.ok(
        funnel.opportunities >= funnel.attempts / 2 && funnel.opportunities > 20,
        JSON.stringify(funnel),
      );
    });
  },
);
