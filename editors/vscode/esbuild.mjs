// Bundles the extension and vscode-languageclient into one CommonJS file, so the .vsix needs no node_modules.
import * as esbuild from "esbuild";
import process from "node:process";

const production = process.argv.includes("--production");

await esbuild.build({
  entryPoints: ["src/extension.ts"],
  bundle: true,
  outfile: "out/extension.js",
  format: "cjs",
  platform: "node",
  target: "node20",
  external: ["vscode"],
  sourcemap: !production,
  minify: production,
  logLevel: "info",
});
