#!/usr/bin/env node
// Dev check of the built dashboard in headless Debian Chromium (playwright-core, no
// downloaded browser): starts mock/server.mjs, clicks every tab, checks that worker rows,
// job progress and the task stream appear and change, that a 401 shows the message, that
// polling takes over when /api/events fails, and that the offline report opens from a
// file with the network off. Screenshots go to mock/screenshots/.
//   node mock/check.mjs [--workers 1000] [--chromium /usr/bin/chromium]
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const shots = path.join(here, "screenshots");
fs.mkdirSync(shots, { recursive: true });
function arg(name, def) {
  const i = process.argv.indexOf("--" + name);
  return i >= 0 ? process.argv[i + 1] : def;
}
const workers = Number(arg("workers", 1000));
const exe = arg("chromium", "/usr/bin/chromium");
const suffix = workers === 1000 ? "" : `-${workers}`;

let passed = 0;
let failed = 0;
function check(name, ok, detail = "") {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail ? " — " + detail : ""}`);
}

const srv = spawn(process.execPath, [path.join(here, "server.mjs"), "--port", "0", "--workers", String(workers)], { stdio: ["ignore", "pipe", "inherit"] });
const base = await new Promise((resolve, reject) => {
  let out = "";
  srv.stdout.on("data", (d) => {
    out += d;
    const m = out.match(/http:\/\/127\.0\.0\.1:(\d+)\//);
    if (m) resolve(`http://127.0.0.1:${m[1]}/`);
  });
  srv.on("exit", (c) => reject(new Error("mock server exited " + c)));
  setTimeout(() => reject(new Error("mock server did not start")), 30000);
});
console.log("mock server at", base);

const browser = await chromium.launch({
  executablePath: exe,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const errors = [];
const watch = (page, tag) => {
  page.on("pageerror", (e) => errors.push(`${tag}: ${e.message}`));
  page.on("console", (m) => {
    // The 401s and the aborted /api/events are what these pages are tested with.
    if (m.type() === "error" && !/status of 401|ERR_FAILED/.test(m.text())) errors.push(`${tag}: console: ${m.text()} ${m.location()?.url ?? ""}`);
  });
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const viewport = { width: 1440, height: 900 };

try {
  // 1. No cookie: the API answers 401 and the page says so.
  {
    const ctx = await browser.newContext({ viewport });
    const page = await ctx.newPage();
    watch(page, "noauth");
    await page.goto(base);
    await page.waitForSelector("#auth-error:not([hidden])", { timeout: 10000 });
    const text = await page.textContent("#auth-error");
    check("401 shows the message", /Not authorized: open the URL printed by\s+drover dashboard/.test(text), text);
    await page.screenshot({ path: path.join(shots, `auth${suffix}.png`) });
    await ctx.close();
  }

  // 2. With the key: the live dashboard.
  const ctx = await browser.newContext({ viewport });
  const page = await ctx.newPage();
  watch(page, "live");
  await page.goto(base + "?key=mock");
  await page.waitForFunction(() => document.querySelector("#updated-at")?.textContent !== "–", null, { timeout: 15000 });
  await page.waitForFunction(() => document.querySelector("#conn")?.textContent === "live", null, { timeout: 10000 });
  check("event stream connects", true);
  const t1 = Number(await page.getAttribute("#updated-at", "data-now"));
  await sleep(2200);
  const t2 = Number(await page.getAttribute("#updated-at", "data-now"));
  check("#updated-at follows the snapshots", t2 > t1, `${t1} -> ${t2}`);
  check("auth error hidden", await page.isHidden("#auth-error"));

  // Overview
  await page.click("#tab-overview");
  await page.waitForSelector(".uplot canvas");
  const charts = await page.$$eval(".uplot", (e) => e.length);
  check("overview has 4 charts", charts === 4, String(charts));
  const cardWorkers = await page.textContent("#card-workers .card-value");
  check("workers card", Number(cardWorkers.replace(/,/g, "")) > 0, cardWorkers);
  await sleep(500);
  await page.screenshot({ path: path.join(shots, `overview${suffix}.png`), fullPage: true });

  // Workers
  let t0 = Date.now();
  await page.click("#tab-workers");
  await page.waitForSelector("#workers-table tbody tr");
  const firstRender = Date.now() - t0;
  const snap = await page.evaluate(() => fetch("api/snapshot").then((r) => r.json()));
  const rows = await page.$$eval("#workers-table tbody tr", (t) => t.length);
  check("one row per worker", Math.abs(rows - snap.workers.length) <= 2, `${rows} rows, ${snap.workers.length} workers, first render ${firstRender} ms`);
  const ids = await page.$$eval("#workers-table tbody tr", (t) => t.every((r) => r.dataset.workerId));
  check("rows carry data-worker-id", ids);
  const before = await page.$$eval("#workers-table tbody tr", (t) => t.map((r) => r.textContent).join("\n"));
  await sleep(2200);
  const after = await page.$$eval("#workers-table tbody tr", (t) => t.map((r) => r.textContent).join("\n"));
  check("worker rows change", before !== after);
  await page.click('#workers-table th[data-key="rss"]');
  const rss = await page.$$eval("#workers-table tbody tr", (t) => t.slice(0, 50).map((r) => r.dataset.workerId));
  const snap2 = await page.evaluate(() => fetch("api/snapshot").then((r) => r.json()));
  const byId = new Map(snap2.workers.map((w) => [String(w.id), w.rss_bytes]));
  const top = rss.map((id) => byId.get(id) ?? 0);
  const maxAll = Math.max(...snap2.workers.map((w) => w.rss_bytes ?? 0));
  check("sort by RSS puts the largest first", top[0] >= 0.9 * maxAll, `${top[0]} vs max ${maxAll}`);
  // The longest main-thread task over 5 s of updates of 1,000 rows.
  const longTasks = await page.evaluate(
    () =>
      new Promise((resolve) => {
        const out = [];
        const po = new PerformanceObserver((l) => l.getEntries().forEach((e) => out.push(Math.round(e.duration))));
        po.observe({ type: "longtask" });
        setTimeout(() => (po.disconnect(), resolve(out)), 5000);
      }),
  );
  check("workers table updates fast", Math.max(0, ...longTasks) < 250, `long tasks (ms) in 5 s: ${JSON.stringify(longTasks)}`);
  await page.screenshot({ path: path.join(shots, `workers${suffix}.png`) });
  await page.click('#workers-table th[data-key="id"]');

  // Jobs
  await page.click("#tab-jobs");
  await page.waitForSelector("#jobs-table tbody tr");
  const jobs1 = await page.$$eval("#jobs-table tbody tr", (t) => t.map((r) => [r.dataset.jobId, r.querySelector(".progress")?.dataset.done, r.querySelector(".progress")?.dataset.total]));
  check("job rows with progress", jobs1.length >= 3 && jobs1.every(([id, d, t]) => id && d != null && t != null), JSON.stringify(jobs1));
  await sleep(2200);
  const jobs2 = await page.$$eval("#jobs-table tbody tr", (t) => t.map((r) => [r.dataset.jobId, r.querySelector(".progress")?.dataset.done]));
  check("job progress changes", JSON.stringify(jobs1.map((j) => j.slice(0, 2))) !== JSON.stringify(jobs2), JSON.stringify(jobs2));
  const stages = await page.$$eval("#jobs-table .stage", (s) => s.length);
  check("array jobs show stages", stages >= 2, String(stages));
  await page.screenshot({ path: path.join(shots, `jobs${suffix}.png`) });

  // Task stream
  await page.click("#tab-stream");
  await page.waitForFunction(() => Number(document.querySelector("#stream-canvas")?.dataset.bars) > 0, null, { timeout: 10000 });
  const s1 = await page.$eval("#stream-canvas", (c) => ({ ...c.dataset }));
  check("stream draws bars", Number(s1.bars) > 0, `${s1.bars} bars, ${s1.lanes} lanes, [${s1.v0}, ${s1.v1}]`);
  check("default window is 2 minutes, following", Math.abs(Number(s1.v1) - Number(s1.v0) - 120) < 0.01 && s1.follow === "true");
  await sleep(2200);
  const s2 = await page.$eval("#stream-canvas", (c) => ({ ...c.dataset }));
  check("stream follows now", Number(s2.v1) > Number(s1.v1), `${s1.v1} -> ${s2.v1}`);
  const box = await page.locator("#stream-canvas").boundingBox();
  // hover until a bar is found
  let tip = "";
  for (let i = 0; i < 40 && !/job/.test(tip); i++) {
    await page.mouse.move(box.x + box.width * (0.3 + 0.015 * i), box.y + 10 + (box.height - 40) * ((i * 7) % 40) / 40);
    await sleep(30);
    tip = await page.$$eval(".tooltip", (ts) => ts.filter((t) => !t.hidden).map((t) => t.textContent).join(""));
  }
  check("tooltip on a bar", /job/.test(tip) && /duration/.test(tip), tip);
  await page.screenshot({ path: path.join(shots, `stream${suffix}.png`) });
  // drag to pan back 1 minute-ish
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2, { steps: 8 });
  await page.mouse.up();
  await sleep(1200);
  const s3 = await page.$eval("#stream-canvas", (c) => ({ ...c.dataset }));
  check("drag pans back and stops following", s3.follow === "false" && Number(s3.v1) < Number(s2.v1) && Number(s3.bars) > 0, `[${s3.v0}, ${s3.v1}] ${s3.bars} bars`);
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height / 2);
  for (let i = 0; i < 5; i++) await page.mouse.wheel(0, 200);
  await sleep(1200);
  const s4 = await page.$eval("#stream-canvas", (c) => ({ ...c.dataset }));
  check("wheel zooms out and refetches", Number(s4.v1) - Number(s4.v0) > Number(s3.v1) - Number(s3.v0) && Number(s4.bars) > 0, `[${s4.v0}, ${s4.v1}] ${s4.bars} bars`);
  await page.screenshot({ path: path.join(shots, `stream-zoomed${suffix}.png`) });
  await page.click("#stream-follow");
  await sleep(1500);
  const s5 = await page.$eval("#stream-canvas", (c) => ({ ...c.dataset }));
  check("follow button returns to now", s5.follow === "true" && Number(s5.v1) >= Number(s2.v1), `[${s5.v0}, ${s5.v1}]`);

  // Logs
  await page.click("#tab-logs");
  await page.waitForSelector("#failures-table tbody tr");
  const lost = await page.$$eval("#lost-table tbody tr:not(.empty-row)", (t) => t.length);
  const fails = await page.$$eval("#failures-table tbody tr:not(.empty-row)", (t) => t.length);
  const firstTask = await page.$eval("#failures-table tbody tr", (r) => r.cells[2]?.textContent ?? "");
  const snapL = await page.evaluate(() => fetch("api/snapshot").then((r) => r.json())); // newer than the page's
  const newest = [...snapL.failures].sort((x, y) => y.t - x.t).slice(0, 5).map((f) => f.task);
  check(
    "logs list lost workers and failures, newest first",
    Math.abs(lost - snapL.lost_workers.length) <= 1 && lost >= 1 && Math.abs(fails - snapL.failures.length) <= 3 && (fails === 0 || newest.includes(firstTask)),
    `${lost} lost (snapshot ${snapL.lost_workers.length}), ${fails} failures (snapshot ${snapL.failures.length}), first task ${firstTask}, newest ${newest}`,
  );
  await page.screenshot({ path: path.join(shots, `logs${suffix}.png`) });

  // Tab state survives a reload (hash).
  await page.reload();
  await page.waitForSelector("#tab-logs.active");
  check("tab kept in the URL hash", true);
  await ctx.close();

  // 3. Polling when the event stream fails.
  {
    const ctx = await browser.newContext({ viewport });
    await ctx.addCookies([{ name: "drover_dashboard", value: "mock", url: base }]);
    await ctx.route("**/api/events", (r) => r.abort());
    const page = await ctx.newPage();
    watch(page, "poll");
    await page.goto(base + "#workers");
    await page.waitForFunction(() => document.querySelector("#conn")?.textContent === "live (polling)", null, { timeout: 10000 });
    const a = Number(await page.getAttribute("#updated-at", "data-now"));
    await sleep(2500);
    const b = Number(await page.getAttribute("#updated-at", "data-now"));
    check("falls back to polling /api/snapshot", b > a, `${a} -> ${b}`);
    await ctx.close();
  }

  // 4. The offline report, from a file, with no network at all.
  {
    const ctx0 = await browser.newContext();
    await ctx0.addCookies([{ name: "drover_dashboard", value: "mock", url: base }]);
    const r = await ctx0.request.get(base + "report.html");
    const html = await r.text();
    await ctx0.close();
    const file = path.join(shots, `report${suffix}.html`);
    fs.writeFileSync(file, html);
    const total = (html.match(/"worker":/g) ?? []).length;
    const ctx = await browser.newContext({ viewport, offline: true });
    const requests = [];
    await ctx.route("**/*", (route) => {
      const u = route.request().url();
      if (u.startsWith("file:")) return route.continue();
      requests.push(u);
      return route.abort();
    });
    const page = await ctx.newPage();
    watch(page, "report");
    await page.goto(pathToFileURL(file).href);
    await page.waitForFunction(() => document.querySelector("#conn")?.textContent === "report", null, { timeout: 10000 });
    for (const tab of ["overview", "jobs", "stream", "workers", "logs"]) {
      await page.click(`#tab-${tab}`);
      await sleep(tab === "overview" || tab === "stream" ? 600 : 200);
      await page.screenshot({ path: path.join(shots, `report-${tab}${suffix}.png`), fullPage: tab !== "workers" });
    }
    await page.click("#tab-stream");
    const bars = Number(await page.getAttribute("#stream-canvas", "data-bars"));
    check("report stream shows every task", bars === total && bars > 0, `${bars} drawn of ${total}; report ${(html.length / 1e6).toFixed(1)} MB`);
    const rowsR = await page.$$eval("#workers-table tbody tr", (t) => t.length);
    check("report workers table", rowsR > 0, String(rowsR));
    await page.click("#tab-overview");
    const stageRows = await page.$$eval("#stages-table tbody tr", (t) => t.length);
    const wl = await page.textContent("#report-workload");
    const sum = JSON.parse(await page.textContent("#report-summary"));
    check("report shows stage timings, workload and summary", stageRows >= 3 && wl.includes("</script><b>not markup</b>") && sum.tasks_done > 0, `${stageRows} stage rows`);
    check("report makes no request", requests.length === 0, requests.slice(0, 3).join(" "));
    await ctx.close();
  }
  // 5. A sparse report: the nullable fields null, no history, no bars, a waiting job.
  {
    const { buildReport } = await import("./report.mjs");
    const snapshot = {
      now: 3.2,
      server: { host: "login1", version: "0.1.0", started_unix: 1764900000 },
      workers: [
        { id: 1, host: "n1", pid: 7, threads: 1, busy: 0, queued: 0, batch_job: null, node: null, transport: "quic", rss_bytes: null, memory_bound_bytes: null, cpu_percent: null, tasks_done: 0, bytes_read: 0, walltime_left_s: null, state: "running" },
      ],
      pool: { target: null, adapt: null, submit_failure: "sbatch: error: invalid partition specified: gpu", jobs: [] },
      jobs: [{ id: 1, name: "x", kind: "tasks", state: "waiting", tasks: 0, counts: { waiting: 0, running: 0, succeeded: 0, failed: 0, timeout: 0, cancelled: 0 }, priority: 0, started: null, ended: null, eta_s: null, retries: 0, workers_lost: 0, stages: [] }],
      throughput: { tasks_per_s: 0, bytes_read_per_s: 0, bytes_written_per_s: 0 },
      totals: { tasks_done: 0, tasks_retried: 0, workers_lost: 0, bytes_read: 0, bytes_written: 0 },
      history: [],
      lost_workers: [],
      failures: [],
    };
    const file = path.join(shots, `report-sparse.html`);
    fs.writeFileSync(file, buildReport(snapshot, { now: 3.2, bars: [] }));
    const ctx = await browser.newContext({ viewport, offline: true });
    const page = await ctx.newPage();
    watch(page, "sparse");
    await page.goto(pathToFileURL(file).href);
    await page.waitForFunction(() => document.querySelector("#conn")?.textContent === "report", null, { timeout: 10000 });
    for (const tab of ["jobs", "stream", "workers", "logs", "overview"]) {
      await page.click(`#tab-${tab}`);
      await sleep(150);
    }
    const failure = await page.textContent("#submit-failure");
    check("sparse report renders (nulls, no history, no bars)", /invalid partition/.test(failure) && (await page.getAttribute("#stream-canvas", "data-bars")) === "0");
    await page.screenshot({ path: path.join(shots, `report-sparse.png`), fullPage: true });
    await ctx.close();
  }
  check("no page errors", errors.length === 0, errors.slice(0, 5).join(" | "));
} catch (e) {
  check("check ran to the end", false, e.stack);
} finally {
  await browser.close();
  srv.kill();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
