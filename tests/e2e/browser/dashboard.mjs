// Drive the dashboard in headless Chromium (Debian's, through playwright-core from
// web/node_modules) and print one JSON object of what was seen.
//
//   node dashboard.mjs live URL SHOTS_DIR        a server's dashboard while a run goes
//   node dashboard.mjs report FILE SHOTS_DIR     a report file, with the network cut
//   node dashboard.mjs workers URL SHOTS_DIR     the workers table of a large pool: rows,
//                                                sorting, time to redraw after an update
//   node dashboard.mjs watch URL TAB             keep TAB of a dashboard open (live) until
//                                                stdin closes (the benchmark's browser)
//
// Live: worker rows appear; the server time, a job's progress and the task stream
// change; each tab is screenshotted. Report: no request leaves the page; the stream
// draws every bar of the report's data.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const web = path.resolve(here, "../../../web");
const { chromium } = createRequire(path.join(web, "package.json"))("playwright-core");

const [mode, target, shots] = process.argv.slice(2);
const out = { mode, ok: false, errors: [] };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, f, timeout = 20000) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => out.errors.push(String(e)));
  const tab = async (name) => {
    await page.click(`#tab-${name}`);
    await sleep(400);
  };
  const shot = (name) => page.screenshot({ path: path.join(shots, `${mode}-${name}.png`) });
  const bars = () => page.$eval("#stream-canvas", (c) => Number(c.dataset.bars || 0)).catch(() => 0);

  if (mode === "workers") {
    await page.goto(target);
    await tab("workers");
    const rows = () => page.$$eval("#workers-table tbody tr", (r) => r.length);
    out.rows = await until("worker rows", rows);
    const firstHost = () => page.$eval("#workers-table tbody tr td:nth-child(2)", (td) => td.textContent);
    const before = await firstHost();
    // Sort by host, descending: the first row changes.
    await page.click('#workers-table th[data-key="host"]');
    await page.click('#workers-table th[data-key="host"]');
    await sleep(300);
    out.sorted_first = await firstHost();
    out.sort_changed = out.sorted_first !== before;
    // How long the page spends redrawing the table on each snapshot.
    out.redraw_ms = await page.evaluate(async () => {
      const t0 = performance.now();
      let busy = 0;
      const obs = new PerformanceObserver((l) => { for (const e of l.getEntries()) busy += e.duration; });
      try { obs.observe({ entryTypes: ["longtask"] }); } catch { /* not supported */ }
      await new Promise((r) => setTimeout(r, 5000));
      obs.disconnect();
      return { long_tasks_ms: busy, window_ms: performance.now() - t0 };
    });
    await shot("workers");
    out.ok = out.errors.length === 0 && out.sort_changed;
  } else if (mode === "watch") {
    await page.goto(target);
    await tab(shots || "stream");
    console.log(JSON.stringify({ ready: true }));
    await new Promise((done) => {
      process.stdin.on("end", done);
      process.stdin.on("close", done);
      process.on("SIGTERM", done);
      process.stdin.resume();
    });
    out.snapshots = await page.textContent("#updated-at");
    out.ok = out.errors.length === 0;
  } else if (mode === "live") {
    await page.goto(target);
    out.url_after_login = new URL(page.url()).pathname + new URL(page.url()).search;
    await tab("workers");
    out.workers = await until("worker rows", async () => (await page.$$("#workers-table tbody tr")).length);
    const linkCol = await page.$$eval("#workers-table thead th", (ths) => ths.findIndex((th) => th.dataset.key === "transport"));
    out.links = await page.$$eval("#workers-table tbody tr", (trs, i) => trs.map((tr) => tr.children[i]?.textContent ?? null), linkCol);
    const t0 = await page.textContent("#updated-at");
    await until("the server time to move", async () => (await page.textContent("#updated-at")) !== t0, 5000);
    out.time_moved = true;
    await shot("workers");
    await tab("jobs");
    const done = () => page.$$eval("#jobs-table tbody tr .progress", (ps) => ps.map((p) => Number(p.dataset.done)));
    const first = await until("job rows", async () => { const d = await done(); return d.length ? d : null; });
    await until("a job's progress to move", async () => {
      const d = await done();
      return d.some((v, i) => v !== (first[i] ?? v)) || d.length !== first.length;
    });
    out.progress_moved = true;
    await shot("jobs");
    await tab("stream");
    const b0 = await until("bars in the task stream", bars);
    await until("the task stream to change", async () => (await bars()) !== b0);
    out.stream_moved = true;
    await page.click('button[data-span="30"]');
    await sleep(1200);
    await shot("stream");
    await tab("overview");
    await shot("overview");
    await tab("logs");
    await shot("logs");
    out.ok = out.errors.length === 0;
  } else {
    const requests = [];
    await context.setOffline(true);
    await context.route("**/*", (route) => {
      const u = route.request().url();
      if (u.startsWith("file:") || u.startsWith("data:")) return route.continue();
      requests.push(u);
      return route.abort();
    });
    await page.goto(pathToFileURL(path.resolve(target)).href);
    const data = await page.evaluate(() => {
      const r = window.DROVER_REPORT;
      return r ? { bars: r.stream.bars.length, workers: r.snapshot.workers.length, jobs: r.snapshot.jobs.length } : null;
    });
    out.data = data;
    await tab("stream");
    out.bars = await until("bars drawn", bars, 10000);
    await shot("stream");
    await tab("jobs");
    out.job_rows = (await page.$$("#jobs-table tbody tr")).length;
    await shot("jobs");
    await tab("workers");
    out.worker_rows = (await page.$$("#workers-table tbody tr")).length;
    await tab("overview");
    await shot("overview");
    out.requests = requests;
    out.ok = out.errors.length === 0 && requests.length === 0 && data && out.bars === data.bars;
  }
} catch (e) {
  out.errors.push(String(e && e.stack || e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
process.exit(out.ok ? 0 : 1);
