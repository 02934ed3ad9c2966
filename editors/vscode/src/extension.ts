/**
 * The Opportune VS Code extension: starts `opportune serve`, lets vscode-languageclient provide the inline
 * completions, and reports what happened to each suggestion (shown, partly accepted, rejected) so that the
 * server's telemetry can compute characters per opportunity.
 *
 * Acceptance needs no code here: every item carries the `opportune.accept` command, which the server lists
 * in its `executeCommandProvider`, so vscode-languageclient registers it and VS Code's accept runs it as a
 * `workspace/executeCommand`. The middleware only watches it go by, to close the bookkeeping.
 */

import * as os from "node:os";
import * as vscode from "vscode";
import {
  CancellationTokenSource,
  DidChangeConfigurationNotification,
  LanguageClient,
  State,
  TransportKind,
  type LanguageClientOptions,
  type Middleware,
  type ServerOptions,
} from "vscode-languageclient/node";

import { waitUntilAnswers, answers } from "./net";
import {
  ACCEPT_NEXT_EDIT_COMMAND,
  NEXT_EDIT_METHOD,
  asInlineReplacement,
  hint,
  tabAction,
  type Here,
  type NextEdit,
  type NextEditAnswer,
} from "./nextedit";
import {
  ACCEPT_COMMAND,
  Methods,
  completionIdOf,
  type ReportParams,
  type ReportResult,
  type SetEnabledResult,
  type StatusResult,
} from "./protocol";
import {
  dashboardCommand,
  dashboardUrl,
  needsRestart,
  readSettings,
  serveCommand,
  toServerOptions,
  trustAwareReader,
  type CommandLine,
  type ExtensionSettings,
} from "./settings";
import { parseStatus, statusView, type ServerState } from "./status";
import { CompletionTracker, type Position, type RequestContext, type ReturnedItem } from "./tracker";

const STATUS_POLL_MS = 15_000;
const STATUS_REQUEST_TIMEOUT_MS = 5_000;
const DASHBOARD_START_TIMEOUT_MS = 30_000;
/** Quiet time after an edit before next edits are asked for (they follow an edit, not each keystroke). */
const NEXT_EDIT_DELAY_MS = 400;

function toPosition(position: vscode.Position): Position {
  return { line: position.line, character: position.character };
}

function requestContext(document: vscode.TextDocument, position: vscode.Position): RequestContext {
  return { documentKey: document.uri.toString(), version: document.version, position: toPosition(position) };
}

function returnedItem(item: vscode.InlineCompletionItem): ReturnedItem | undefined {
  const id = completionIdOf(item.command);
  if (id === undefined) {
    return undefined;
  }
  const insertText = typeof item.insertText === "string" ? item.insertText : item.insertText.value;
  return { id, insertText, anchor: item.range === undefined ? undefined : toPosition(item.range.start) };
}

function readWorkspaceSettings(): { settings: ExtensionSettings; problems: string[] } {
  const configuration = vscode.workspace.getConfiguration("opportune");
  // Restricted mode: a repository's own settings cannot choose the program, its arguments, the model file
  // or the telemetry store (VS Code filters them too, through restrictedConfigurations in package.json).
  const read = trustAwareReader(
    (key) => configuration.get(key),
    (key) => configuration.inspect(key),
    vscode.workspace.isTrusted,
  );
  return readSettings(read, {
    home: os.homedir(),
    workspaceFolder: vscode.workspace.workspaceFolders?.[0]?.uri.fsPath,
  });
}

class OpportuneExtension implements vscode.Disposable {
  private readonly disposables: { dispose(): unknown }[] = [];
  private readonly log: vscode.LogOutputChannel;
  private readonly reportChannel: vscode.OutputChannel;
  private readonly statusItem: vscode.StatusBarItem;
  private readonly tracker: CompletionTracker;
  private settings: ExtensionSettings;
  private client: LanguageClient | undefined;
  /** The command line of the running server, to tell whether new settings need a restart. */
  private startedWith: CommandLine | undefined;
  private serverState: ServerState = "stopped";
  private lastStatus: StatusResult | undefined;
  private statusRefresh: ReturnType<typeof setTimeout> | undefined;
  private readonly statusPoll: ReturnType<typeof setInterval>;
  private dashboardTerminal: vscode.Terminal | undefined;
  private reportedProblems = "";
  /** The document of the active editor, whose suggestion ends when the user switches editors. */
  private activeDocumentKey: string | undefined;
  /** Next edits from the server, the first one marked in the gutter (far) or offered as ghost text (near). */
  private pendingNextEdits: NextEdit[] = [];
  private nextEditTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly nextEditDecoration: vscode.TextEditorDecorationType;

  constructor(extensionUri: vscode.Uri) {
    this.nextEditDecoration = vscode.window.createTextEditorDecorationType({
      gutterIconPath: vscode.Uri.joinPath(extensionUri, "media", "next-edit.svg"),
      gutterIconSize: "contain",
      overviewRulerColor: new vscode.ThemeColor("editorInfo.foreground"),
      overviewRulerLane: vscode.OverviewRulerLane.Right,
      after: { color: new vscode.ThemeColor("editorCodeLens.foreground"), margin: "0 0 0 1em" },
      isWholeLine: true,
    });
    this.log = vscode.window.createOutputChannel("Opportune", { log: true });
    this.reportChannel = vscode.window.createOutputChannel("Opportune Report");
    this.statusItem = vscode.window.createStatusBarItem(
      "opportune.status",
      vscode.StatusBarAlignment.Right,
      100,
    );
    this.statusItem.name = "Opportune";
    this.statusItem.command = "opportune.toggle";
    this.settings = this.loadSettings();
    this.tracker = new CompletionTracker(
      {
        didShow: (params) => {
          this.notify(Methods.didShowCompletion, params);
        },
        didPartiallyAccept: (params) => {
          this.notify(Methods.didPartiallyAcceptCompletion, params);
        },
        didReject: (params) => {
          this.notify(Methods.didRejectCompletion, params);
        },
      },
      { shownDelayMs: this.settings.telemetry.shownDelayMs },
    );
    this.statusPoll = setInterval(() => {
      void this.refreshStatus();
    }, STATUS_POLL_MS);

    this.disposables.push(
      this.log,
      this.reportChannel,
      this.statusItem,
      vscode.commands.registerCommand("opportune.toggle", () => this.toggle()),
      vscode.commands.registerCommand("opportune.showReport", () => this.showReport()),
      vscode.commands.registerCommand("opportune.openDashboard", () => this.openDashboard()),
      vscode.commands.registerCommand("opportune.restartServer", () => this.restart()),
      vscode.commands.registerCommand("opportune.acceptNextWord", () =>
        this.partialAccept("editor.action.inlineSuggest.acceptNextWord"),
      ),
      vscode.commands.registerCommand("opportune.acceptNextLine", () =>
        this.partialAccept("editor.action.inlineSuggest.acceptNextLine"),
      ),
      vscode.commands.registerCommand("opportune.dismissSuggestion", () => this.dismiss()),
      vscode.commands.registerCommand("opportune.nextEdit", () => this.nextEditTab()),
      vscode.commands.registerCommand("opportune.nextEditAccepted", async (id: unknown) => {
        const edit = this.pendingNextEdits.find((e) => e.id === id);
        if (edit !== undefined) {
          await this.acceptNextEdit(edit);
          this.pendingNextEdits = [];
          await this.requestNextEdits();
        }
      }),
      this.nextEditDecoration,
      vscode.workspace.onDidChangeTextDocument((event) => {
        if (event.contentChanges.length > 0 && event.document === vscode.window.activeTextEditor?.document) {
          this.scheduleNextEdits();
        }
      }),
      vscode.workspace.onDidChangeConfiguration((event) => {
        if (event.affectsConfiguration("opportune")) {
          void this.onSettingsChanged();
        }
      }),
      // Trusting the workspace lets its own values of the restricted settings apply (a restart if they
      // change the command line).
      vscode.workspace.onDidGrantWorkspaceTrust(() => void this.onSettingsChanged()),
      vscode.window.onDidChangeTextEditorSelection((event) => {
        const active = event.selections[0]?.active;
        if (active !== undefined) {
          this.tracker.cursorMoved(requestContext(event.textEditor.document, active));
        }
      }),
      vscode.window.onDidChangeActiveTextEditor((editor) => {
        // Ghost text lives in one editor; switching away ends whatever suggestion was on screen.
        if (this.activeDocumentKey !== undefined) {
          this.tracker.documentLeft(this.activeDocumentKey);
        }
        this.activeDocumentKey = editor?.document.uri.toString();
      }),
      vscode.workspace.onDidCloseTextDocument((document) => {
        this.tracker.documentLeft(document.uri.toString());
      }),
    );
    this.activeDocumentKey = vscode.window.activeTextEditor?.document.uri.toString();
    this.updateStatusBar();
    this.statusItem.show();
  }

  async start(): Promise<void> {
    if (!this.settings.enabled || this.client !== undefined) {
      this.updateStatusBar();
      return;
    }
    const command = serveCommand(this.settings);
    this.log.info(`Starting ${command.command} ${command.args.join(" ")}`);
    const serverOptions: ServerOptions = {
      command: command.command,
      args: command.args,
      transport: TransportKind.stdio,
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
      outputChannel: this.log,
      // A function, so that a restart sends the settings of that moment.
      initializationOptions: () => toServerOptions(this.settings),
      middleware: this.middleware(),
    };
    const client = new LanguageClient("opportune", "Opportune", serverOptions, clientOptions);
    this.startedWith = command;
    // Inline completion is stable in LSP 3.18 clients; registering the proposed features keeps it on for
    // vscode-languageclient versions where it is still proposed.
    client.registerProposedFeatures();
    this.client = client;
    this.serverState = "starting";
    this.updateStatusBar();
    client.onDidChangeState((event) => {
      if (event.newState === State.Running) {
        this.serverState = "running";
        void this.refreshStatus();
      } else if (event.newState === State.Stopped && this.client === client) {
        this.serverState = "failed";
        this.lastStatus = undefined;
        this.updateStatusBar();
      }
    });
    try {
      await client.start();
    } catch (error) {
      // Forget the failed client, so that the next toggle, settings change or restart tries afresh.
      if (this.client === client) {
        this.client = undefined;
        this.startedWith = undefined;
      }
      client.dispose().catch(() => undefined);
      this.serverState = "failed";
      this.updateStatusBar();
      const message = error instanceof Error ? error.message : String(error);
      this.log.error(`The server did not start: ${message}`);
      void vscode.window.showErrorMessage(
        `Opportune: could not start "${command.command}" (${message}). Check the opportune.serverPath setting.`,
      );
    }
  }

  async stop(): Promise<void> {
    const client = this.client;
    if (client === undefined) {
      return;
    }
    // Outcomes still waiting are sent while the connection is still open.
    this.tracker.dispose();
    this.client = undefined;
    this.startedWith = undefined;
    this.serverState = "stopped";
    this.lastStatus = undefined;
    try {
      await client.dispose(5_000);
    } catch (error) {
      this.log.warn(`Stopping the server: ${String(error)}`);
    }
    this.updateStatusBar();
  }

  async restart(): Promise<void> {
    await this.stop();
    this.settings = this.loadSettings();
    await this.start();
  }

  dispose(): void {
    clearInterval(this.statusPoll);
    if (this.nextEditTimer !== undefined) {
      clearTimeout(this.nextEditTimer);
    }
    if (this.statusRefresh !== undefined) {
      clearTimeout(this.statusRefresh);
    }
    void this.stop();
    for (const disposable of this.disposables) {
      disposable.dispose();
    }
  }

  // ---- next edits ------------------------------------------------------------------------------------

  private scheduleNextEdits(): void {
    if (this.nextEditTimer !== undefined) {
      clearTimeout(this.nextEditTimer);
    }
    this.nextEditTimer = setTimeout(() => {
      void this.requestNextEdits();
    }, NEXT_EDIT_DELAY_MS);
  }

  /** Asks the server for next edits at the cursor of the active editor, and shows the first one. */
  private async requestNextEdits(): Promise<void> {
    const client = this.client;
    const editor = vscode.window.activeTextEditor;
    if (client?.isRunning() !== true || editor === undefined) {
      return;
    }
    try {
      const position = editor.selection.active;
      const result = await client.sendRequest<NextEditAnswer>(NEXT_EDIT_METHOD, {
        textDocument: { uri: editor.document.uri.toString() },
        position: toPosition(position),
        context: { triggerKind: 2 },
      });
      this.pendingNextEdits = result.edits;
    } catch (error) {
      // A newer edit made this one stale (ContentModified) or it was cancelled: the next request follows.
      this.log.debug(`next edits: ${String(error)}`);
      this.pendingNextEdits = [];
    }
    this.showNextEdit();
  }

  private here(editor: vscode.TextEditor): Here {
    return {
      uri: editor.document.uri.toString(),
      version: editor.document.version,
      position: toPosition(editor.selection.active),
    };
  }

  /** Marks the first pending edit (gutter, overview ruler, a hint after its line) and sets the Tab context. */
  private showNextEdit(): void {
    const editor = vscode.window.activeTextEditor;
    const first = this.pendingNextEdits[0];
    void vscode.commands.executeCommand("setContext", "opportune.nextEditPending", first !== undefined);
    for (const visible of vscode.window.visibleTextEditors) {
      visible.setDecorations(this.nextEditDecoration, []);
    }
    if (editor === undefined || first?.textDocument.uri !== editor.document.uri.toString()) {
      return;
    }
    const line = first.range.start.line;
    editor.setDecorations(this.nextEditDecoration, [
      {
        range: new vscode.Range(line, 0, line, 0),
        renderOptions: { after: { contentText: hint(first, this.pendingNextEdits.length) } },
      },
    ]);
  }

  /** Tab with next edits pending: jump to a far one, apply a near one (refusing a stale one), then ask again. */
  private async nextEditTab(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    if (editor === undefined) {
      return;
    }
    const action = tabAction(this.pendingNextEdits, this.here(editor));
    if (action.kind === "none") {
      await this.requestNextEdits();
      return;
    }
    const edit = action.edit;
    const range = new vscode.Range(
      edit.range.start.line,
      edit.range.start.character,
      edit.range.end.line,
      edit.range.end.character,
    );
    if (action.kind === "jump") {
      const document = await vscode.workspace.openTextDocument(vscode.Uri.parse(edit.textDocument.uri));
      const target = await vscode.window.showTextDocument(document);
      target.selection = new vscode.Selection(range.start, range.start);
      target.revealRange(range, vscode.TextEditorRevealType.InCenterIfOutsideViewport);
      this.showNextEdit();
      return;
    }
    if (action.kind === "stale") {
      void vscode.window.showWarningMessage(`Opportune: ${action.reason}; asking again.`);
      await this.requestNextEdits();
      return;
    }
    const applied = await editor.edit((builder) => {
      builder.replace(range, edit.plainText);
    });
    if (applied) {
      await this.acceptNextEdit(edit);
    }
    this.pendingNextEdits = [];
    await this.requestNextEdits();
  }

  private async acceptNextEdit(edit: NextEdit): Promise<void> {
    try {
      await this.client?.sendRequest("workspace/executeCommand", {
        command: ACCEPT_NEXT_EDIT_COMMAND,
        arguments: [edit.id],
      });
    } catch (error) {
      this.log.warn(`accepting a next edit: ${String(error)}`);
    }
  }

  /** The first pending edit as ghost text replacing a range, when it is on the cursor's line. */
  private nearNextEdit(
    document: vscode.TextDocument,
    position: vscode.Position,
  ): vscode.InlineCompletionItem[] {
    const edit = this.pendingNextEdits[0];
    const here: Here = {
      uri: document.uri.toString(),
      version: document.version,
      position: toPosition(position),
    };
    if (edit === undefined || tabAction([edit], here).kind !== "apply") {
      return [];
    }
    const replacement = asInlineReplacement(edit, here.position, document.lineAt(position.line).text);
    if (replacement === undefined) {
      return [];
    }
    const { start, end } = replacement.range;
    const item = new vscode.InlineCompletionItem(
      replacement.text,
      new vscode.Range(start.line, start.character, end.line, end.character),
    );
    // VS Code runs the command after inserting: the server records the acceptance.
    item.command = { title: "Accept next edit", command: "opportune.nextEditAccepted", arguments: [edit.id] };
    return [item];
  }

  private middleware(): Middleware {
    return {
      provideInlineCompletionItems: async (document, position, context, token, next) => {
        if (!this.settings.enabled) {
          return null;
        }
        const near = this.nearNextEdit(document, position);
        if (near.length > 0) {
          return near;
        }
        const request = requestContext(document, position);
        const generation = this.tracker.requestStarted(request, (anchor) => {
          const start = new vscode.Position(anchor.line, anchor.character);
          return position.isBefore(start) ? undefined : document.getText(new vscode.Range(start, position));
        });
        const result = await next(document, position, context, token);
        if (!token.isCancellationRequested && result !== null && result !== undefined) {
          const items = Array.isArray(result) ? result : result.items;
          const returned = items.map(returnedItem).filter((item): item is ReturnedItem => item !== undefined);
          this.tracker.itemsReturned(generation, request, returned);
        }
        this.scheduleStatusRefresh();
        return result;
      },
      executeCommand: (command, args, next): vscode.ProviderResult<unknown> => {
        if (command === ACCEPT_COMMAND) {
          const id: unknown = args[0];
          if (typeof id === "string") {
            this.tracker.accepted(id);
          }
        }
        return next(command, args) as vscode.ProviderResult<unknown>;
      },
    };
  }

  private notify(method: string, params: object): void {
    const client = this.client;
    if (client?.isRunning() !== true) {
      return;
    }
    client.sendNotification(method, params).catch((error: unknown) => {
      this.log.warn(`${method} not sent: ${String(error)}`);
    });
  }

  private loadSettings(): ExtensionSettings {
    const { settings, problems } = readWorkspaceSettings();
    const summary = problems.join(" ");
    if (summary !== "" && summary !== this.reportedProblems) {
      void vscode.window.showWarningMessage(`Opportune: ${summary}`);
    }
    this.reportedProblems = summary;
    return settings;
  }

  private async onSettingsChanged(): Promise<void> {
    const before = this.settings;
    const after = this.loadSettings();
    this.settings = after;
    this.tracker.setOptions({ shownDelayMs: after.telemetry.shownDelayMs });
    if (!after.enabled) {
      // The server keeps running (turning back on is instant) but stops completing and counting.
      if (before.enabled) {
        await this.sendEnabled(false);
      }
      this.updateStatusBar();
      return;
    }
    if (this.client === undefined) {
      await this.start();
      return;
    }
    if (this.startedWith !== undefined && needsRestart(this.startedWith, after)) {
      this.log.info("The server command changed; restarting the server.");
      await this.restart();
      return;
    }
    if (!before.enabled) {
      await this.sendEnabled(true);
    }
    const client = this.client;
    if (client.isRunning()) {
      await client.sendNotification(DidChangeConfigurationNotification.type, {
        settings: { opportune: toServerOptions(after) },
      });
    }
    this.updateStatusBar();
  }

  private async sendEnabled(enabled: boolean): Promise<void> {
    const client = this.client;
    if (client?.isRunning() !== true) {
      return;
    }
    try {
      const result = await client.sendRequest<SetEnabledResult>(Methods.setEnabled, { enabled });
      this.log.info(`Server completions ${result.enabled ? "on" : "off"}.`);
    } catch (error) {
      this.log.warn(`${Methods.setEnabled} failed: ${String(error)}`);
    }
    await this.refreshStatus();
  }

  private async toggle(): Promise<void> {
    const configuration = vscode.workspace.getConfiguration("opportune");
    const inspected = configuration.inspect<boolean>("enabled");
    // Write where the effective value comes from, or the toggle would be shadowed by a workspace setting.
    const target =
      inspected?.workspaceFolderValue !== undefined
        ? vscode.ConfigurationTarget.WorkspaceFolder
        : inspected?.workspaceValue !== undefined
          ? vscode.ConfigurationTarget.Workspace
          : vscode.ConfigurationTarget.Global;
    await configuration.update("enabled", !this.settings.enabled, target);
  }

  private async showReport(): Promise<void> {
    const client = this.client;
    if (client?.isRunning() !== true) {
      void vscode.window.showWarningMessage("Opportune: the server is not running.");
      return;
    }
    const params: ReportParams = { since: "1d" };
    try {
      const report = await client.sendRequest<ReportResult>(Methods.report, params);
      this.reportChannel.clear();
      this.reportChannel.appendLine(`Opportune CPO report, last 24 hours (${new Date().toLocaleString()})`);
      this.reportChannel.appendLine("");
      this.reportChannel.append(report.text);
      this.reportChannel.show(true);
    } catch (error) {
      void vscode.window.showErrorMessage(`Opportune: the report failed: ${String(error)}`);
    }
  }

  private async openDashboard(): Promise<void> {
    const url = dashboardUrl(this.settings);
    if (!(await answers(url))) {
      const command = dashboardCommand(this.settings);
      if (this.dashboardTerminal === undefined || this.dashboardTerminal.exitStatus !== undefined) {
        this.dashboardTerminal = vscode.window.createTerminal({
          name: "Opportune Dashboard",
          shellPath: command.command,
          shellArgs: command.args,
        });
      }
      this.dashboardTerminal.show(true);
      const started = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: "Starting the Opportune dashboard…" },
        () => waitUntilAnswers(url, DASHBOARD_START_TIMEOUT_MS),
      );
      if (!started) {
        void vscode.window.showErrorMessage(
          `Opportune: the dashboard did not answer on ${url}. See the "Opportune Dashboard" terminal.`,
        );
        return;
      }
    }
    await vscode.env.openExternal(vscode.Uri.parse(url));
  }

  /** Runs one of VS Code's partial-accept commands and reports how many characters it inserted. */
  private async partialAccept(vscodeCommand: string): Promise<void> {
    const document = vscode.window.activeTextEditor?.document;
    let inserted = 0;
    const listener = vscode.workspace.onDidChangeTextDocument((event) => {
      if (event.document === document) {
        for (const change of event.contentChanges) {
          inserted += change.text.length - change.rangeLength;
        }
      }
    });
    try {
      await vscode.commands.executeCommand(vscodeCommand);
    } finally {
      listener.dispose();
    }
    this.tracker.partiallyAccepted(inserted);
  }

  private async dismiss(): Promise<void> {
    this.tracker.dismissed();
    await vscode.commands.executeCommand("editor.action.inlineSuggest.hide");
  }

  private scheduleStatusRefresh(): void {
    if (this.statusRefresh !== undefined) {
      return;
    }
    this.statusRefresh = setTimeout(() => {
      this.statusRefresh = undefined;
      void this.refreshStatus();
    }, 1_000);
  }

  private async refreshStatus(): Promise<void> {
    const client = this.client;
    if (client?.isRunning() === true) {
      const cancel = new CancellationTokenSource();
      const timer = setTimeout(() => {
        cancel.cancel();
      }, STATUS_REQUEST_TIMEOUT_MS);
      try {
        this.lastStatus = parseStatus(await client.sendRequest<unknown>(Methods.status, {}, cancel.token));
      } catch (error) {
        this.log.debug(`${Methods.status} failed: ${String(error)}`);
      } finally {
        clearTimeout(timer);
        cancel.dispose();
      }
    }
    this.updateStatusBar();
  }

  private updateStatusBar(): void {
    const view = statusView(this.settings.enabled, this.serverState, this.lastStatus);
    this.statusItem.text = view.text;
    this.statusItem.tooltip = view.tooltip;
  }
}

let extension: OpportuneExtension | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  extension = new OpportuneExtension(context.extensionUri);
  context.subscriptions.push(extension);
  await extension.start();
}

export async function deactivate(): Promise<void> {
  await extension?.stop();
  extension = undefined;
}
