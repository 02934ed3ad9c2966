/**
 * package.json against the code: every setting the extension reads is contributed (and only those), the
 * contributed defaults are valid and send nothing to the server, every registered command is declared,
 * and the bundle loads and exports the extension entry points.
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import Module, { createRequire } from "node:module";
import * as path from "node:path";
import { describe, it } from "node:test";

import { RESTRICTED_SETTINGS, readSettings, toServerOptions } from "../src/settings";

// Compiled to out/test/, so the extension folder is two levels up.
const root = path.resolve(__dirname, "..", "..");

interface Manifest {
  main: string;
  capabilities?: {
    untrustedWorkspaces?: { supported: boolean | "limited"; restrictedConfigurations?: string[] };
  };
  engines: { vscode: string };
  devDependencies: Record<string, string>;
  contributes: {
    commands: { command: string; title: string; category?: string }[];
    keybindings: { command: string }[];
    menus: { commandPalette: { command: string }[] };
    configuration: { properties: Record<string, { default?: unknown; description?: string }> };
  };
}

const manifest = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as Manifest;
const properties = manifest.contributes.configuration.properties;
/** Settings read by vscode-languageclient itself rather than by src/settings.ts. */
const readByLanguageClient = new Set(["trace.server"]);

describe("package.json", () => {
  it("contributes exactly the settings the extension reads, each with a description", () => {
    const read = new Set<string>();
    readSettings((key) => {
      read.add(key);
      return undefined;
    });
    const contributed = Object.keys(properties).map((key) => key.replace(/^opportune\./, ""));
    assert.deepEqual([...read].sort(), contributed.filter((key) => !readByLanguageClient.has(key)).sort());
    for (const [key, schema] of Object.entries(properties)) {
      assert.ok((schema.description ?? "").length > 20, `${key} needs a description`);
    }
  });

  it("declares restricted mode with exactly the settings the extension restricts", () => {
    const untrusted = manifest.capabilities?.untrustedWorkspaces;
    assert.ok(untrusted !== undefined, "capabilities.untrustedWorkspaces is not declared");
    assert.equal(untrusted.supported, "limited");
    const restricted = untrusted.restrictedConfigurations ?? [];
    assert.deepEqual([...restricted].sort(), RESTRICTED_SETTINGS.map((key) => `opportune.${key}`).sort());
    for (const key of restricted) {
      assert.ok(key in properties, `${key} is restricted but not contributed`);
    }
  });

  it("has defaults that are valid and leave the server's own defaults alone", () => {
    const { settings, problems } = readSettings((key) => properties[`opportune.${key}`]?.default);
    assert.deepEqual(problems, []);
    assert.deepEqual(toServerOptions(settings), {});
  });

  it("declares every command the extension registers, and binds only declared commands", () => {
    const source = fs.readFileSync(path.join(root, "src", "extension.ts"), "utf8");
    const registered = [...source.matchAll(/registerCommand\("([^"]+)"/g)].map((m) => m[1]);
    const declared = manifest.contributes.commands.map((c) => c.command);
    assert.deepEqual([...registered].sort(), [...declared].sort());
    for (const binding of [
      ...manifest.contributes.keybindings,
      ...manifest.contributes.menus.commandPalette,
    ]) {
      assert.ok(declared.includes(binding.command), binding.command);
    }
    for (const command of manifest.contributes.commands) {
      assert.equal(command.category, "Opportune");
    }
  });

  it("targets a VS Code no older than the API types it compiles against", () => {
    const engine = /^\^?(\d+)\.(\d+)/.exec(manifest.engines.vscode);
    const types = /^\^?~?(\d+)\.(\d+)/.exec(manifest.devDependencies["@types/vscode"] ?? "");
    assert.ok(engine !== null && types !== null);
    const [engineMajor, engineMinor] = [Number(engine[1]), Number(engine[2])];
    const [typesMajor, typesMinor] = [Number(types[1]), Number(types[2])];
    assert.ok(typesMajor < engineMajor || (typesMajor === engineMajor && typesMinor <= engineMinor));
  });
});

describe("the bundle", () => {
  it("loads with only the vscode module provided by the host, and exports activate/deactivate", () => {
    const bundle = path.join(root, manifest.main);
    assert.ok(fs.existsSync(bundle), `${bundle} is missing: run npm run build first`);
    // vscode-languageclient subclasses some vscode classes at load time: every name is a blank class.
    // Nothing is called, so this checks that the bundle is complete and well-formed, not the API use.
    const stub = new Proxy(
      {},
      {
        get: (_target, name) => {
          if (name === "__esModule") {
            return true; // so that TypeScript's import helpers use the stub as it is
          }
          if (typeof name === "symbol" || name === "default" || name === "then") {
            return undefined;
          }
          return class Blank {
            readonly blank = true;
          };
        },
      },
    );
    const loader = Module as unknown as {
      _load: (request: string, parent: unknown, isMain: boolean) => unknown;
    };
    const original = loader._load;
    loader._load = (request, parent, isMain) =>
      request === "vscode" ? stub : original(request, parent, isMain);
    try {
      const extension = createRequire(__filename)(bundle) as Record<string, unknown>;
      assert.equal(typeof extension.activate, "function");
      assert.equal(typeof extension.deactivate, "function");
    } finally {
      loader._load = original;
    }
  });
});
