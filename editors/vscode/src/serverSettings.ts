/**
 * The server settings the extension contributes and sends, with the checks it applies to them.
 *
 * Generated from server/config.py by `python scripts/sync_editors.py`: edit that file, not this one.
 */

export interface ServerSetting {
  /** Below `opportune.`, as VS Code names it; section and name as the server receives them. */
  key: string;
  type: "boolean" | "integer" | "number" | "string" | "array";
  minimum?: number;
  maximum?: number;
  enum?: readonly string[];
  /** A path: `~`, `${userHome}` and `${workspaceFolder}` are expanded. */
  path?: boolean;
  /** Taken only from the user's own settings while the workspace is not trusted. */
  restricted?: boolean;
}

export const SERVER_SETTINGS: readonly ServerSetting[] = [
  { key: "completion.deadlineMs", type: "integer", minimum: 1, maximum: 600000 },
  { key: "completion.maxTokens", type: "integer", minimum: 1, maximum: 512 },
  { key: "completion.singleLineMaxTokens", type: "integer", minimum: 1, maximum: 512 },
  { key: "completion.debounceMs", type: "integer", minimum: 0, maximum: 2000 },
  { key: "completion.adaptiveDebounce", type: "boolean" },
  { key: "completion.multiline", type: "string", enum: ["auto", "always", "never"] },
  { key: "completion.maxLines", type: "integer", minimum: 1, maximum: 200 },
  { key: "completion.contextTokens", type: "integer", minimum: 32, maximum: 131072 },
  { key: "completion.promptStrategy", type: "string", enum: ["syntax", "prefix"] },
  { key: "completion.suffixLines", type: "integer", minimum: 0, maximum: 200 },
  { key: "completion.windowStepLines", type: "integer", minimum: 1, maximum: 1000 },
  { key: "completion.projectContext", type: "boolean" },
  { key: "completion.projectShare", type: "number", minimum: 0, maximum: 0.8 },
  { key: "completion.projectImports", type: "boolean" },
  { key: "completion.projectImportsShare", type: "number", minimum: 0, maximum: 1 },
  { key: "completion.projectOpenFiles", type: "boolean" },
  { key: "completion.projectOpenFilesShare", type: "number", minimum: 0, maximum: 1 },
  { key: "completion.projectSimilar", type: "boolean" },
  { key: "completion.projectSimilarShare", type: "number", minimum: 0, maximum: 1 },
  { key: "completion.projectRecentEdits", type: "boolean" },
  { key: "completion.projectRecentEditsShare", type: "number", minimum: 0, maximum: 1 },
  { key: "completion.projectMaxFiles", type: "integer", minimum: 0, maximum: 10000000 },
  { key: "completion.projectMaxFileBytes", type: "integer", minimum: 1000, maximum: 100000000 },
  { key: "completion.temperature", type: "number", minimum: 0, maximum: 2 },
  { key: "completion.minConfidence", type: "number", minimum: 0, maximum: 1 },
  { key: "completion.typeaheadCache", type: "boolean" },
  { key: "completion.prewarm", type: "boolean" },
  { key: "model.backend", type: "string", enum: ["llama", "fake", "openai", "llama-server"], restricted: true },
  { key: "model.path", type: "string", path: true, restricted: true },
  { key: "model.threads", type: "integer", minimum: 0, maximum: 1024 },
  { key: "model.nCtx", type: "integer", minimum: 128, maximum: 1048576 },
  { key: "model.endpoint", type: "string", restricted: true },
  { key: "model.remoteModel", type: "string", restricted: true },
  { key: "model.apiKeyEnv", type: "string", restricted: true },
  { key: "model.timeoutMs", type: "integer", minimum: 100, maximum: 600000 },
  { key: "model.fakeLatencyMs", type: "number" },
  { key: "next_edit.enabled", type: "boolean" },
  { key: "next_edit.maxEdits", type: "integer", minimum: 1, maximum: 500 },
  { key: "next_edit.historyHunks", type: "integer", minimum: 1, maximum: 16 },
  { key: "next_edit.workspace", type: "boolean" },
  { key: "next_edit.workspaceMaxFiles", type: "integer", minimum: 0, maximum: 100000 },
  { key: "next_edit.workspaceMaxFileKb", type: "integer", minimum: 1, maximum: 100000 },
  { key: "next_edit.maxDocumentKb", type: "integer", minimum: 1, maximum: 100000 },
  { key: "next_edit.quietMs", type: "integer", minimum: 0, maximum: 5000 },
  { key: "telemetry.enabled", type: "boolean" },
  { key: "telemetry.db", type: "string", path: true, restricted: true },
  { key: "telemetry.storeText", type: "boolean", restricted: true },
  { key: "telemetry.flushIntervalS", type: "number", minimum: 0.01, maximum: 3600 },
  { key: "telemetry.metricsPort", type: "integer", minimum: 0, maximum: 65535, restricted: true },
  { key: "telemetry.metricsHost", type: "string", restricted: true },
  { key: "telemetry.installId", type: "string", restricted: true },
  { key: "telemetry.persistenceCheckpointsS", type: "array" },
  { key: "telemetry.persistenceMaxTracked", type: "integer", minimum: 1, maximum: 100000 },
  { key: "experiment.name", type: "string" },
  { key: "experiment.control", type: "string" },
  { key: "experiment.arms", type: "array", restricted: true },
  { key: "trust.workspaceConfigSha256", type: "string", restricted: true },
];
