// Checks Grafana dashboard JSON files against Grafana's published dashboard schema: the
// TypeScript types of the npm package @grafana/schema (it publishes no JSON Schema; the types are
// generated from Grafana's CUE schema of the dashboard kind and of each panel plugin).
//
//     node deploy/validate/dashboard.mjs --node-modules DIR FILE...
//
// DIR holds typescript and @grafana/schema (scripts/setup: $HERD_CACHE/node-deploy-validate/
// node_modules, from package.json/package-lock.json beside this file). For each file it
// type-checks, in memory, a module where
//   * the whole dashboard, as an object literal, `satisfies Dashboard`;
//   * each panel's `options` satisfies (a deep Partial of) its plugin's `Options`, and
//     `fieldConfig.defaults.custom` its plugin's `FieldConfig`, for the panel types whose plugin
//     schema the package has (a panel type it does not know is an error).
// An object literal is checked for excess properties, so a misspelt or unknown field is an error,
// as is a wrong type or a missing required field. Exit status 0 when all files pass; 1 with the
// compiler's messages, each with the generated line it is about; 2 for bad usage.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

function usage(message) {
  console.error(`dashboard.mjs: ${message}\nusage: node dashboard.mjs --node-modules DIR FILE...`);
  process.exit(2);
}

const args = process.argv.slice(2);
const at = args.indexOf("--node-modules");
if (at < 0 || at + 1 >= args.length) usage("--node-modules DIR is required");
const nodeModules = path.resolve(args[at + 1]);
const files = args.filter((_, i) => i !== at && i !== at + 1);
if (files.length === 0) usage("no dashboard file");

const require = createRequire(path.join(nodeModules, "noop.js"));
const ts = require("typescript");
const schemaPackage = JSON.parse(
  readFileSync(path.join(nodeModules, "@grafana/schema/package.json"), "utf8"),
);

// The package's export of a panel plugin's generated types, e.g.
// ./dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen
function panelTypesExport(type) {
  const prefix = `./dist/esm/raw/composable/${type}/panelcfg/x/`;
  const key = Object.keys(schemaPackage.exports).find((k) => k.startsWith(prefix));
  return key && `@grafana/schema${key.slice(1)}`;
}

function source(dashboard) {
  const lines = [
    'import type { Dashboard } from "@grafana/schema";',
    "type DeepPartial<T> = T extends (infer U)[] ? DeepPartial<U>[]",
    "  : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> } : T;",
  ];
  const problems = [];
  const body = [`export const dashboard = ${JSON.stringify(dashboard, null, 2)} satisfies Dashboard;`];
  const panels = [];
  const walk = (list) => {
    for (const panel of list ?? []) {
      panels.push(panel);
      if (panel.type === "row") walk(panel.panels);
    }
  };
  walk(dashboard.panels);
  const imported = new Map();
  panels.forEach((panel, i) => {
    if (panel.type === "row") return;
    const where = `panel ${panel.id ?? i} (${JSON.stringify(panel.title)}, type ${panel.type})`;
    const module = panelTypesExport(panel.type);
    if (!module) {
      problems.push(`${where}: @grafana/schema has no panel plugin ${JSON.stringify(panel.type)}`);
      return;
    }
    if (!imported.has(module)) {
      const alias = `P${imported.size}`;
      imported.set(module, alias);
      lines.push(`import type * as ${alias} from ${JSON.stringify(module)};`);
    }
    const alias = imported.get(module);
    body.push(`// ${where}: options`);
    body.push(
      `export const options${i} = ${JSON.stringify(panel.options ?? {}, null, 2)} satisfies DeepPartial<${alias}.Options>;`,
    );
    const custom = panel.fieldConfig?.defaults?.custom;
    if (custom !== undefined) {
      body.push(`// ${where}: fieldConfig.defaults.custom`);
      body.push(
        `export const custom${i} = ${JSON.stringify(custom, null, 2)} satisfies DeepPartial<${alias}.FieldConfig>;`,
      );
    }
  });
  return { text: [...lines, ...body].join("\n") + "\n", problems };
}

let previous;

function check(file) {
  let dashboard;
  try {
    dashboard = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    return [`${file}: ${e.message}`];
  }
  const { text, problems } = source(dashboard);
  // the module lives (in memory only) in DIR's parent, so "@grafana/schema" resolves to DIR
  const virtual = path.join(path.dirname(nodeModules), "__herd_dashboard_check__.ts");
  const options = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, language, ...rest) =>
    name === virtual
      ? ts.createSourceFile(name, text, language)
      : getSourceFile.call(host, name, language, ...rest);
  host.fileExists = (name) => name === virtual || fileExists.call(host, name);
  host.readFile = (name) => (name === virtual ? text : readFile.call(host, name));
  // the previous file's program: its library and @grafana/schema files are reused, not re-parsed
  const program = ts.createProgram([virtual], options, host, previous);
  previous = program;
  const generated = text.split("\n");
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(d.messageText, "\n  ");
    if (d.file && d.start !== undefined) {
      const { line } = d.file.getLineAndCharacterOfPosition(d.start);
      const inFile = d.file.fileName === virtual ? "" : ` (in ${d.file.fileName})`;
      // the comment naming the panel this line belongs to, if any
      let section = "dashboard";
      for (let l = line; l >= 0; l--) {
        if (d.file.fileName === virtual && generated[l].startsWith("// panel")) {
          section = generated[l].slice(3);
          break;
        }
      }
      problems.push(`${file}: ${section}: line \`${generated[line]?.trim()}\`${inFile}: ${message}`);
    } else {
      problems.push(`${file}: ${message}`);
    }
  }
  return problems;
}

let failed = 0;
for (const file of files) {
  const problems = check(file);
  for (const p of problems) console.log(`ERROR ${p}`);
  failed += problems.length ? 1 : 0;
  console.log(`${file}: ${problems.length} problems`);
}
console.log(
  `dashboards: ${files.length} checked against @grafana/schema ${schemaPackage.version} ` +
    `(typescript ${ts.version}): ${failed} with problems`,
);
process.exit(failed ? 1 : 0);
