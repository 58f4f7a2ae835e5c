"""The run of one case: an untimed warm-up of every contender, the result checks, then
R rounds whose contender order rotates every round."""

from __future__ import annotations

import gc
import logging
import os
import signal
import time

from . import classic, dashcase, movement, newcases, surface, taskjobs
from .common import CONTENDERS, HDF5_CHUNK, OUT_DIR, SIZES, BenchError, jsonable, log, rm, default_block
from .contenders import H5Source, load_plugins, plugin_path, run_drover
from .data import big_path, chunk_index, tiny_path
from .memory import reset_hwm, status_kb


class Bench:
    def __init__(self, args):
        self.args = args
        self.size = SIZES["quick" if args.quick else "full"]
        self.tag = "quick" if args.quick else "full"
        self.shape = self.size["shape"]
        self.big = big_path(self.shape)
        self.tiny = tiny_path(self.size["tiny_n"])
        self.block = (args.block_rows, self.shape[1]) if args.block_rows else default_block(self.shape, HDF5_CHUNK)
        self.threads = max(1, (os.cpu_count() or 1) // args.workers)   # drover's embedded default
        self.client = None
        self.cluster = None
        self.dask_pids: list[int] = []
        self.cluster_pids: list[int] = []   # the LocalCluster's nannies and workers
        self.buf: bytearray | None = None
        self.out_chunks = HDF5_CHUNK
        self.case_info: dict[str, dict] = {}
        self.workloads: dict = {}
        self.plugins = load_plugins()
        self.drover_env, self.drover_env_note = self._drover_env()
        self.decode_limit = args.decode_limit if os.access(args.decode_limit, os.X_OK) else None
        OUT_DIR.mkdir(parents=True, exist_ok=True)

    def _drover_env(self):
        """drover's environment: this process's, as a user's would be (drover decodes
        every filter of the benchmark itself); with --plugin-path, HDF5_PLUGIN_PATH =
        hdf5plugin's plugins unless set."""
        env = dict(os.environ)
        if not self.args.plugin_path:
            return env, "HDF5_PLUGIN_PATH as it was (drover decodes the filters itself)"
        if env.get("HDF5_PLUGIN_PATH"):
            return env, f"HDF5_PLUGIN_PATH={env['HDF5_PLUGIN_PATH']} (from the environment)"
        pp = plugin_path()
        if pp is None:
            return env, "no hdf5plugin: HDF5_PLUGIN_PATH not set"
        env["HDF5_PLUGIN_PATH"] = pp
        return env, f"HDF5_PLUGIN_PATH={pp} (hdf5plugin's filters)"

    def workload(self, case: str):
        if case not in self.workloads:
            self.workloads[case] = self._mod(case).workload(self, case)
        return self.workloads[case]

    # ---- dask.distributed: one warm cluster for the whole run

    def start_cluster(self) -> None:
        import dask
        from distributed import Client, LocalCluster

        # dask's scratch space in the benchmark's folder, not /tmp/dask-scratch-space;
        # no worker time-to-live: the cluster is paused while the other contenders run
        dask.config.set({"temporary-directory": str(OUT_DIR / "dask-scratch"),
                         "distributed.scheduler.worker-ttl": None})
        t0 = time.perf_counter()
        self.cluster = LocalCluster(
            n_workers=self.args.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            local_directory=str(OUT_DIR / "dask-scratch"),   # not /tmp/dask-scratch-space
        )
        self.client = Client(self.cluster, set_as_default=False)
        self.client.wait_for_workers(self.args.workers)
        self.dask_pids = sorted(self.client.run(os.getpid).values())
        if self.plugins:
            self.client.run(load_plugins)   # the plugin filters in every worker, outside timing
        import psutil
        self.cluster_pids = [p.pid for p in psutil.Process().children(recursive=True)]
        log(f"dask.distributed LocalCluster up ({self.args.workers} x 1 thread, pids {self.dask_pids}) "
            f"in {time.perf_counter() - t0:.1f} s (not timed); paused (SIGSTOP) except while it is timed")
        self.pause_cluster()

    def _signal_cluster(self, sig) -> None:
        for pid in self.cluster_pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def pause_cluster(self) -> None:
        """An idle LocalCluster is not idle: its nannies and workers wake many times a
        second (event-loop ticks, heartbeats, system monitors). Measured beside a
        2-worker drover run on these 2 cores, they took 28% of a core and slowed it by
        6-8%. Stopped, they take nothing; the scheduler and client threads of this
        process stay (about 2% of a core)."""
        self._signal_cluster(signal.SIGSTOP)

    def resume_cluster(self) -> None:
        self._signal_cluster(signal.SIGCONT)
        self.client.run(os.getpid)   # untimed: every worker answers again before it is timed

    def stop_cluster(self) -> None:
        self.resume_cluster()
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    # ---- helpers for the dask contenders

    @staticmethod
    def dask_kind(who: str) -> bool:
        """True for dask threads, False for dask.distributed."""
        if who not in ("dask-threads", "dask.distributed"):
            raise ValueError(who)
        return who == "dask-threads"

    def dask_compute(self, expr, who: str):
        import dask

        if self.dask_kind(who):
            with dask.config.set(scheduler="threads", num_workers=self.args.workers):
                return expr.compute(scheduler="threads", num_workers=self.args.workers)
        return self.client.compute(expr).result()

    def dask_source(self, path, name: str, f, who: str, rows: int | None = None):
        """dask threads: the h5py dataset itself (or a prefix of it); distributed: H5Source."""
        if self.dask_kind(who) and (rows is None or rows >= f[name].shape[0]):
            return f[name]
        return H5Source(str(path), name, rows)

    # ---- one run of one contender; returns {"seconds": ..., ...}

    def out_path(self, case: str, who: str):
        return OUT_DIR / f"{case}-{who.replace('.', '-')}.h5"

    def run_one(self, case: str, who: str) -> dict:
        if who != "dask.distributed" or not self.cluster_pids:
            return self._run_one(case, who)
        self.resume_cluster()
        try:
            return self._run_one(case, who)
        finally:
            self.pause_cluster()

    def _run_one(self, case: str, who: str) -> dict:
        if who == "drover" and not taskjobs.is_taskjob(case) and not dashcase.is_dash(case):
            rm(self.out_path(case, "drover"))
            return run_drover(self.args.drover, self.workload(case), self.args.workers, self.args.timeout,
                              env=self.drover_env)
        return self._mod(case).run_one(self, case, who)

    @staticmethod
    def _mod(case: str):
        """The module that knows a case: classic, newcases (compressed, tiny chunks),
        surface (expression-surface cases), movement or taskjobs (task jobs)."""
        if taskjobs.is_taskjob(case):
            return taskjobs
        if dashcase.is_dash(case):
            return dashcase
        if surface.is_surface(case):
            return surface
        if movement.is_movement(case):
            return movement
        return newcases if newcases.is_new(case) else classic

    def cleanup(self, case: str, who: str) -> None:
        if movement.is_movement(case):
            movement.cleanup(self, case, who)
            return
        for p in (self.out_path(case, who), self.out_path(case, "raw")):
            rm(p)

    def contenders(self, case: str) -> tuple[list[str], list[str]]:
        names = list(CONTENDERS[case])
        notes = list(movement.NOTES.get(case, [])) + taskjobs.notes(self, case) + dashcase.notes(self, case)
        if self.args.no_distributed:
            names = [n for n in names if n != "dask.distributed"]
        if "decode-limit" in names and self.decode_limit is None:
            names.remove("decode-limit")
            notes.append(f"decode-limit skipped: no executable at {self.args.decode_limit} "
                         "(cargo build --release --example decode_limit, or --decode-limit BIN)")
        return names, notes

    # ---- a case: warm-up, check, rounds

    def run_case(self, case: str) -> dict:
        mod = self._mod(case)
        if not hasattr(mod, "setup"):
            return self._run_case(case)
        # cases that keep something warm for their contenders (taskjobs: a drover server and
        # worker, Parsl's executor): set up once before the warm-up, torn down after the rounds
        names, _ = self.contenders(case)
        errors = {}
        try:
            errors = mod.setup(self, case, names)
            for who, e in errors.items():
                log(f"  set-up {who}: FAILED, left out of this case: {e}")
            res = self._run_case(case, skip=errors)
        finally:
            kept = mod.teardown(self, case)
        res["kept_up"] = kept
        return res

    def _run_case(self, case: str, skip: dict | None = None) -> dict:
        names, notes = self.contenders(case)
        new = (newcases.is_new(case) or surface.is_surface(case) or movement.is_movement(case)
               or taskjobs.is_taskjob(case) or dashcase.is_dash(case))
        res: dict = {"contenders": names, "notes": notes, "warmup": {}, "contender_errors": dict(skip or {})}
        names[:] = [n for n in names if n not in res["contender_errors"]]
        for n in notes:
            log(f"{case}: {n}")
        if new and not taskjobs.is_taskjob(case) and not dashcase.is_dash(case):
            mod = self._mod(case)
            self.case_info[case] = chunk_index(mod.data_path(self, case), getattr(mod, "index_dataset", lambda _c: "t")(case))
            res["data"] = self.case_info[case]
            if hasattr(mod, "block_of"):   # the movement cases' blocks are the plan's (--explain)
                res["drover_block"] = list(mod.block_of(self, case))
        hwm_reset = reset_hwm(self.dask_pids) if self.dask_pids else False
        if self.dask_pids and not hwm_reset:
            res["dask_memory_note"] = "could not reset VmHWM of dask workers: peaks are since their start"

        log(f"{case}: warm-up (untimed), order {', '.join(names)}")
        warm = {}
        for who in list(names):
            try:
                r = self.run_one(case, who)
            except BenchError as e:   # drop that contender, go on with the others
                log(f"  warm-up {who}: FAILED, left out of this case: {e}")
                res["contender_errors"][who] = str(e)
                names.remove(who)
                continue
            warm[who] = r
            log(f"  warm-up {who}: {r['seconds']:.3f} s")
            if not new:
                classic.after_warmup(self, case, who)
        res["contenders"] = names
        res["runs"] = {n: [] for n in names}
        res["warmup"] = {k: jsonable(v) for k, v in warm.items()}
        res["checks"] = self._mod(case).check(self, case, warm)
        for k, v in res["checks"].items():
            log(f"  check {k}: {'equal' if v.get('equal') else 'DIFFERENT'} {v}")
        for who in names:
            self.cleanup(case, who)
        del warm
        gc.collect()

        for rnd in range(self.args.rounds):
            k = rnd % len(names) if names else 0
            order = names[k:] + names[:k]
            line = []
            for who in order:
                r = self.run_one(case, who)
                self.cleanup(case, who)
                r.pop("result", None)
                res["runs"][who].append(r)
                line.append(f"{who} {r['seconds']:.3f}")
            log(f"{case} round {rnd + 1}/{self.args.rounds}: " + ", ".join(line))

        if self.dask_pids and "dask.distributed" in names:
            res["dask_worker_peak_bytes"] = [(status_kb(p) or (0, 0))[0] * 1024 for p in self.dask_pids]
        return res

    def memory_bounds(self, case: str) -> tuple[int, int]:
        return self._mod(case).memory_bounds(self, case)
