/**
 * The extension's settings: read and validated from the `opportune.*` configuration, and mapped to what the
 * server receives (`initializationOptions`, `workspace/didChangeConfiguration`) and to the command lines
 * the extension runs.
 *
 * Only values the user set are sent to the server: every server-side setting defaults to null here, so that
 * the server's own defaults and the team's opportune.toml apply unless the user overrides them in VS Code.
 * The module imports nothing from `vscode`; the extension passes a reader over `WorkspaceConfiguration`.
 */

/** Reads one key below `opportune.` (e.g. "completion.deadlineMs"); undefined when absent. */
export type SettingReader = (key: string) => unknown;

/**
 * Settings a repository's `.vscode/settings.json` could turn against the user: which program runs, with
 * which arguments and config file, which model file is loaded, where telemetry is written and whether it
 * holds code. In a workspace the user has not trusted (VS Code's restricted mode) only the user's own
 * values of these count; package.json declares the same list as `restrictedConfigurations`.
 */
export const RESTRICTED_SETTINGS: readonly string[] = [
  "serverPath",
  "serverArgs",
  "configFile",
  "modelPath",
  "telemetry.db",
  "telemetry.storeText",
];

/** What VS Code's `WorkspaceConfiguration.inspect` tells of one key (the parts used here). */
export type SettingInspector = (key: string) => { defaultValue?: unknown; globalValue?: unknown } | undefined;

/**
 * A reader that, when the workspace is not trusted, takes the restricted settings from the user's own
 * (global) settings or the default, never from the workspace or folder settings.
 */
export function trustAwareReader(
  read: SettingReader,
  inspect: SettingInspector,
  trusted: boolean,
): SettingReader {
  if (trusted) {
    return read;
  }
  return (key) => {
    if (!RESTRICTED_SETTINGS.includes(key)) {
      return read(key);
    }
    const info = inspect(key);
    return info?.globalValue ?? info?.defaultValue;
  };
}

export type Multiline = "auto" | "always" | "never";
const MULTILINE_VALUES: readonly string[] = ["auto", "always", "never"];

export interface ExtensionSettings {
  enabled: boolean;
  serverPath: string;
  serverArgs: string[];
  configFile: string;
  modelPath: string;
  model: { threads: number | null };
  completion: {
    deadlineMs: number | null;
    maxTokens: number | null;
    debounceMs: number | null;
    contextTokens: number | null;
    multiline: Multiline | null;
  };
  telemetry: { enabled: boolean | null; db: string; storeText: boolean | null; shownDelayMs: number };
  dashboardPort: number;
}

export const DEFAULT_SERVER_PATH = "opportune";
export const DEFAULT_SHOWN_DELAY_MS = 150;
export const DEFAULT_DASHBOARD_PORT = 8765;

/** The shape of `initializationOptions` and of `settings.opportune` in didChangeConfiguration. */
export interface ServerOptions {
  completion?: {
    deadlineMs?: number;
    maxTokens?: number;
    debounceMs?: number;
    contextTokens?: number;
    multiline?: Multiline;
  };
  model?: { path?: string; threads?: number };
  telemetry?: { enabled?: boolean; db?: string; storeText?: boolean };
  clientName?: string;
}

export interface ReadResult {
  settings: ExtensionSettings;
  /** One human-readable line per invalid value; the default was used instead. */
  problems: string[];
}

/** Expands a leading `~` and `${workspaceFolder}`/`${userHome}` in a path setting. */
export function expandPath(value: string, home: string, workspaceFolder: string | undefined): string {
  let result = value.trim();
  if (result === "~" || result.startsWith("~/")) {
    result = home + result.slice(1);
  }
  result = result.replaceAll("${userHome}", home);
  if (workspaceFolder !== undefined) {
    result = result.replaceAll("${workspaceFolder}", workspaceFolder);
  }
  return result;
}

export interface PathContext {
  home: string;
  workspaceFolder?: string;
}

export function readSettings(read: SettingReader, paths: PathContext = { home: "" }): ReadResult {
  const problems: string[] = [];

  const bool = (key: string, fallback: boolean): boolean => {
    const value = read(key);
    if (value === undefined || value === null) {
      return fallback;
    }
    if (typeof value !== "boolean") {
      problems.push(`opportune.${key} must be true or false; using ${String(fallback)}.`);
      return fallback;
    }
    return value;
  };
  const optionalBool = (key: string): boolean | null => {
    const value = read(key);
    if (value === undefined || value === null) {
      return null;
    }
    if (typeof value !== "boolean") {
      problems.push(`opportune.${key} must be true, false or null; using the server's default.`);
      return null;
    }
    return value;
  };
  const integer = (key: string, minimum: number, maximum = Number.MAX_SAFE_INTEGER): number | null => {
    const value = read(key);
    if (value === undefined || value === null) {
      return null;
    }
    if (typeof value !== "number" || !Number.isInteger(value) || value < minimum || value > maximum) {
      problems.push(
        `opportune.${key} must be an integer from ${minimum} to ${maximum}; ignoring ${JSON.stringify(value)}.`,
      );
      return null;
    }
    return value;
  };
  const text = (key: string, fallback: string): string => {
    const value = read(key);
    if (value === undefined || value === null) {
      return fallback;
    }
    if (typeof value !== "string") {
      problems.push(`opportune.${key} must be a string; using ${JSON.stringify(fallback)}.`);
      return fallback;
    }
    return value;
  };
  const path = (key: string): string => expandPath(text(key, ""), paths.home, paths.workspaceFolder);

  const rawArgs = read("serverArgs");
  let serverArgs: string[] = [];
  if (Array.isArray(rawArgs) && rawArgs.every((arg): arg is string => typeof arg === "string")) {
    serverArgs = rawArgs;
  } else if (rawArgs !== undefined && rawArgs !== null) {
    problems.push("opportune.serverArgs must be a list of strings; ignoring it.");
  }

  let multiline: Multiline | null = null;
  const rawMultiline = read("completion.multiline");
  if (typeof rawMultiline === "string" && MULTILINE_VALUES.includes(rawMultiline)) {
    multiline = rawMultiline as Multiline;
  } else if (rawMultiline !== undefined && rawMultiline !== null) {
    problems.push(
      `opportune.completion.multiline must be one of ${MULTILINE_VALUES.join(", ")}; ignoring it.`,
    );
  }

  const serverPath = expandPath(text("serverPath", DEFAULT_SERVER_PATH), paths.home, paths.workspaceFolder);
  const settings: ExtensionSettings = {
    enabled: bool("enabled", true),
    serverPath: serverPath === "" ? DEFAULT_SERVER_PATH : serverPath,
    serverArgs,
    configFile: path("configFile"),
    modelPath: path("modelPath"),
    model: { threads: integer("model.threads", 0, 1024) },
    completion: {
      deadlineMs: integer("completion.deadlineMs", 1),
      maxTokens: integer("completion.maxTokens", 1, 512),
      debounceMs: integer("completion.debounceMs", 0),
      contextTokens: integer("completion.contextTokens", 32),
      multiline,
    },
    telemetry: {
      enabled: optionalBool("telemetry.enabled"),
      db: path("telemetry.db"),
      storeText: optionalBool("telemetry.storeText"),
      shownDelayMs: integer("telemetry.shownDelayMs", 0, 60_000) ?? DEFAULT_SHOWN_DELAY_MS,
    },
    dashboardPort: integer("dashboard.port", 1, 65_535) ?? DEFAULT_DASHBOARD_PORT,
  };
  return { settings, problems };
}

/** The entries whose value is set (not null, not ""), so that the server's defaults apply to the rest. */
type Compact<T> = { [K in keyof T]?: Exclude<T[K], null> };

function compact<T extends Record<string, unknown>>(entries: T): Compact<T> | undefined {
  const result: Compact<T> = {};
  let any = false;
  for (const key of Object.keys(entries) as (keyof T)[]) {
    const value = entries[key];
    if (value !== null && value !== undefined && value !== "") {
      result[key] = value as Exclude<T[keyof T], null>;
      any = true;
    }
  }
  return any ? result : undefined;
}

/**
 * The server's view of the settings: `initializationOptions`, and `settings.opportune` of each
 * didChangeConfiguration. It is always the complete client layer, not a delta. Without `clientName` the
 * server names the client from the LSP `clientInfo` (e.g. "Visual Studio Code", "VSCodium").
 */
export function toServerOptions(settings: ExtensionSettings, clientName?: string): ServerOptions {
  const options: ServerOptions = {};
  if (clientName !== undefined && clientName !== "") {
    options.clientName = clientName;
  }
  const completion = compact(settings.completion);
  if (completion !== undefined) {
    options.completion = completion;
  }
  const model = compact({
    path: settings.modelPath,
    threads: settings.model.threads,
  });
  if (model !== undefined) {
    options.model = model;
  }
  const telemetry = compact({
    enabled: settings.telemetry.enabled,
    db: settings.telemetry.db,
    storeText: settings.telemetry.storeText,
  });
  if (telemetry !== undefined) {
    options.telemetry = telemetry;
  }
  return options;
}

export interface CommandLine {
  command: string;
  args: string[];
}

/** `opportune serve`, with `--config` when set and the user's extra arguments last (they win). */
export function serveCommand(settings: ExtensionSettings): CommandLine {
  const args = ["serve"];
  if (settings.configFile !== "") {
    args.push("--config", settings.configFile);
  }
  args.push(...settings.serverArgs);
  return { command: settings.serverPath, args };
}

/** `opportune dashboard` on the configured port and, when set, the same telemetry store as the server. */
export function dashboardCommand(settings: ExtensionSettings): CommandLine {
  const args = ["dashboard", "--port", String(settings.dashboardPort)];
  if (settings.telemetry.db !== "") {
    args.push("--db", settings.telemetry.db);
  }
  return { command: settings.serverPath, args };
}

export function dashboardUrl(settings: ExtensionSettings): string {
  return `http://127.0.0.1:${settings.dashboardPort}/`;
}

/**
 * Whether a server started with `running` must be restarted for `settings` to apply: the settings that
 * shape the command line (serverPath, serverArgs, configFile) only take effect in a new process.
 */
export function needsRestart(running: CommandLine, settings: ExtensionSettings): boolean {
  return JSON.stringify(running) !== JSON.stringify(serveCommand(settings));
}
