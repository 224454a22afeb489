"""Grids: expansion, resumable records, killed and concurrent workers, cluster path, report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ddlnl.results import filter_rows, load_records, record_row, rows_to_csv
from ddlnl.sweep import (Cell, cell_key, expand, grid_from_dict, grid_to_dict, record_path, run_local,
                         status)

TINY = {
    "name": "t", "datasets": ["digits"], "noises": ["symmetric:0.4", "symmetric:0.6"], "methods": ["dm"],
    "ipcs": [1, 2], "baselines": ["converged"], "n_runs": 1, "preset": "cpu",
    "set": ["train.epochs=1", "train.width=4", "baseline.epochs=1", "baseline.width=4"],
    "method_set": {"dm": ["iterations=1", "width=4", "batch_real=4"]},
}


def test_grid_expands_into_every_cell():
    grid = grid_from_dict({**TINY, "seeds": [0, 1], "baselines": ["converged", "early-stop"]})
    cells = expand(grid)
    # 2 noises x 2 seeds x (2 baselines + (random + dm) x 2 ipcs)
    assert len(cells) == 2 * 2 * (2 + 2 * 2) == len(set(cells))
    assert Cell("digits", "symmetric:0.6", 1, "dm", 2) in cells
    assert Cell("digits", "symmetric:0.4", 0, "baseline_early_stop") in cells
    assert grid_from_dict(grid_to_dict(grid)) == grid


@pytest.mark.parametrize("bad,needle", [({"epochs": 3}, "unknown grid key"), ({"methods": ["dm", "mtt"]}, "unknown method"),
                                        ({"noises": ["gauss:0.1"]}, "unknown noise kind"),
                                        ({"baselines": ["best-test"]}, "baseline"),
                                        ({"method_set": {"rcig2": ["x=1"]}}, "not in the grid")])
def test_bad_grids_are_refused_by_name(bad, needle):
    with pytest.raises(Exception, match=needle):
        grid_from_dict({**TINY, **bad})


def test_cell_key_changes_with_its_own_config_only():
    grid = grid_from_dict(TINY)
    cell = Cell("digits", "symmetric:0.4", 0, "dm", 1)
    base = Cell("digits", "symmetric:0.4", 0, "baseline")
    changed = grid_from_dict({**TINY, "method_set": {"dm": ["iterations=2", "width=4", "batch_real=4"]}})
    assert cell_key(grid, cell) != cell_key(changed, cell)
    assert cell_key(grid, base) == cell_key(changed, base)  # the baseline does not depend on DM


def test_records_are_skipped_when_present_and_rerun_when_config_changes(tmp_path, monkeypatch):
    one = {**TINY, "noises": ["symmetric:0.4"]}
    grid = grid_from_dict(one)
    counts = run_local(grid, tmp_path, show_progress=False, echo=lambda s: None)
    assert counts["done"] == 5 and counts["failed"] == 0
    assert all(s.state == "done" for s in status(grid, tmp_path))
    calls = []
    import ddlnl.methods.dm as dm_module

    real = dm_module.distill
    monkeypatch.setattr("ddlnl.methods.METHODS", {**__import__("ddlnl.methods", fromlist=["METHODS"]).METHODS,
                                                  "dm": __import__("ddlnl.methods", fromlist=["Method"]).Method(
                                                      lambda *a, **k: calls.append(1) or real(*a, **k), dm_module.DMConfig, "")})
    assert run_local(grid, tmp_path, show_progress=False, echo=lambda s: None)["skipped"] == 5
    assert calls == []
    changed = grid_from_dict({**one, "method_set": {"dm": ["iterations=2", "width=4", "batch_real=4"]}})
    counts = run_local(changed, tmp_path, show_progress=False, echo=lambda s: None)
    assert counts["done"] == 2 and counts["skipped"] == 3 and len(calls) == 2
    # The old records are kept, never overwritten; the grid-filtered view has one per cell.
    assert len(list((tmp_path / "records").glob("*.json"))) == 7
    assert len(load_records(tmp_path, changed)) == 5


WORKER = """
import sys, time
import ddlnl.sweep.execute as sweep  # where run_cell writes its records
import ddlnl.cells as cells  # where the cell runner looks up run_baseline
from ddlnl.sweep import grid_from_dict, Cell
grid = grid_from_dict({grid!r})
if {slow}:
    def slow(*a, **k):
        time.sleep(60)
    cells.run_baseline = slow
print(sweep.run_local(grid, {root!r}, show_progress=False, echo=lambda s: print("DONE", s.split(":")[0], flush=True)), flush=True)
"""


def _worker(grid, root, slow=False):
    code = WORKER.format(grid=grid, root=str(root), slow=slow)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_worker_leaves_no_partial_record_and_the_cell_is_taken_over(tmp_path):
    grid_dict = {**TINY, "noises": ["symmetric:0.4"], "methods": [], "ipcs": [1], "method_set": {}}
    grid = grid_from_dict(grid_dict)
    proc = _worker(grid_dict, tmp_path, slow=True)
    lock_dir = tmp_path / "locks"
    deadline = time.time() + 60
    while time.time() < deadline and not (lock_dir.exists() and any(lock_dir.iterdir())):
        time.sleep(0.2)
    assert lock_dir.exists() and any(lock_dir.iterdir()), proc.communicate()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list((tmp_path / "records").glob("*.json")) if (tmp_path / "records").exists() else True
    assert not list(tmp_path.rglob("*.tmp"))
    # The dead worker's lock is stale (its process is gone): the next worker takes the cell over.
    counts = run_local(grid, tmp_path, show_progress=False, echo=lambda s: None)
    assert counts["done"] == len(expand(grid))
    assert all(s.state == "done" for s in status(grid, tmp_path))


def test_two_concurrent_workers_produce_each_record_exactly_once(tmp_path):
    grid_dict = {**TINY, "noises": ["symmetric:0.4"]}
    procs = [_worker(grid_dict, tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    done = [line.split()[1] for out in outs for line in out.splitlines() if line.startswith("DONE")]
    grid = grid_from_dict(grid_dict)
    names = sorted(c.name for c in expand(grid))
    assert sorted(done) == names  # every cell computed once, by one of the two workers
    assert len(list((tmp_path / "records").glob("*.json"))) == len(names)


def test_submitit_local_executor_runs_the_grid(tmp_path):
    pytest.importorskip("submitit")
    from ddlnl.sweep import run_submitit

    grid = grid_from_dict({**TINY, "noises": ["symmetric:0.4"], "ipcs": [1]})
    jobs = run_submitit(grid, tmp_path, cluster="local", cells_per_job=2, echo=lambda s: None)
    assert len(jobs) == 2
    assert all(s.state == "done" for s in status(grid, tmp_path))


def test_results_rows_filter_and_csv(tmp_path):
    grid = grid_from_dict({**TINY, "noises": ["symmetric:0.4"]})
    run_local(grid, tmp_path, show_progress=False, echo=lambda s: None)
    rows = [record_row(r) for r in load_records(tmp_path, grid)]
    assert len(rows) == 5
    dm = filter_rows(rows, ["method=dm", "ipc=2"])
    assert len(dm) == 1 and dm[0]["ipc"] == 2 and dm[0]["realized_rate"] == pytest.approx(0.4, abs=0.05)
    csv_text = rows_to_csv(rows)
    assert csv_text.splitlines()[0].startswith("dataset,noise,kind,rate") and len(csv_text.splitlines()) == 6
    with pytest.raises(Exception, match="unknown field"):
        filter_rows(rows, ["colour=red"])


def test_report_has_one_line_per_noise_dashed_baselines_and_gaps(tmp_path):
    from ddlnl.report import write_report

    grid = grid_from_dict(TINY)
    run_local(grid, tmp_path, show_progress=False, echo=lambda s: None)
    # Remove one cell's record: the report must show a gap there, not a zero.
    gone = Cell("digits", "symmetric:0.6", 0, "dm", 2)
    record_path(tmp_path, gone, cell_key(grid, gone)).unlink()
    import matplotlib.pyplot as plt

    captured = {}
    real_savefig = plt.Figure.savefig

    def spy(fig, *a, **k):
        captured.setdefault("figs", []).append(fig)
        return real_savefig(fig, *a, **k)

    plt.Figure.savefig = spy
    try:
        written = write_report(tmp_path, grid=grid)
    finally:
        plt.Figure.savefig = real_savefig
    # The study's view: a panel per noise setting, the methods as lines, random grey, baseline dashed.
    study = {ax.get_title(): ax for ax in captured["figs"][0].axes}
    assert set(study) == {"digits, symmetric 0.4", "digits, symmetric 0.6"}
    for title, ax in study.items():
        lines = ax.get_lines()
        assert [ln.get_linestyle() for ln in lines].count("--") == 1
        assert {c.get_label() for c in ax.containers} == {"dm", "random real subset"}
        assert all(c.lines[0].get_linestyle() == "-" for c in ax.containers)
    dm_06 = next(c for c in study["digits, symmetric 0.6"].containers if c.get_label() == "dm").lines[0]
    assert str(list(dm_06.get_ydata())[1]) == "nan"  # the removed cell is a gap
    fig = captured["figs"][1]  # the per-method view
    axes = {ax.get_title(): ax for ax in fig.axes}
    assert set(axes) == {"digits: random", "digits: dm"}
    dm_ax = axes["digits: dm"]
    solid = [ln for ln in dm_ax.get_lines() if ln.get_linestyle() == "-"]
    dashed = [ln for ln in dm_ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(solid) == 2 and len(dashed) == 2  # one line and one baseline per noise rate
    for s in solid:  # each baseline has the colour of its noise line
        assert any(d.get_color() == s.get_color() for d in dashed)
    ys = [list(s.get_ydata()) for s in solid]
    assert any(str(v) == "nan" for y in ys for v in y) and not any(v == 0 for y in ys for v in y)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["symmetric:0.4", "symmetric:0.6"]
    table = (tmp_path / "report" / "table.md").read_text()
    assert "| digits | symmetric:0.6 | dm |" in table and " - |" in table
    assert any(p.suffix == ".png" and "grids" in p.parts for p in written)


def test_a_record_without_per_class_accuracy_shows_a_dash_and_the_old_report_table(tmp_path):
    """Records written before per-class accuracy was kept: '-' in the thirds column of
    `ddlnl results`, and the report's table.md as it was (no thirds table) and read back whole."""
    from ddlnl.report import _aggregate, read_report_table, write_table
    from ddlnl.results import rows_table

    def rec(method, ipc, accs, per_class=None):
        r = {"cell": {"dataset": "digits", "noise": "symmetric:0.4", "seed": 0, "method": method, "ipc": ipc},
             "name": f"digits__s__{method}{ipc}", "key": "k" * 16, "mean": sum(accs) / len(accs), "std": 0.0,
             "accs": accs, "noise": {"spec": {"kind": "symmetric", "rate": 0.4}, "realized_rate": 0.4}}
        return r if per_class is None else {**r, "per_class": per_class}

    old = [rec("baseline", 0, [0.5]), rec("dm", 1, [0.6, 0.7])]
    assert [record_row(r)["thirds"] for r in old] == ["-", "-"]
    assert rows_table([record_row(r) for r in old]).splitlines()[2].endswith("| - |")
    write_table(_aggregate(old), tmp_path / "old.md")
    text = (tmp_path / "old.md").read_text()
    assert "Head/middle/tail" not in text and "| digits | symmetric:0.4 | dm | 65.00 ± 5.00 | 50.00 ± 0.00 | - |" in text
    # With per-class accuracy (3 classes: one per third), the thirds are the per-class means over runs.
    new = old + [rec("dm", 2, [0.5, 0.5], per_class=[[1.0, 0.5, 0.0], [0.8, 0.5, 0.2]])]
    assert record_row(new[-1])["thirds"] == "90.0/50.0/10.0"
    write_table(_aggregate(new), tmp_path / "new.md")
    accuracy, thirds = (tmp_path / "new.md").read_text().split("Head/middle/tail")
    assert "| digits | symmetric:0.4 | dm | - | 90.0/50.0/10.0 | - | - |" in thirds
    # read back from the accuracy table only (the thirds table below it is not taken for accuracies)
    assert read_report_table(tmp_path / "new.md")[("digits", "symmetric:0.4", "dm", 2)] == {"mean": 0.5, "std": 0.0}
    assert set(read_report_table(tmp_path / "new.md")) == {("digits", "symmetric:0.4", "dm", 1),
                                                           ("digits", "symmetric:0.4", "dm", 2),
                                                           ("digits", "symmetric:0.4", "baseline", 0)}


def test_only_selects_cells_by_field():
    from ddlnl.sweep import select_cells

    grid = grid_from_dict(TINY)
    cells = select_cells(expand(grid), ["ipc=0,2", "noise=symmetric:0.6"])
    assert [c.name.split("__")[-1] for c in cells] == ["baseline", "random-ipc2", "dm-ipc2"]
    with pytest.raises(Exception, match="FIELD"):
        select_cells(expand(grid), ["colour=red"])


def test_variants_run_their_base_method_with_extra_overrides(tmp_path):
    one = {**TINY, "noises": ["symmetric:0.4"], "ipcs": [1], "methods": ["dm", "dm-long"],
           "variants": {"dm-long": {"method": "dm", "set": ["iterations=2"]}}}
    grid = grid_from_dict(one)
    assert grid_from_dict(grid_to_dict(grid)) == grid
    plain = grid_from_dict({**TINY, "noises": ["symmetric:0.4"], "ipcs": [1]})
    dm_cell, variant_cell = Cell("digits", "symmetric:0.4", 0, "dm", 1), Cell("digits", "symmetric:0.4", 0, "dm-long", 1)
    assert cell_key(grid, dm_cell) == cell_key(plain, dm_cell)  # adding a variant keeps the base's records
    assert cell_key(grid, variant_cell) != cell_key(grid, dm_cell)
    counts = run_local(grid, tmp_path, show_progress=False, echo=lambda s: None)
    assert counts["done"] == 4 and counts["failed"] == 0  # baseline, random, dm, dm-long
    rows = {r["method"]: r for r in map(record_row, load_records(tmp_path))}
    records = {rec["cell"]["method"]: rec for rec in load_records(tmp_path)}
    assert set(rows) >= {"dm", "dm-long"}
    assert records["dm-long"]["config"]["method"]["iterations"] == 2 == records["dm"]["config"]["method"]["iterations"] + 1
    assert records["dm-long"]["base_method"] == "dm"
    # The variant keeps the base's other method_set overrides (width 4) and its seeds.
    assert records["dm-long"]["config"]["method"]["width"] == 4
    assert records["dm-long"]["seeds"] == records["dm"]["seeds"]


@pytest.mark.parametrize("variants,needle", [({"dm": {"method": "dm"}}, "has the name of a method"),
                                             ({"x": {"method": "mtt"}}, "unknown method"),
                                             ({"x": {"set": ["iterations=2"]}}, "expected"),
                                             ({"x": {"method": "random"}}, "based on a distiller")])
def test_bad_variants_are_refused(variants, needle):
    with pytest.raises(Exception, match=needle):
        grid_from_dict({**TINY, "methods": list(dict.fromkeys(["dm", *variants])), "variants": variants})


def test_report_draws_the_early_stop_baseline_dotted(tmp_path):
    from ddlnl.report import write_report
    import matplotlib.pyplot as plt

    grid = grid_from_dict({**TINY, "noises": ["symmetric:0.4"], "ipcs": [1], "baselines": ["converged", "early-stop"]})
    run_local(grid, tmp_path, show_progress=False, echo=lambda s: None)
    captured = []
    real_savefig = plt.Figure.savefig
    plt.Figure.savefig = lambda fig, *a, **k: (captured.append(fig), real_savefig(fig, *a, **k))[1]
    try:
        write_report(tmp_path, grid=grid)
    finally:
        plt.Figure.savefig = real_savefig
    for ax in captured[0].axes:  # the study's view: both baselines in every panel
        assert {"--", ":"} <= {ln.get_linestyle() for ln in ax.get_lines()}
    fig = captured[1]
    for ax in fig.axes:
        styles = {ln.get_linestyle(): ln.get_color() for ln in ax.get_lines()}
        assert {"--", ":"} <= set(styles) and styles["--"] == styles[":"]  # same noise colour
    assert "dotted: early stop" in fig.legends[0].get_title().get_text()


# --------------------------------------------------------------------------------------------
# Damaged state: every file a sweep wrote is checked when read back; the next run heals it.

ONE = {**TINY, "noises": ["symmetric:0.4"], "ipcs": [1]}  # baseline, random-ipc1, dm-ipc1


def _quiet_run(grid, root):
    said = []
    return run_local(grid, root, show_progress=False, echo=said.append), said


def test_a_damaged_or_foreign_record_is_reported_and_its_cell_recomputed(tmp_path):
    import json

    from ddlnl.sweep import read_record

    grid = grid_from_dict(ONE)
    assert _quiet_run(grid, tmp_path)[0]["done"] == 3
    cells = expand(grid)
    paths = [record_path(tmp_path, c, cell_key(grid, c)) for c in cells]
    good = [json.loads(p.read_text()) for p in paths]
    paths[0].write_text(paths[0].read_text()[:40])  # cut short (as by a copy that failed)
    edited = dict(good[1], mean=0.99)  # edited by hand: the checksum no longer matches
    paths[1].write_text(json.dumps(edited))
    paths[2].write_text(json.dumps({"hello": "world"}))  # not a ddlnl record
    assert [s.state for s in status(grid, tmp_path)] == ["damaged"] * 3
    rows = []
    assert load_records(tmp_path, grid, echo=rows.append) == [] and "3 damaged or foreign record(s)" in rows[0]
    counts, said = _quiet_run(grid, tmp_path)
    assert counts["done"] == 3 and counts["failed"] == 0
    assert sum("is damaged" in s and "recomputing" in s for s in said) == 3
    healed = [read_record(p) for p in paths]  # sound again, and the same results (same seeds)
    assert [h["accs"] for h in healed] == [g["accs"] for g in good]
    assert all(s.state == "done" for s in status(grid, tmp_path))


def test_damaged_noise_and_synthetic_artifacts_are_regenerated(tmp_path):
    grid = grid_from_dict({**ONE, "baselines": []})
    _quiet_run(grid, tmp_path)
    noise = next((tmp_path / "artifacts" / "noise").glob("*.npz"))
    syn = next((tmp_path / "artifacts" / "synthetic").glob("*dm-ipc1*.safetensors"))
    noise.write_bytes(noise.read_bytes()[:100])
    syn.write_bytes(syn.read_bytes()[:-64])
    for c in expand(grid):  # the cells must run again to read the artifacts
        record_path(tmp_path, c, cell_key(grid, c)).unlink()
    counts, said = _quiet_run(grid, tmp_path)
    assert counts["done"] == 2 and counts["failed"] == 0
    assert any(str(noise) in s and "regenerating" in s for s in said), said
    assert any("dm-ipc1" in s and "distilling it again" in s for s in said), said
    from ddlnl.noise import load_noisy_labels
    from ddlnl.synthetic import load_synthetic

    load_noisy_labels(noise), load_synthetic(syn)  # both sound again


def test_stale_temporary_files_are_removed_but_a_live_writers_are_kept(tmp_path):
    import socket

    grid = grid_from_dict({**ONE, "methods": [], "baselines": [], "method_set": {}})
    folder = tmp_path / "records"
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    dead_tmp = folder / f".x.json.{host}.{dead.stdout.strip()}.abc123.tmp"
    live_tmp = folder / f".y.json.{host}.{os.getpid()}.def456.tmp"
    old_tmp = folder / ".z.json.otherhost.1.ghi789.tmp"
    for p in (dead_tmp, live_tmp, old_tmp):
        p.write_text("{")
    os.utime(old_tmp, (time.time() - 2 * 86400,) * 2)
    _quiet_run(grid, tmp_path)
    assert not dead_tmp.exists() and not old_tmp.exists() and live_tmp.exists()


def _lock_of(root, grid, cell):
    from ddlnl.sweep import _lock_path

    path = _lock_path(root, cell, cell_key(grid, cell))
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_a_lock_naming_a_reused_pid_is_stale_but_a_live_holder_keeps_its_cell(tmp_path, capsys):
    import json
    import socket

    from ddlnl.cli import main
    from ddlnl.sweep import HELD_EXIT
    from ddlnl.utils import process_start_time

    grid = grid_from_dict({**ONE, "methods": [], "baselines": [], "method_set": {}})
    cell = expand(grid)[0]
    lock = _lock_of(tmp_path, grid, cell)
    # pid 1 is alive, but it started at another time than the worker that wrote the lock
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 1, "start": -5.0, "time": time.time()}))
    assert status(grid, tmp_path)[0].state == "todo"
    assert _quiet_run(grid, tmp_path)[0]["done"] == 1
    # A live holder (pid and start time match): the cell is left to it, and the command says so.
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record_path(tmp_path, cell, cell_key(grid, cell)).unlink()
        deadline = time.time() + 10
        while process_start_time(holder.pid) is None and time.time() < deadline:
            time.sleep(0.05)
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid,
                                    "start": process_start_time(holder.pid), "time": time.time()}))
        assert status(grid, tmp_path)[0].state == "running"
        grid_file = tmp_path / "g.yaml"
        import yaml

        grid_file.write_text(yaml.safe_dump(grid_to_dict(grid)))
        assert main(["sweep", str(grid_file), "--root", str(tmp_path), "--quiet"]) == HELD_EXIT
        err = capsys.readouterr().err
        assert "held by other live workers" in err and "Traceback" not in err
    finally:
        holder.kill()
        holder.wait()
    assert status(grid, tmp_path)[0].state == "todo"  # its holder is gone: the next run takes it


SLOW_WRITE = """
import os, sys, time
import ddlnl.sweep.execute as sweep  # where run_cell writes its records
from ddlnl.sweep import grid_from_dict
real = sweep.atomic_write_json
def slow_write(path, obj):
    # a record write killed half-way: the temporary file exists, the record does not
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / (".%s.%s.%d.zz.tmp" % (path.name, __import__("socket").gethostname(), os.getpid()))
    tmp.write_text('{{"cell": ')
    print("WRITING", flush=True)
    time.sleep(60)
sweep.atomic_write_json = slow_write
sweep.run_local(grid_from_dict({grid!r}), {root!r}, show_progress=False, echo=lambda s: None)
"""


def test_a_worker_killed_inside_a_record_write_leaves_nothing_the_next_run_does_not_heal(tmp_path):
    grid_dict = {**ONE, "methods": [], "baselines": [], "method_set": {}}
    grid = grid_from_dict(grid_dict)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITE.format(grid=grid_dict, root=str(tmp_path))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert "WRITING" in line, proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.rglob("*.tmp")) and not list((tmp_path / "records").glob("*.json"))
    counts, said = _quiet_run(grid, tmp_path)
    assert counts["done"] == 1 and not list(tmp_path.rglob("*.tmp"))
    assert any("temporary file" in s for s in said)


def test_written_files_honour_the_umask(tmp_path):
    from ddlnl.utils import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600


def test_a_run_directory_heals_its_damaged_files(tmp_path, capsys):
    import json

    from ddlnl.cli import main

    tiny = ["--set", "train.epochs=1", "--set", "baseline.epochs=1", "--set", "dm.iterations=1", "--set", "train.width=4",
            "--set", "baseline.width=4", "--set", "dm.width=4", "--set", "dm.batch_real=4", "--n-runs", "1", "--ipc", "1",
            "--no-early-stop", "--quiet"]
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), *tiny]) == 0
    from test_run_dir import run_records

    [cell] = run_records(out, "dm-ipc1")
    before = json.loads(cell.read_text())
    (out / "noise.npz").write_bytes((out / "noise.npz").read_bytes()[:50])
    (out / "config.json").write_text("{")
    cell.write_text(cell.read_text()[:30])
    syn = out / "synthetic" / "dm-ipc1.safetensors"
    syn.write_bytes(syn.read_bytes()[:-10])
    capsys.readouterr()
    assert main(["run", "--out", str(out), *tiny]) == 0
    err = capsys.readouterr().err
    assert "noise.npz is damaged" in err and "config.json is damaged" in err and f"{cell.name} is damaged" in err
    assert "distilling it again" in err and "Traceback" not in err
    assert json.loads(cell.read_text())["accs"] == before["accs"]  # recomputed, same seeds, same result
    assert json.loads((out / "config.json").read_text())["runs"]


def test_eval_recipe_is_read_under_its_former_grid_key_protocol():
    assert grid_from_dict({**TINY, "protocol": "own"}).eval_recipe == "own"
    assert grid_from_dict({**TINY, "eval_recipe": "own"}).eval_recipe == "own"
    assert grid_from_dict(TINY).eval_recipe == "common"
    with pytest.raises(Exception, match="keep eval_recipe only"):
        grid_from_dict({**TINY, "protocol": "own", "eval_recipe": "own"})
    # the cell key is that of the former name (records made before the rename keep their keys)
    cell = Cell("digits", "symmetric:0.4", 0, "dm", 1)
    assert cell_key(grid_from_dict({**TINY, "protocol": "own"}), cell) == \
        cell_key(grid_from_dict({**TINY, "eval_recipe": "own"}), cell) != cell_key(grid_from_dict(TINY), cell)
