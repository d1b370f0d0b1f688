// npm run bundle [-- OUT]: the browser bundle of the SDK (one minified ES module, default
// dist/pushwire.min.js) and its size, minified and minified + gzip (docs/clients.md).
import { build } from "esbuild";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const root = fileURLToPath(new URL("..", import.meta.url));
const out = process.argv[2] ?? `${root}dist/pushwire.min.js`;
await build({
  entryPoints: [`${root}src/index.ts`], bundle: true, minify: true, format: "esm",
  target: "es2020", platform: "browser", outfile: out, logLevel: "warning",
});
const code = readFileSync(out);
console.log(JSON.stringify({ bundle: out, min_bytes: code.length,
                             min_gzip_bytes: gzipSync(code, { level: 9 }).length }));
