"""Medians, ratios against the issue's targets, memory bounds, result checks: the table."""

from __future__ import annotations

import statistics

import numpy as np

from .classic import tiny_chunks
from . import dashcase, movement, surface, taskjobs
from .common import (CHECK_RTOL, COMPRESSED, GiB, MiB, TARGET_DASK_OVER_DROVER, TARGET_DROVER_OVER_LIMIT,
                     TARGET_TINY_RATE, TINY_CHUNKED, TINY_TASK, mib, verdict)


def stats(runs: list[dict]) -> dict:
    s = [r["seconds"] for r in runs]
    d = {"median": statistics.median(s), "min": min(s), "max": max(s), "n": len(s), "all": s}
    own = [r["drover_seconds"] for r in runs if r.get("drover_seconds") is not None]
    if own:
        d["drover_own_median"] = statistics.median(own)
    walls = [r["wall_seconds"] for r in runs if r.get("wall_seconds") is not None]
    if walls:
        d["wall_median"] = statistics.median(walls)
    return d


def _chunks_of(bench, case: str, who: str, res: dict) -> int:
    if case == "tiny":
        return res["runs"][who][0]["chunks"] if who != "drover" else tiny_chunks(bench, "drover")
    return tiny_chunks(bench, who, TINY_CHUNKED[case] * TINY_TASK)


def _rate(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1e9:.2f} GB/s" if bytes_per_s >= 1e8 else f"{bytes_per_s / 1e6:.1f} MB/s"


def _data_line(case: str, info: dict) -> str:
    names = {"32015": "zstd", "32001": "blosc", "32004": "lz4", "32008": "bitshuffle"}

    def opts(v):
        v = v if isinstance(v, list) else [v]
        return "(" + ",".join(map(str, v)) + ")" if v and v != [None] else ""

    filt = "+".join(names.get(str(k), str(k)) + opts(v) for k, v in info["filters"].items()) or "none"
    cb = int(np.prod(info["chunks"])) * np.dtype(info["dtype"]).itemsize
    return (f"{case:<10} data: {tuple(info['shape'])} {info['dtype']}, chunks {tuple(info['chunks'])} "
            f"({cb / MiB:.2f} MiB), {info['n_chunks']:,} chunks, filters {filt}, "
            f"{info['bytes_stored'] / MiB:.0f} MiB stored, ratio {info['bytes_raw'] / info['bytes_stored']:.2f}x")


def _table(bench, cases: dict, lines: list[str]) -> None:
    lines.append(f"{'case':<10} {'contender':<18} {'median s':>9} {'min s':>9} {'runs':>5}  notes")
    for case, res in cases.items():
        if "error" in res and not res.get("stats"):
            lines.append(f"{case:<10} CRASHED: {res['error'].splitlines()[0]}")
            continue
        if case in COMPRESSED and res.get("data"):
            lines.append(_data_line(case, res["data"]))
        for who, st in res["stats"].items():
            note = ""
            first = res["runs"][who][0]
            if who in ("raw-read", "h5py-chunks", "raw-read+write"):
                b = first.get("bytes", 0)
                if case in COMPRESSED:
                    note = f"{b / MiB:.0f} MiB decoded, {b / st['median'] / 1e9:.2f} GB/s; mean in f64, 1 thread"
                else:
                    note = f"{b / GiB:.2f} GiB, {b / st['median'] / 1e9:.1f} GB/s"
            if who == "drover" and "drover_own_median" in st:
                note = f"drover's own `seconds` median {st['drover_own_median']:.3f}"
            if who == "decode-limit":
                lim = first.get("limit", {})
                dec = lim.get("bytes_decoded") or 0
                note = (f"{lim.get('chunks', '?'):,} chunks, {(lim.get('bytes_stored') or 0) / MiB:.0f} -> "
                        f"{dec / MiB:.0f} MiB, {_rate(dec / st['median'])} decoded; "
                        f"its own `seconds` (command wall median {st.get('wall_median', 0):.3f})")
            if taskjobs.is_taskjob(case):
                note = taskjobs.note(case, res, who)
            if case == "tiny" or case in TINY_CHUNKED:
                ch = _chunks_of(bench, case, who, res)
                note = (note + "; " if note else "") + f"{ch:,} chunks, {ch / st['median']:,.0f} chunks/s"
            lines.append(f"{case:<10} {who:<18} {st['median']:>9.3f} {st['min']:>9.3f} {st['n']:>5}  {note}")
        for n in res.get("notes", []):
            lines.append(f"{case:<10} note: {n}")
        if taskjobs.is_taskjob(case) and taskjobs.kept_up_line(res):
            lines.append(f"{case:<10} note: {taskjobs.kept_up_line(res)}")
        for who, e in res.get("contender_errors", {}).items():
            lines.append(f"{case:<10} {who} FAILED (left out): {' | '.join(e.strip().splitlines())}")


def _compressed_summary(case: str, med, add) -> dict:
    d, thr, dist = med(case, "drover"), med(case, "dask-threads"), med(case, "dask.distributed")
    lim, h5c = med(case, "decode-limit"), med(case, "h5py-chunks")
    row = {"drover": d, "dask-threads": thr, "dask.distributed": dist, "decode-limit": lim, "h5py-chunks": h5c,
           "dask_threads_over_drover": thr / d if d and thr else None,
           "dask_distributed_over_drover": dist / d if d and dist else None,
           "drover_over_decode_limit": d / lim if d and lim else None}
    oks = []
    for key, label, target, ok in (
            ("dask_threads_over_drover", "dask-threads / drover", f">= {TARGET_DASK_OVER_DROVER}x",
             lambda r: r >= TARGET_DASK_OVER_DROVER),
            ("dask_distributed_over_drover", "dask.distributed / drover", f">= {TARGET_DASK_OVER_DROVER}x",
             lambda r: r >= TARGET_DASK_OVER_DROVER),
            ("drover_over_decode_limit", "drover / decode-limit", f"<= {TARGET_DROVER_OVER_LIMIT}x",
             lambda r: r <= TARGET_DROVER_OVER_LIMIT)):
        r = row[key]
        if r is None:
            oks.append(None)
            add(case, label, "-", target, None)
        else:
            oks.append(ok(r))
            add(case, label, f"{r:.2f}x", target, oks[-1])
    if d and h5c:
        add(case, "drover / h5py-chunks (1 thread)", f"{d / h5c:.2f}x", "(reference)", None)
    if False in oks:
        row["verdict"] = "NOT MET"
    elif None in oks:
        row["verdict"] = "incomplete" if True in oks else "n/a"
    else:
        row["verdict"] = "MET"
    return row


def analyse(bench, results: dict) -> tuple[list[str], list[dict], dict]:
    """The printed table, the target verdicts, and a per-case summary for the JSON."""
    lines: list[str] = []
    targets: list[dict] = []
    summary: dict = {"compressed": {}, "tiny_chunks": {}, "surface": {}, "movement": {}, "taskjobs": {},
                     "dashboard": {}}
    a = bench.args
    cases = results["cases"]
    _table(bench, cases, lines)

    def ratio_line(case, label, value, target_text, ok):
        lines.append(f"  {case:<10} {label:<34} {value:>12}   {target_text:<18} {verdict(ok)}")
        targets.append({"case": case, "what": label, "value": value, "target": target_text, "verdict": verdict(ok)})

    def med(case, who):
        try:
            return cases[case]["stats"][who]["median"]
        except KeyError:
            return None

    lines.append("")
    lines.append("ratios (medians; drover = the whole `drover run` command"
                 + ("; task jobs: the whole `drover submit --wait` command, tasks/s against xargs):"
                    if any(taskjobs.is_taskjob(c) for c in cases) else "):"))
    if "reduction" in cases:
        d = med("reduction", "drover")
        raw, h5c = med("reduction", "raw-read"), med("reduction", "h5py-chunks")
        thr, dist = med("reduction", "dask-threads"), med("reduction", "dask.distributed")
        if d and raw:
            r = d / raw
            ratio_line("reduction", "drover / raw-read", f"{r:.2f}x", "<= 1.5x", r <= 1.5)
        if d and h5c:
            ratio_line("reduction", "drover / h5py-chunks", f"{d / h5c:.2f}x", "(reference)", None)
        if d and dist:
            r = dist / d
            ratio_line("reduction", "dask.distributed / drover", f"{r:.2f}x", ">= 4x", r >= 4)
        if d and thr:
            r = thr / d
            ratio_line("reduction", "dask-threads / drover", f"{r:.2f}x", ">= 1.5x", r >= 1.5)
    if "anomaly" in cases:
        d = med("anomaly", "drover")
        raw = med("anomaly", "raw-read+write")
        thr, dist = med("anomaly", "dask-threads"), med("anomaly", "dask.distributed")
        if d and raw:
            ratio_line("anomaly", "drover / raw-read+write", f"{d / raw:.2f}x", "(reference)", None)
        if d and dist:
            ratio_line("anomaly", "dask.distributed / drover", f"{dist / d:.2f}x", "(no target)", None)
        if d and thr:
            ratio_line("anomaly", "dask-threads / drover", f"{thr / d:.2f}x", "(no target)", None)
    for case in cases:
        if case in COMPRESSED and "stats" in cases[case]:
            summary["compressed"][case] = _compressed_summary(case, med, ratio_line)
    for case in cases:
        if surface.is_surface(case) and "stats" in cases[case]:
            summary["surface"][case] = surface.summary(case, med, ratio_line)
    for case in cases:
        if movement.is_movement(case) and "stats" in cases[case]:
            summary["movement"][case] = movement.summary(case, cases[case], med, ratio_line)
    for case in cases:
        if taskjobs.is_taskjob(case) and "stats" in cases[case]:
            summary["taskjobs"][case] = taskjobs.summary(case, cases[case], ratio_line)
    for case in cases:
        if dashcase.is_dash(case) and "stats" in cases[case]:
            summary["dashboard"][case] = dashcase.summary(case, cases[case], med, ratio_line)
    for case in [c for c in cases if (c == "tiny" or c in TINY_CHUNKED) and "stats" in cases[c]]:
        rates = {who: _chunks_of(bench, case, who, cases[case]) / st["median"]
                 for who, st in cases[case]["stats"].items()}
        rate_target = 100_000 if case == "tiny" else TARGET_TINY_RATE
        if "drover" in rates:
            r = rates["drover"]
            ratio_line(case, "drover chunks/s", f"{r:,.0f}", f">= {rate_target:,}", r >= rate_target)
        for who in ("dask-threads", "dask.distributed", "decode-limit"):
            if who in rates:
                ratio_line(case, f"{who} chunks/s", f"{rates[who]:,.0f}",
                           "(reference)" if who == "decode-limit" else "(anchor)", None)
        if "drover" in rates and "dask.distributed" in rates:
            r = rates["drover"] / rates["dask.distributed"]
            ratio_line(case, "drover / dask.distributed (rate)", f"{r:,.1f}x",
                       ">= 100x" if case == "tiny" else "(no target)", r >= 100 if case == "tiny" else None)
        if "drover" in rates and "dask-threads" in rates:
            ratio_line(case, "drover / dask-threads (rate)", f"{rates['drover'] / rates['dask-threads']:,.1f}x",
                       "(no target)", None)
        if case in TINY_CHUNKED:
            summary["tiny_chunks"][case] = {
                "hdf5_chunks": TINY_CHUNKED[case], "chunks_per_s": rates,
                "verdict": verdict(rates["drover"] >= TARGET_TINY_RATE) if "drover" in rates else "n/a"}

    if summary["compressed"]:
        lines.append("")
        lines.append(f"compressed cases (medians, s; targets: dask / drover >= {TARGET_DASK_OVER_DROVER}x for "
                     f"threads and distributed, drover / decode-limit <= {TARGET_DROVER_OVER_LIMIT}x):")
        lines.append(f"  {'case':<10} {'stored':>7} {'drover':>8} {'h5py 1t':>8} {'dask-thr':>8} {'dask-dist':>9} "
                     f"{'limit':>7} {'thr/drv':>8} {'dist/drv':>8} {'drv/limit':>9}  verdict")
        for case, row in summary["compressed"].items():
            info = cases[case].get("data", {})
            ratio = f"{info['bytes_raw'] / info['bytes_stored']:.2f}x" if info.get("bytes_stored") else "-"

            def s(v, w, fmt="{:.3f}"):
                return f"{'-' if v is None else fmt.format(v):>{w}}"

            lines.append(f"  {case:<10} {ratio:>7} {s(row['drover'], 8)} {s(row['h5py-chunks'], 8)} "
                         f"{s(row['dask-threads'], 8)} {s(row['dask.distributed'], 9)} {s(row['decode-limit'], 7)} "
                         f"{s(row['dask_threads_over_drover'], 8, '{:.2f}x')} "
                         f"{s(row['dask_distributed_over_drover'], 8, '{:.2f}x')} "
                         f"{s(row['drover_over_decode_limit'], 9, '{:.2f}x')}  {row['verdict']}")
    if summary["tiny_chunks"]:
        lines.append("")
        lines.append(f"tiny-chunk cases (HDF5 chunks of {TINY_TASK} elements, one task each; target "
                     f">= {TARGET_TINY_RATE:,} chunks/s):")
        for case, row in summary["tiny_chunks"].items():
            rates = ", ".join(f"{w} {r:,.0f}" for w, r in row["chunks_per_s"].items())
            lines.append(f"  {case:<10} {row['hdf5_chunks']:>9,} chunks: {rates} chunks/s  {row['verdict']}")

    _memory(bench, cases, lines, ratio_line, a)

    lines.append("")
    rt = (f"rtol 1e-9, compressed and surface cases {CHECK_RTOL:g}"
          if (set(COMPRESSED) | set(surface.SURFACE)) & set(cases) else "rtol=1e-9")
    lines.append(f"result checks (np.allclose {rt}, once per case after the warm-up):")
    for case, res in cases.items():
        for k, v in res.get("checks", {}).items():
            diff = f"  (max |diff| {v['max_abs_diff']:.3g}" if "max_abs_diff" in v else ""
            if diff and v.get("max_rel_diff") is not None:
                diff += f", rel {v['max_rel_diff']:.3g}"
            diff += ")" if diff else ""
            if "decode_limit" in v:
                diff = f"  (decode-limit {v['decode_limit']}, HDF5 index {v['hdf5_index']})"
            lines.append(f"  {case:<10} {k:<44} {'equal' if v.get('equal') else 'DIFFERENT'}{diff}")
    return lines, targets, summary


def _memory(bench, cases: dict, lines: list[str], ratio_line, a) -> None:
    block_bytes = int(np.prod(bench.block)) * 8
    if not any(res.get("drover_memory") or movement.is_movement(case) for case, res in cases.items()):
        return   # e.g. only task-job cases: their drover server's and worker's peaks are notes of the table
    lines.append("")
    if {"reduction", "anomaly"} & set(cases):
        blk = f"drover block {bench.block} f64 = {mib(block_bytes)} MiB, "
    else:
        blk = ""
    lines.append(f"peak memory (RSS, MiB; {blk}{bench.threads} thread(s) per worker, {a.workers} workers):")
    for case, res in cases.items():
        if movement.is_movement(case):
            peaks = {w: movement.peak_of(res, w) for w in res.get("stats", {})}
            lines.append(f"  {case:<10} peak memory, all processes of each contender (MiB): "
                         + ", ".join(f"{w} {mib(b)}" for w, b in peaks.items() if b))
            continue
        mem = res.get("drover_memory")
        if not mem:
            continue
        case_block, held = bench.memory_bounds(case)
        wbound = 2 * case_block * bench.threads + 64 * MiB
        dbound = 2 * held + 64 * MiB
        ws = mem["worker_peak_bytes"]
        blk = f"; block {tuple(res['drover_block'])} f64 = {mib(case_block)} MiB" if res.get("drover_block") else ""
        lines.append(f"  {case:<10} drover driver {mib(mem['driver_peak_bytes'])}, workers "
                     f"{', '.join(mib(w) for w in ws) or '-'}  ({mem['source']}{blk})")
        jd = mem.get("json_driver_peak_bytes")
        if jd is not None and mem["driver_peak_bytes"] and jd > 1.25 * mem["driver_peak_bytes"] + 8 * MiB:
            lines.append(f"  {case:<10} (drover's own driver_peak_rss_bytes says {mib(jd)}: ru_maxrss inherited "
                         f"from the launching process across exec, not the driver's)")
        dk = res.get("dask_worker_peak_bytes")
        if dk:
            lines.append(f"  {case:<10} dask.distributed workers {', '.join(mib(w) for w in dk)}")
        if ws:
            ratio_line(case, "drover worker peak RSS (max)", f"{mib(max(ws))} MiB",
                       f"<= {mib(wbound)} MiB", max(ws) <= wbound)
        if mem["driver_peak_bytes"] is not None:
            ratio_line(case, "drover driver peak RSS", f"{mib(mem['driver_peak_bytes'])} MiB",
                       f"<= {mib(dbound)} MiB", mem["driver_peak_bytes"] <= dbound)
