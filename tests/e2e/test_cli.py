"""What a person meets on the command line (issue 17): logs without colour codes when
they go to a file, each event said once, and the human summary's wording."""

from __future__ import annotations

import re
import subprocess
import time

from pathlib import Path

import h5py
import numpy as np

from conftest import assert_refused, child_env, kill_group, kill_marked, new_mark, run_drover


def tiny_workload(tmp_path: Path, extra: str = "") -> Path:
    """tmp_path/w.toml: sum(x) of ten numbers into o.h5 (and `extra` outputs)."""
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["x"] = np.arange(10.0)
    w = tmp_path / "w.toml"
    w.write_text('[inputs.x]\nfile = "x.h5"\ndataset = "/x"\n'
                 '[[outputs]]\nexpr = "sum(x)"\nfile = "o.h5"\ndataset = "/s"\n' + extra)
    return w


def test_server_logs_into_a_file_have_no_colour_and_say_listening_once(drover, tmp_path):
    mark = new_mark()
    srv = tmp_path / "srv"
    out, err = tmp_path / "server.out", tmp_path / "server.err"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen([str(drover), "server", "start", "--dir", str(srv)], env=child_env(mark),
                                stdout=o, stderr=e, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (srv / "access.toml").exists():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        stop = run_drover(drover, ["server", "stop", "--dir", srv])
        assert stop.rc == 0, stop.describe()
        assert proc.wait(timeout=30) == 0
    finally:
        kill_group(proc)
        kill_marked(mark)
    text = out.read_text() + err.read_text()
    assert "\x1b[" not in text, f"colour codes in a log file: {text[:500]!r}"
    assert text.count("listening") == 1, text
    assert "INFO" in err.read_text(), "the server logs at info by default"


def test_a_finished_run_says_worker_counts_right_and_no_error(drover, tmp_path):
    """"1 worker" in the singular; a worker still joining when a quick run has already
    finished leaves quietly instead of printing an error under a successful run."""
    tiny_workload(tmp_path)
    for n in (1, 2, 4):
        r = run_drover(drover, ["run", tmp_path / "w.toml", "--workers", str(n)])
        assert r.rc == 0, r.describe()
        m = re.search(r"MB read, (\d+) (workers?)\)", r.stdout)
        assert m, r.stdout
        assert m.group(2) == ("worker" if m.group(1) == "1" else "workers"), r.stdout
        assert "error" not in r.stderr, f"a successful run printed: {r.stderr}"
        assert "\x1b[" not in r.stdout + r.stderr


def test_sites_shortens_descriptions_between_words(drover):
    """`drover sites` fits its descriptions to COLUMNS without cutting a word."""
    root = Path(__file__).resolve().parents[2]
    r = run_drover(drover, ["sites"], env={"COLUMNS": "100"})
    assert r.rc == 0, r.describe()
    rows = [l for l in r.stdout.splitlines()[1:] if l.strip() and not l.startswith("Use one")]
    assert len(rows) >= 6, r.stdout
    shortened = 0
    for row in rows:
        name, note = row.split()[0], row[62:]
        full = (root / "site-configs" / f"{name}.toml").read_text().splitlines()[0].lstrip("#").strip()
        assert len(row) <= 100, row
        if note.endswith("...") and note != full:
            shortened += 1
            kept = note[:-3]
            assert full.startswith(kept) and full[len(kept)] == " ", f"{name}: {note!r} cuts {full!r}"
        else:
            assert note == full, (note, full)
    assert shortened, "some descriptions are longer than 38 columns"


def test_a_bundled_site_with_a_placeholder_warns_and_is_refused_for_submission(drover, tmp_path):
    """perlmutter's `account = "mXXXX"`: job-script renders it with a warning naming the
    key; run and server start refuse it (exit 2) before anything is submitted."""
    r = run_drover(drover, ["job-script", "--site", "perlmutter", "--dir", tmp_path / "srv"])
    assert r.rc == 0, r.describe()
    warnings = [l for l in r.stderr.splitlines() if l.startswith("warning: ")]
    assert len(warnings) == 1 and 'account = "mXXXX"' in warnings[0], r.stderr
    assert "saves it first" in r.stderr, r.stderr
    tiny_workload(tmp_path)
    for args in (["run", tmp_path / "w.toml", "--site", "perlmutter", "--workers", "2"],
                 ["server", "start", "--site", "perlmutter", "--dir", tmp_path / "srv"]):
        run = run_drover(drover, args)
        assert_refused(run, ['site perlmutter: account = "mXXXX" is a placeholder', "--site FILE"], tmp_path / "o.h5")
    assert not (tmp_path / "srv" / "access.toml").exists()


def test_a_run_that_replaces_an_output_file_says_so(drover, tmp_path):
    tiny_workload(tmp_path, '[[outputs]]\nexpr = "x * 2"\nfile = "o.h5"\ndataset = "/d"\n')
    first = run_drover(drover, ["run", tmp_path / "w.toml"])
    assert first.rc == 0 and "replaced" not in first.stdout, first.describe()
    again = run_drover(drover, ["run", tmp_path / "w.toml"])
    assert again.rc == 0, again.describe()
    assert again.stdout.count(f"replaced {tmp_path / 'o.h5'}") == 1, again.stdout
    j = run_drover(drover, ["run", tmp_path / "w.toml", "--json"])
    assert j.json()["replaced"] == [str(tmp_path / "o.h5")], j.stdout
