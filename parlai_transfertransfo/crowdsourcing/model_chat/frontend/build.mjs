// Bundles the worker's page (src/main.jsx) with esbuild into build/: bundle.js, bundle.css
// (Bootstrap 3 and bootstrap-chat's styles, fonts inlined: nothing is fetched from a CDN)
// and index.html.  Run by `npm run build`, once, at install time.
import * as esbuild from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";

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
copyFileSync("index.html", "build/index.html");
