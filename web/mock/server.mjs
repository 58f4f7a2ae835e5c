#!/usr/bin/env node
// Dev server for the dashboard: serves web/dist and a simulated drover API.
//   node mock/server.mjs [--port 8787] [--workers 1000] [--warmup 180] [--no-auth]
//   open http://127.0.0.1:8787/?key=mock   (sets the cookie, as the real server does)
// Also GET /report.html: the offline report built the way the Rust side builds it
// (dist/index.html with app.css and app.js inlined and window.DROVER_REPORT set).
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Sim } from "./sim.mjs";
import { buildReport } from "./report.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.resolve(here, "..", "dist");

function arg(name, def) {
  const i = process.argv.indexOf("--" + name);
  return i >= 0 ? process.argv[i + 1] : def;
}
const port = Number(arg("port", process.env.PORT ?? 8787));
const auth = !process.argv.includes("--no-auth");
const KEY = "mock";
const sim = new Sim({
  workers: Number(arg("workers", 1000)),
  warmup: Number(arg("warmup", 180)),
  historyRss: !process.argv.includes("--no-history-rss"),
});

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8" };

function authorized(req) {
  if (!auth) return true;
  return (req.headers.cookie ?? "").split(/;\s*/).includes("drover_dashboard=" + KEY);
}

function json(res, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "no-store" });
  res.end(body);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  const p = url.pathname;
  if (p.startsWith("/api/") || p === "/report.html") {
    if (!authorized(req)) {
      res.writeHead(401, { "Content-Type": "text/plain" });
      res.end("unauthorized\n");
      return;
    }
  }
  if (p === "/api/snapshot") return json(res, sim.snapshot());
  if (p === "/api/stream") {
    const since = Number(url.searchParams.get("since") ?? 0);
    const until = Number(url.searchParams.get("until") ?? 1e18);
    return json(res, sim.stream(since, until));
  }
  if (p === "/api/events") {
    res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-store", Connection: "keep-alive" });
    const send = () => res.write("data: " + JSON.stringify(sim.snapshot()) + "\n\n");
    send();
    const iv = setInterval(send, 1000);
    req.on("close", () => clearInterval(iv));
    return;
  }
  if (p === "/report.html") {
    const snap = sim.snapshot();
    const body = buildReport(snap, sim.stream(-1, 1e18, false), {
      workload: '# anomaly.toml (mock)\n[input]\npath = "/scratch/era5/t2m_*.h5"\ndataset = "t2m"\n\n[[step]]\nop = "anomaly"\nover = "time"\n</script><b>not markup</b>\n',
      summary: { jobs: snap.jobs.length, tasks_done: snap.totals.tasks_done, bytes_read: snap.totals.bytes_read, wall_s: snap.now },
    });
    res.writeHead(200, { "Content-Type": TYPES[".html"] });
    res.end(body);
    return;
  }
  if (p === "/" && url.searchParams.get("key")) {
    const ok = url.searchParams.get("key") === KEY;
    res.writeHead(303, { Location: "/", ...(ok ? { "Set-Cookie": `drover_dashboard=${KEY}; Path=/; HttpOnly; SameSite=Strict` } : {}) });
    res.end();
    return;
  }
  const file = p === "/" ? "index.html" : p.slice(1);
  const full = path.join(dist, file);
  if (!full.startsWith(dist + path.sep) || !fs.existsSync(full) || !fs.statSync(full).isFile()) {
    res.writeHead(404);
    res.end("not found\n");
    return;
  }
  res.writeHead(200, { "Content-Type": TYPES[path.extname(full)] ?? "application/octet-stream", "Cache-Control": "no-cache" });
  fs.createReadStream(full).pipe(res);
});

server.listen(port, "127.0.0.1", () => {
  const a = server.address();
  console.log(`mock drover dashboard on http://127.0.0.1:${a.port}/` + (auth ? `?key=${KEY}` : ""));
});
