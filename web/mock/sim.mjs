// A simulated drover server for the dashboard's dev check: a pool of batch jobs whose
// workers run tasks of a few jobs (a discrete-event simulation in server seconds).
// No dependencies.

function rng(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

class Heap {
  constructor() {
    this.a = [];
  }
  get size() {
    return this.a.length;
  }
  peek() {
    return this.a[0];
  }
  push(x) {
    const a = this.a;
    a.push(x);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p].t <= a[i].t) break;
      [a[p], a[i]] = [a[i], a[p]];
      i = p;
    }
  }
  pop() {
    const a = this.a;
    const top = a[0];
    const last = a.pop();
    if (a.length) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && a[l].t < a[m].t) m = l;
        if (r < a.length && a[r].t < a[m].t) m = r;
        if (m === i) break;
        [a[m], a[i]] = [a[i], a[m]];
        i = m;
      }
    }
    return top;
  }
}

export class Sim {
  constructor({ workers = 1000, warmup = 180, seed = 7, historyRss = true } = {}) {
    this.rand = rng(seed);
    this.historyRss = historyRss;
    this.startWall = Date.now() / 1000 - warmup;
    this.started_unix = Math.floor(this.startWall);
    this.t = 0;
    this.heap = new Heap();
    this.bars = []; // completed, in completion order
    this.barsDone = [];
    this.history = [];
    this.buckets = new Map(); // second -> {n, r, w}
    this.lost = [];
    this.failures = [];
    this.totals = { tasks_done: 0, tasks_retried: 0, workers_lost: 0, bytes_read: 0, bytes_written: 0 };
    this.nextJobId = 6;
    this.jobs = [];
    this.workers = new Map();
    this.lanes = [];
    this.submitFailure = null;

    // The batch pool: one batch job per 100 workers, starting one after another.
    const perJob = 100;
    const nBatch = Math.ceil(workers / perJob);
    this.batch = [];
    let wid = 1;
    for (let k = 0; k < nBatch + 2; k++) {
      const pending = k >= nBatch;
      const start = pending ? Infinity : 2 + 3 * k + this.rand() * 2;
      const walltime = k === 0 ? 420 : 3600;
      const b = { id: String(4100 + k), start, end: start + walltime, workers: [] };
      this.batch.push(b);
      if (pending) continue;
      for (let i = 0; i < perJob && wid <= workers; i++, wid++) {
        const nodeNo = Math.floor((wid - 1) / 4) + 1;
        const host = "n" + String(nodeNo).padStart(4, "0");
        const threads = k % 3 === 2 ? 4 : 2;
        const w = {
          id: wid,
          host,
          pid: 10000 + Math.floor(this.rand() * 50000),
          threads,
          batch: b,
          join: start + 1 + this.rand() * 3,
          rss: 3e8 + this.rand() * 5e8,
          heavy: this.rand() < 0.04,
          bound: k === 4 ? null : 4e9,
          tasks_done: 0,
          bytes_read: 0,
          dead: false,
          gone: false,
          joined: false,
          lanes: [],
        };
        b.workers.push(w);
        this.workers.set(w.id, w);
        for (let l = 0; l < threads; l++) {
          const lane = { worker: w, lane: l, cur: null };
          this.lanes.push(lane);
          w.lanes.push(lane);
          this.heap.push({ t: w.join, lane });
        }
      }
    }

    this.addJob("warmup", "tasks", [["", 300]], 0.8, 0, 5);
    this.addJob("climatology", "array", [["stage 0 (reduce)", 8000], ["stage 1 (combine)", 400]], 7, 0.0005, 0);
    this.addJob("anomaly", "array", [["stage 0 (map)", 120000]], 9, 0.003, 0);
    this.addJob("render", "tasks", [["", 20000]], 16, 0.002, 0, /*after*/ 7);
    this.lastLoss = 0;
    this.advanceTo(warmup);
  }

  addJob(name, kind, stages, mean, failRate, priority, after = null) {
    const id = this.nextJobId++;
    const total = stages.reduce((a, s) => a + s[1], 0);
    this.jobs.push({
      id,
      name,
      kind,
      stages: stages.map(([label, n]) => ({ label: label || (kind === "tasks" ? "" : "stage 0"), total: n, assigned: 0, done: 0 })),
      total,
      assigned: 0,
      running: 0,
      succeeded: 0,
      failed: 0,
      retries: 0,
      workers_lost: 0,
      requeue: [],
      mean,
      failRate,
      priority,
      after,
      started: null,
      ended: null,
      rate: 0,
    });
  }

  now() {
    return Date.now() / 1000 - this.startWall;
  }

  /** Pick the next task: highest priority first, then spread across running jobs. */
  pick(t) {
    const ready = this.jobs.filter(
      (j) => j.ended == null && (j.requeue.length || j.assigned < j.total) && (j.after == null || this.jobs.find((o) => o.id === j.after)?.ended != null),
    );
    if (!ready.length) return null;
    const top = Math.max(...ready.map((j) => j.priority));
    const cands = ready.filter((j) => j.priority === top);
    const j = cands[Math.floor(this.rand() * cands.length)];
    if (j.started == null) j.started = t;
    let stage, index;
    if (j.requeue.length) ({ stage, index } = j.requeue.shift());
    else {
      let acc = 0;
      stage = j.stages.findIndex((s) => s.assigned < s.total);
      for (let i = 0; i < stage; i++) acc += j.stages[i].total;
      index = acc + j.stages[stage].assigned;
      j.stages[stage].assigned++;
      j.assigned++;
    }
    j.running++;
    const d = Math.max(0.05, j.mean * Math.exp((this.rand() - 0.5) * 1.2));
    return { job: j, stage, index, t0: t, t1: t + d };
  }

  complete(lane, task) {
    const j = task.job;
    const w = lane.worker;
    const ok = this.rand() >= j.failRate;
    j.running--;
    if (ok) j.succeeded++;
    else j.failed++;
    j.stages[task.stage].done++;
    const rd = j.kind === "array" ? 4e7 + this.rand() * 4e7 : 2e6;
    const wr = j.kind === "array" ? rd / 6 : 1e5;
    w.tasks_done++;
    w.bytes_read += rd;
    this.totals.tasks_done++;
    this.totals.bytes_read += rd;
    this.totals.bytes_written += wr;
    const sec = Math.floor(task.t1);
    const b = this.buckets.get(sec) ?? { n: 0, r: 0, w: 0 };
    b.n++;
    b.r += rd;
    b.w += wr;
    this.buckets.set(sec, b);
    const label = j.stages[task.stage].label;
    this.bars.push({ worker: w.id, lane: lane.lane, job: j.id, label, t0: round(task.t0), t1: round(task.t1), ok });
    if (!ok) {
      this.failures.push({
        t: round(task.t1),
        job: j.id,
        task: String(task.index),
        message: j.kind === "array" ? `chunk ${task.index}: HDF5 read failed: Input/output error (errno 5) on /scratch/era5/t2m_${1979 + (task.index % 40)}.h5` : `exit code ${1 + (task.index % 3)}`,
      });
    }
    if (j.succeeded + j.failed >= j.total && j.ended == null) j.ended = task.t1;
  }

  advanceTo(T) {
    while (this.t < T) {
      const step = Math.min(T, Math.floor(this.t) + 1);
      this.runUntil(step);
      this.t = step;
      if (Number.isInteger(step)) this.sample(step);
    }
  }

  runUntil(T) {
    // Batch jobs end: their workers leave.
    for (const b of this.batch) {
      if (b.end <= T) for (const w of b.workers) w.gone = true;
    }
    // Now and then a worker is lost.
    if (T - this.lastLoss >= 70 && T > 30) {
      this.lastLoss = T;
      const alive = [...this.workers.values()].filter((w) => w.joined && !w.dead && !w.gone);
      if (alive.length) {
        const w = alive[Math.floor(this.rand() * alive.length)];
        w.dead = true;
        let requeued = 0;
        for (const lane of w.lanes) {
          if (lane.cur) {
            const j = lane.cur.job;
            j.running--;
            j.retries++;
            j.workers_lost++;
            j.requeue.push({ stage: lane.cur.stage, index: lane.cur.index });
            lane.cur = null;
            requeued++;
          }
        }
        this.totals.workers_lost++;
        this.totals.tasks_retried += requeued;
        this.lost.push({ t: round(T), id: w.id, host: w.host, pid: w.pid, batch_job: w.batch.id, reason: this.rand() < 0.5 ? "no heartbeat for 30 s" : "connection closed (killed by signal 9)", tasks_requeued: requeued });
      }
    }
    while (this.heap.size && this.heap.peek().t <= T) {
      const { t, lane } = this.heap.pop();
      const w = lane.worker;
      if (w.dead) continue;
      w.joined = true;
      if (lane.cur) {
        this.complete(lane, lane.cur);
        lane.cur = null;
      }
      if (w.gone || w.batch.end - t < 60) {
        // Draining: take no new task.
        if (!w.gone) this.heap.push({ t: t + 1, lane });
        continue;
      }
      const task = this.pick(t);
      if (!task) {
        this.heap.push({ t: t + 0.5, lane });
        continue;
      }
      lane.cur = task;
      this.heap.push({ t: task.t1 + 0.002 + this.rand() * 0.01, lane });
    }
    // Keep something running: a new job when all have ended.
    if (this.jobs.every((j) => j.ended != null)) {
      const n = this.nextJobId;
      this.addJob("sweep-" + n, n % 2 ? "array" : "tasks", [[n % 2 ? "stage 0 (map)" : "", 12000]], 6, 0.002, 0);
    }
  }

  sample(sec) {
    const b = this.buckets.get(sec - 1) ?? { n: 0, r: 0, w: 0 };
    this.buckets.delete(sec - 700);
    let workers = 0;
    let busy = 0;
    const rss = {};
    for (const w of this.workers.values()) {
      if (!w.joined || w.dead || w.gone) continue;
      workers++;
      let wb = 0;
      for (const lane of w.lanes) if (lane.cur) wb++;
      w.busy = wb;
      const target = (w.heavy ? 3.1e9 : 6e8) + wb * (w.heavy ? 3e8 : 2.5e8);
      w.rss += (target - w.rss) * 0.1 + (this.rand() - 0.5) * 6e7;
      w.rss = Math.max(1e8, w.rss);
      busy += wb;
      rss[w.id] = Math.round(w.rss);
    }
    const point = { t: sec, tasks_per_s: b.n, bytes_read_per_s: b.r, bytes_written_per_s: b.w, workers, busy };
    if (this.historyRss) point.rss_bytes = rss;
    this.history.push(point);
    if (this.history.length > 600) this.history.shift();
    // Job rates for ETAs.
    for (const j of this.jobs) {
      const done = j.succeeded + j.failed;
      j.rate = j.rate * 0.9 + 0.1 * (done - (j.lastDone ?? done));
      j.lastDone = done;
    }
    this.submitFailure = Math.floor(sec / 120) % 2 === 1 && sec % 120 < 40 ? "sbatch: error: QOSMaxSubmitJobPerUserLimit\nsbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)" : null;
  }

  snapshot() {
    const now = this.now();
    this.advanceTo(now);
    const workers = [];
    for (const w of this.workers.values()) {
      if (!w.joined || w.dead || w.gone) continue;
      const left = w.batch.end - now;
      workers.push({
        id: w.id,
        host: w.host,
        pid: w.pid,
        threads: w.threads,
        busy: w.busy ?? 0,
        queued: Math.floor(this.rand() * 3),
        batch_job: w.batch.id,
        node: w.host,
        transport: w.id % 10 === 7 ? "tcp" : "quic",
        rss_bytes: Math.round(w.rss),
        memory_bound_bytes: w.bound,
        cpu_percent: round((w.busy ?? 0) * 93 + this.rand() * 6, 1),
        tasks_done: w.tasks_done,
        bytes_read: w.bytes_read,
        walltime_left_s: Math.round(left),
        state: left < 60 ? "draining" : "running",
      });
    }
    const pool = {
      target: this.batch.length,
      adapt: [1, this.batch.length],
      submit_failure: this.submitFailure,
      jobs: this.batch.map((b) => ({
        id: b.id,
        state: b.start > now ? "pending" : b.end <= now ? "gone" : b.end - now < 300 ? "expiring" : "running",
        workers: b.workers.filter((w) => w.joined && !w.dead && !w.gone).length,
        retiring: b.end - now < 60 && b.end > now,
      })),
    };
    const jobs = this.jobs.map((j) => {
      const done = j.succeeded + j.failed;
      const state = j.ended != null ? (j.failed ? "failed" : "succeeded") : j.started != null ? "running" : "waiting";
      return {
        id: j.id,
        name: j.name,
        kind: j.kind,
        state,
        tasks: j.total,
        counts: { waiting: j.total - done - j.running, running: j.running, succeeded: j.succeeded, failed: j.failed, timeout: 0, cancelled: 0 },
        priority: j.priority,
        started: j.started == null ? null : round(j.started),
        ended: j.ended == null ? null : round(j.ended),
        eta_s: state === "running" && j.rate > 0.01 ? round((j.total - done) / j.rate, 1) : null,
        retries: j.retries,
        workers_lost: j.workers_lost,
        stages: j.kind === "array" ? j.stages.map((s) => ({ label: s.label, done: s.done, total: s.total })) : [],
      };
    });
    const last = this.history[this.history.length - 1];
    return {
      now: round(now),
      server: { host: "login1", version: "0.1.0", started_unix: this.started_unix },
      workers,
      pool,
      jobs,
      throughput: last
        ? { tasks_per_s: last.tasks_per_s, bytes_read_per_s: last.bytes_read_per_s, bytes_written_per_s: last.bytes_written_per_s }
        : { tasks_per_s: 0, bytes_read_per_s: 0, bytes_written_per_s: 0 },
      totals: { ...this.totals },
      history: this.history,
      lost_workers: this.lost,
      failures: this.failures.slice(-200),
    };
  }

  stream(since, until, running = true) {
    const now = this.now();
    this.advanceTo(now);
    const bars = [];
    // Completed bars are in completion order, so t1 grows (within a few ms).
    let lo = 0;
    let hi = this.bars.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.bars[mid].t1 < since - 1) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.bars.length; i++) {
      const b = this.bars[i];
      if (b.t1 >= since && b.t0 <= until) bars.push(b);
    }
    if (running) {
      for (const lane of this.lanes) {
        const c = lane.cur;
        if (c && !lane.worker.dead && c.t0 <= until && c.t0 <= now)
          bars.push({ worker: lane.worker.id, lane: lane.lane, job: c.job.id, label: c.job.stages[c.stage].label, t0: round(c.t0), t1: null, ok: true });
      }
    }
    return { now: round(now), bars };
  }
}

function round(x, d = 3) {
  const m = 10 ** d;
  return Math.round(x * m) / m;
}
