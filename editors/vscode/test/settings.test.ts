/** Settings -> initializationOptions and command lines. */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  dashboardCommand,
  dashboardUrl,
  expandPath,
  needsRestart,
  readSettings,
  serveCommand,
  toServerOptions,
  trustAwareReader,
} from "../src/settings";

/** A reader over a flat map of keys below `opportune.`, as VS Code's WorkspaceConfiguration.get is. */
function reader(values: Record<string, unknown>): (key: string) => unknown {
  return (key) => values[key];
}

/** The package.json defaults, as VS Code returns them when the user set nothing. */
const packageDefaults: Record<string, unknown> = {
  enabled: true,
  serverPath: "opportune",
  serverArgs: [],
  configFile: "",
  "model.path": "",
  "model.threads": null,
  "completion.contextTokens": null,
  "completion.deadlineMs": null,
  "completion.maxTokens": null,
  "completion.debounceMs": null,
  "completion.multiline": null,
  "telemetry.enabled": null,
  "telemetry.db": "",
  "telemetry.storeText": null,
  "telemetry.shownDelayMs": 150,
  "dashboard.port": 8765,
};

describe("readSettings and toServerOptions", () => {
  it("sends nothing but the client name when the user set nothing, so the server's defaults apply", () => {
    const { settings, problems } = readSettings(reader(packageDefaults));
    assert.deepEqual(problems, []);
    assert.deepEqual(toServerOptions(settings, "vscode"), { clientName: "vscode" });
    assert.deepEqual(toServerOptions(settings), {});
    assert.equal(settings.enabled, true);
    assert.equal(settings.telemetry.shownDelayMs, 150);
  });

  it("maps every server setting to its section, in the server's camelCase names", () => {
    const { settings, problems } = readSettings(
      reader({
        ...packageDefaults,
        "model.path": "/models/coder.gguf",
        "model.threads": 2,
        "completion.contextTokens": 1024,
        "completion.deadlineMs": 300,
        "completion.maxTokens": 48,
        "completion.debounceMs": 0,
        "completion.multiline": "auto",
        "telemetry.enabled": false,
        "telemetry.db": "/tmp/t.db",
        "telemetry.storeText": true,
      }),
    );
    assert.deepEqual(problems, []);
    assert.deepEqual(toServerOptions(settings, "vscode"), {
      clientName: "vscode",
      completion: { deadlineMs: 300, maxTokens: 48, debounceMs: 0, contextTokens: 1024, multiline: "auto" },
      model: { path: "/models/coder.gguf", threads: 2 },
      telemetry: { enabled: false, db: "/tmp/t.db", storeText: true },
    });
  });

  it("keeps a zero and a false, which are set values, and drops empty sections", () => {
    const { settings } = readSettings(
      reader({ ...packageDefaults, "completion.debounceMs": 0, "telemetry.storeText": false }),
    );
    assert.deepEqual(toServerOptions(settings, "c"), {
      clientName: "c",
      completion: { debounceMs: 0 },
      telemetry: { storeText: false },
    });
  });

  it("reports wrong values and falls back instead of sending them", () => {
    const { settings, problems } = readSettings(
      reader({
        ...packageDefaults,
        enabled: "yes",
        serverArgs: ["--backend", 3],
        "completion.deadlineMs": -5,
        "completion.maxTokens": 2.5,
        "completion.multiline": "sometimes",
        "telemetry.storeText": "no",
        "dashboard.port": 70_000,
      }),
    );
    assert.equal(problems.length, 7, problems.join("\n"));
    assert.ok(problems.some((p) => p.includes("opportune.completion.deadlineMs")));
    assert.ok(problems.some((p) => p.includes("opportune.completion.multiline")));
    assert.equal(settings.enabled, true);
    assert.deepEqual(settings.serverArgs, []);
    assert.equal(settings.dashboardPort, 8765);
    assert.deepEqual(toServerOptions(settings, "vscode"), { clientName: "vscode" });
  });

  it("treats missing keys like the package defaults", () => {
    const { settings, problems } = readSettings(reader({}));
    assert.deepEqual(problems, []);
    assert.equal(settings.serverPath, "opportune");
    assert.equal(settings.dashboardPort, 8765);
    assert.equal(settings.telemetry.shownDelayMs, 150);
  });

  it("expands ~ and ${workspaceFolder} in paths", () => {
    const { settings } = readSettings(
      reader({
        ...packageDefaults,
        serverPath: "~/venv/bin/opportune",
        "model.path": "${workspaceFolder}/m.gguf",
        "telemetry.db": "${userHome}/t.db",
      }),
      { home: "/home/u", workspaceFolder: "/ws" },
    );
    assert.equal(settings.serverPath, "/home/u/venv/bin/opportune");
    assert.equal(settings.server["model.path"], "/ws/m.gguf");
    assert.equal(settings.server["telemetry.db"], "/home/u/t.db");
    assert.equal(expandPath("~user/x", "/home/u", undefined), "~user/x");
    assert.equal(expandPath("${workspaceFolder}/x", "/h", undefined), "${workspaceFolder}/x");
  });
});

describe("server settings", () => {
  it("reaches every server setting, a remote backend and its endpoint included", () => {
    const { settings, problems } = readSettings(
      reader({
        "model.backend": "openai",
        "model.endpoint": "http://127.0.0.1:8080/v1",
        "model.remoteModel": "qwen2.5-coder",
        "completion.temperature": 0.2,
        "experiment.arms": [{ name: "a" }],
      }),
    );
    assert.deepEqual(problems, []);
    assert.deepEqual(toServerOptions(settings), {
      completion: { temperature: 0.2 },
      model: { backend: "openai", endpoint: "http://127.0.0.1:8080/v1", remoteModel: "qwen2.5-coder" },
      experiment: { arms: [{ name: "a" }] },
    });
  });

  it("refuses values outside the server's bounds and choices", () => {
    const { problems } = readSettings(
      reader({ "model.backend": "gpt", "completion.temperature": 3, "telemetry.metricsPort": 70_000 }),
    );
    assert.equal(problems.length, 3, problems.join("\n"));
  });
});

describe("command lines", () => {
  it("runs serve with --config and then the user's arguments", () => {
    const { settings } = readSettings(
      reader({ ...packageDefaults, configFile: "/etc/opportune.toml", serverArgs: ["--backend", "fake"] }),
    );
    assert.deepEqual(serveCommand(settings), {
      command: "opportune",
      args: ["serve", "--config", "/etc/opportune.toml", "--backend", "fake"],
    });
  });

  it("runs the dashboard on the configured port and store", () => {
    const plain = readSettings(reader(packageDefaults)).settings;
    assert.deepEqual(dashboardCommand(plain).args, ["dashboard", "--port", "8765"]);
    const custom = readSettings(
      reader({ ...packageDefaults, "dashboard.port": 9000, "telemetry.db": "/t.db" }),
    ).settings;
    assert.deepEqual(dashboardCommand(custom).args, ["dashboard", "--port", "9000", "--db", "/t.db"]);
    assert.equal(dashboardUrl(custom), "http://127.0.0.1:9000/");
  });

  it("restarts only for settings that need a new process", () => {
    const base = readSettings(reader(packageDefaults)).settings;
    const tuned = readSettings(reader({ ...packageDefaults, "completion.maxTokens": 10 })).settings;
    const otherArgs = readSettings(
      reader({ ...packageDefaults, serverArgs: ["--backend", "fake"] }),
    ).settings;
    const otherPath = readSettings(reader({ ...packageDefaults, serverPath: "/x/opportune" })).settings;
    const running = serveCommand(base);
    assert.equal(needsRestart(running, tuned), false);
    assert.equal(needsRestart(running, otherArgs), true);
    assert.equal(needsRestart(running, otherPath), true);
  });
});

describe("workspace trust", () => {
  const userAndWorkspace: Record<
    string,
    { globalValue?: unknown; workspaceValue?: unknown; defaultValue?: unknown }
  > = {
    serverPath: { defaultValue: "opportune", workspaceValue: "./evil.sh" },
    serverArgs: { defaultValue: [], workspaceValue: ["--backend", "openai"] },
    configFile: { defaultValue: "", workspaceValue: "/tmp/x.toml" },
    "model.path": { defaultValue: "", globalValue: "/home/me/models/a.gguf", workspaceValue: "/etc/passwd" },
    "model.backend": { defaultValue: null, workspaceValue: "openai" },
    "model.endpoint": { defaultValue: "", workspaceValue: "http://collector.example:8000" },
    "model.apiKeyEnv": { defaultValue: "", workspaceValue: "GITHUB_TOKEN" },
    "telemetry.metricsHost": { defaultValue: "", workspaceValue: "0.0.0.0" },
    "telemetry.db": { defaultValue: "", workspaceValue: "/tmp/leak.db" },
    "telemetry.storeText": { defaultValue: null, workspaceValue: true },
    "completion.deadlineMs": { defaultValue: null, workspaceValue: 400 },
  };
  const merged = (key: string): unknown => {
    const info = userAndWorkspace[key];
    return info === undefined
      ? packageDefaults[key]
      : (info.workspaceValue ?? info.globalValue ?? info.defaultValue);
  };
  const inspect = (key: string) => userAndWorkspace[key];

  it("ignores a restricted workspace's values of the settings that run, load or record", () => {
    const { settings } = readSettings(trustAwareReader(merged, inspect, false));
    assert.equal(settings.serverPath, "opportune");
    assert.deepEqual(settings.serverArgs, []);
    assert.equal(settings.configFile, "");
    assert.equal(settings.server["model.path"], "/home/me/models/a.gguf", "the user's own value stays");
    for (const key of [
      "model.backend",
      "model.endpoint",
      "model.apiKeyEnv",
      "telemetry.metricsHost",
      "telemetry.db",
      "telemetry.storeText",
    ]) {
      assert.equal(settings.server[key], undefined, `${key} from an untrusted workspace`);
    }
    assert.equal(settings.server["completion.deadlineMs"], 400, "harmless workspace settings still apply");
    assert.deepEqual(serveCommand(settings), { command: "opportune", args: ["serve"] });
  });

  it("applies them once the workspace is trusted", () => {
    const { settings } = readSettings(trustAwareReader(merged, inspect, true));
    assert.equal(settings.serverPath, "./evil.sh");
    assert.equal(settings.server["telemetry.db"], "/tmp/leak.db");
    assert.equal(settings.server["model.endpoint"], "http://collector.example:8000");
  });
});
