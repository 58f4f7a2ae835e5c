// The offline report, built the way the drover server builds it: dist/index.html with
// app.css and app.js inlined and window.DROVER_REPORT set.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "dist");

export function buildReport(snapshot, stream, extra = {}) {
  const html = fs.readFileSync(path.join(dist, "index.html"), "utf8");
  const js = fs.readFileSync(path.join(dist, "app.js"), "utf8");
  const css = fs.readFileSync(path.join(dist, "app.css"), "utf8");
  const data = JSON.stringify({ snapshot, stream, ...extra }).replace(/</g, "\\u003c");
  const safeJs = js.replace(/<\/(script)/gi, "<\\/$1");
  const cssTag = '<link rel="stylesheet" href="./app.css">';
  const jsTag = '<script defer src="./app.js"></script>';
  if (!html.includes(cssTag) || !html.includes(jsTag)) throw new Error("dist/index.html lacks the app.css/app.js tags the report replaces");
  return html
    .replace(/<link rel="stylesheet" href="\.\/app\.css">/, () => `<style>\n${css.replace(/<\/(style)/gi, "<\\/$1")}\n</style>`)
    .replace(/<script defer src="\.\/app\.js"><\/script>/, () => `<script>window.DROVER_REPORT=${data};</script>\n<script>\n${safeJs}\n</script>`);
}
