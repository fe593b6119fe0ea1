// Builds one task's worker page, once, at install time: `npm run build` in the task's
// frontend folder runs `node ../../build_page.mjs "TITLE"`.  esbuild (the task's own locked
// copy) bundles src/main.jsx into build/bundle.js and build/bundle.css (Bootstrap's styles,
// fonts inlined: nothing is fetched from a CDN); build/index.html is the page Mephisto's
// router serves, with its wrap_crowd_source.js.
import { createRequire } from "node:module";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const esbuild = createRequire(join(process.cwd(), "package.json"))("esbuild");
const escape = (text) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const title = escape(process.argv[2] || "Crowdsourcing task");

mkdirSync("build", { recursive: true });
await esbuild.build({
  entryPoints: ["src/main.jsx"],
  bundle: true,
  outfile: "build/bundle.js",
  minify: true,
  target: ["es2018"],
  define: { "process.env.NODE_ENV": '"production"' },
  loader: { ".woff": "dataurl", ".woff2": "dataurl", ".ttf": "dataurl", ".eot": "dataurl", ".svg": "dataurl" },
  logLevel: "warning",
});
writeFileSync(
  "build/index.html",
  `<!DOCTYPE html>
<html>
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <title>${title}</title>
    <link rel="stylesheet" href="bundle.css" />
    <script src="wrap_crowd_source.js"></script>
  </head>
  <body>
    <noscript>This task needs JavaScript.</noscript>
    <div id="app"></div>
    <script src="bundle.js"></script>
  </body>
</html>
`,
);
