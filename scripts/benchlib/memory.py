"""Peak memory of processes: a sampler of a process tree's VmHWM, resetting the mark."""

from __future__ import annotations

import os
import threading


def status_kb(pid: int) -> tuple[int, int] | None:
    """(VmHWM, VmRSS) in KiB from /proc/PID/status, None when the process is gone."""
    hwm = rss = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1])
                elif line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return hwm, rss


def _children(pid: int) -> set[int]:
    """Direct children of every thread of PID (cheap: /proc/PID/task/*/children)."""
    kids: set[int] = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                kids.update(int(x) for x in f.read().split())
        except (OSError, ValueError):
            pass
    return kids


class TreeSampler(threading.Thread):
    """Peak RSS of a process and its descendants: every `interval` s, read each one's
    VmHWM (the kernel's own high-water mark, so only the last interval before a process
    exits can be missed)."""

    def __init__(self, root: int, interval: float = 0.02):
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.peak_kb: dict[int, int] = {}
        self.cmd: dict[int, str] = {}
        self._halt = threading.Event()
        self._children_file = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")

    def _tree(self) -> set[int]:
        if self._children_file:
            seen, todo = {self.root}, [self.root]
            while todo:
                for k in _children(todo.pop()):
                    if k not in seen:
                        seen.add(k)
                        todo.append(k)
            return seen
        import psutil

        try:
            return {self.root} | {c.pid for c in psutil.Process(self.root).children(recursive=True)}
        except psutil.Error:
            return {self.root}

    @staticmethod
    def _cmdline(pid: int) -> str | None:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return None

    def sample(self) -> None:
        for pid in sorted(self._tree(), key=lambda p: p != self.root):   # the root first
            if pid not in self.cmd:
                cmd = self._cmdline(pid)
                if cmd is None:
                    continue
                if pid != self.root and cmd == self.cmd.get(self.root):
                    continue   # forked but not yet exec'd: its memory is still the parent's
                self.cmd[pid] = cmd
            st = status_kb(pid)
            if st is None:
                continue
            self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), st[0], st[1])

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def driver_bytes(self) -> int | None:
        kb = self.peak_kb.get(self.root)
        return None if kb is None else kb * 1024

    def worker_bytes(self) -> list[int]:
        return sorted(
            (kb * 1024 for pid, kb in self.peak_kb.items() if pid != self.root and " worker" in self.cmd.get(pid, "")),
            reverse=True,
        )


def reset_hwm(pids) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of PIDS; False when not allowed."""
    ok = True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            ok = False
    return ok


def drover_memory(runs: list[dict]) -> dict:
    """Peaks over all timed runs: driver, and each worker slot (largest first)."""
    driver = []
    workers: list[int] = []
    json_driver = []
    json_worker = []
    for r in runs:
        m = r["memory"]
        # The driver's own /proc VmHWM, sampled: drover's driver_peak_rss_bytes is
        # getrusage(RUSAGE_SELF).ru_maxrss, which keeps the high-water mark of the process
        # that spawned it across exec (here: this Python process, buffers included).
        d = m["sampled_driver_bytes"] if m["sampled_driver_bytes"] is not None else m["json_driver_bytes"]
        if d is not None:
            driver.append(d)
        if m["json_driver_bytes"] is not None:
            json_driver.append(m["json_driver_bytes"])
        jw = m["json_worker_bytes"]
        per = list(m["sampled_worker_bytes"])
        if isinstance(jw, list):
            per = sorted(jw, reverse=True)
            json_worker.extend(jw)
        elif isinstance(jw, (int, float)):
            json_worker.append(int(jw))
            # the JSON gives the largest worker; keep the sampled values for the others
            per = sorted([int(jw)] + per[1:], reverse=True) if per else [int(jw)]
        for i, b in enumerate(per):
            if i < len(workers):
                workers[i] = max(workers[i], b)
            else:
                workers.append(b)
    src = "driver: /proc VmHWM sampled every 20 ms; workers: " + (
        "drover --json worker_peak_rss_bytes (largest) + sampled VmHWM" if json_worker else "sampled VmHWM")
    return {
        "driver_peak_bytes": max(driver) if driver else None,
        "worker_peak_bytes": workers,
        "json_driver_peak_bytes": max(json_driver) if json_driver else None,
        "json_worker_peak_bytes": max(json_worker) if json_worker else None,
        "source": src,
    }
