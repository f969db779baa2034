// `make assets`: bundles the console's browser libraries into delineate/api/static/dashboard/vendor/,
// with their versions and licences beside them. The output is committed, so `make run` needs
// no Node; rerun this after changing package.json (then `npm install` updates the lockfile).
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "..", "delineate", "api", "static", "dashboard", "vendor");
mkdirSync(out, { recursive: true });

const bundles = [
  { entry: "src/sentry.js", file: "sentry.min.js", global: "DelineateSentry" },
  { entry: "src/otel.js", file: "otel.min.js", global: "DelineateOtel" },
];
const inputs = new Set();
for (const bundle of bundles) {
  const result = await build({
    entryPoints: [join(here, bundle.entry)],
    outfile: join(out, bundle.file),
    bundle: true,
    minify: true,
    format: "iife",
    globalName: bundle.global,
    target: ["chrome110", "firefox110", "safari16"],
    legalComments: "none", // the licences are in LICENSES.txt beside the bundles
    define: { "process.env.NODE_ENV": '"production"' },
    logLevel: "warning",
    metafile: true,
  });
  Object.keys(result.metafile.inputs).forEach((input) => inputs.add(input));
}
for (const name of ["uPlot.iife.min.js", "uPlot.min.css"]) {
  copyFileSync(join(here, "node_modules", "uplot", "dist", name), join(out, name));
}

// Every package that ends up in a bundle (esbuild's metafile says which files did), with
// its version and licence text.
const lock = JSON.parse(readFileSync(join(here, "package-lock.json"), "utf8"));
const packagePaths = new Set(["node_modules/uplot"]);
for (const input of inputs) {
  const match = input.match(/^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//);
  if (match) packagePaths.add(match[1]);
}
const shipped = [...packagePaths]
  .map((path) => ({ name: path.replace(/^.*node_modules\//, ""), path, ...lock.packages[path] }))
  .sort((a, b) => a.name.localeCompare(b.name) || a.version.localeCompare(b.version));
const versions = {};
let licences = "Third-party code in this folder (built by deploy/web/build.mjs, `make assets`).\n";
for (const pkg of shipped) {
  versions[`${pkg.name}@${pkg.version}`] = pkg.license || "see below";
  let text = "";
  for (const candidate of ["LICENSE", "LICENSE.md", "LICENSE.txt", "license"]) {
    try {
      text = readFileSync(join(here, pkg.path, candidate), "utf8");
      break;
    } catch {
      // try the next name
    }
  }
  licences += `\n==== ${pkg.name} ${pkg.version} (${pkg.license || "unknown"}) ====\n${text || "(no licence file in the package)"}\n`;
}
writeFileSync(join(out, "VERSIONS.json"), JSON.stringify(versions, null, 2) + "\n");
writeFileSync(join(out, "LICENSES.txt"), licences);
console.log(`vendor: ${bundles.length} bundles, uPlot, ${shipped.length} packages listed in ${out}`);
