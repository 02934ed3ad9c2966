/**
 * The extension's settings: read and validated from the `opportune.*` configuration, and mapped to what the
 * server receives (`initializationOptions`, `workspace/didChangeConfiguration`) and to the command lines
 * the extension runs.
 *
 * Only values the user set are sent to the server: every server-side setting defaults to null here, so that
 * the server's own defaults and the team's opportune.toml apply unless the user overrides them in VS Code.
 * The module imports nothing from `vscode`; the extension passes a reader over `WorkspaceConfiguration`.
 */

import { SERVER_SETTINGS, type ServerSetting } from "./serverSettings";

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
  ...SERVER_SETTINGS.filter((s) => s.restricted).map((s) => s.key),
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

export interface ExtensionSettings {
  enabled: boolean;
  serverPath: string;
  serverArgs: string[];
  configFile: string;
  /** The server settings the user set (by key below `opportune.`, e.g. "completion.deadlineMs"). */
  server: Record<string, unknown>;
  telemetry: { shownDelayMs: number };
  dashboardPort: number;
}

export const DEFAULT_SERVER_PATH = "opportune";
export const DEFAULT_SHOWN_DELAY_MS = 150;
export const DEFAULT_DASHBOARD_PORT = 8765;

/**
 * The shape of `initializationOptions` and of `settings.opportune` in didChangeConfiguration: the
 * sections of server/config.py (`completion`, `model`, `telemetry`, `experiment`) with camelCase keys.
 */
export interface ServerOptions {
  [section: string]: Record<string, unknown> | string | undefined;
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

  const server: Record<string, unknown> = {};
  for (const spec of SERVER_SETTINGS) {
    const value = serverSetting(spec, read(spec.key), problems);
    if (value !== undefined) {
      server[spec.key] =
        spec.path === true ? expandPath(value as string, paths.home, paths.workspaceFolder) : value;
    }
  }

  const serverPath = expandPath(text("serverPath", DEFAULT_SERVER_PATH), paths.home, paths.workspaceFolder);
  const settings: ExtensionSettings = {
    enabled: bool("enabled", true),
    serverPath: serverPath === "" ? DEFAULT_SERVER_PATH : serverPath,
    serverArgs,
    configFile: path("configFile"),
    server,
    telemetry: {
      shownDelayMs: integer("telemetry.shownDelayMs", 0, 60_000) ?? DEFAULT_SHOWN_DELAY_MS,
    },
    dashboardPort: integer("dashboard.port", 1, 65_535) ?? DEFAULT_DASHBOARD_PORT,
  };
  return { settings, problems };
}

/**
 * One server setting as the user set it, or undefined when unset (null, or "" for text) or invalid (then a
 * line in `problems`), so that the server's own default and the team's opportune.toml apply.
 */
function serverSetting(spec: ServerSetting, value: unknown, problems: string[]): unknown {
  if (value === undefined || value === null || value === "") {
    return undefined;
  }
  const within = (n: number): boolean =>
    (spec.minimum === undefined || n >= spec.minimum) && (spec.maximum === undefined || n <= spec.maximum);
  const range =
    spec.minimum !== undefined && spec.maximum !== undefined
      ? ` from ${spec.minimum} to ${spec.maximum}`
      : "";
  let expected: string;
  switch (spec.type) {
    case "boolean":
      if (typeof value === "boolean") {
        return value;
      }
      expected = "true, false or null";
      break;
    case "integer":
      if (typeof value === "number" && Number.isInteger(value) && within(value)) {
        return value;
      }
      expected = `an integer${range}`;
      break;
    case "number":
      if (typeof value === "number" && Number.isFinite(value) && within(value)) {
        return value;
      }
      expected = `a number${range}`;
      break;
    case "string":
      if (typeof value === "string" && (spec.enum === undefined || spec.enum.includes(value))) {
        return value;
      }
      expected = spec.enum === undefined ? "a string" : `one of ${spec.enum.join(", ")}`;
      break;
    case "array":
      if (Array.isArray(value)) {
        return value;
      }
      expected = "a list";
      break;
  }
  problems.push(`opportune.${spec.key} must be ${expected}; ignoring ${JSON.stringify(value)}.`);
  return undefined;
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
  for (const [key, value] of Object.entries(settings.server)) {
    const dot = key.indexOf(".");
    const section = key.slice(0, dot);
    const existing = options[section];
    const entries = typeof existing === "object" ? existing : {};
    entries[key.slice(dot + 1)] = value;
    options[section] = entries;
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
  const db = settings.server["telemetry.db"];
  if (typeof db === "string") {
    args.push("--db", db);
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
