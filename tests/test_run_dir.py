"""The user's path through run directories: the same file gives the same number from every entry
point, and a run directory only ever grows."""

from __future__ import annotations

import json
from dataclasses import replace

from ddlnl.cli import main
from ddlnl.pipeline import JobConfig, default_run_dir, evaluate_file, resolve_job

# A tiny but complete job on the bundled digits data.
TINY = ["--set", "train.epochs=2", "--set", "baseline.epochs=2", "--set", "dm.iterations=2",
        "--set", "dm.batch_real=8", "--set", "train.width=8", "--set", "baseline.width=8",
        "--set", "dm.width=8", "--no-early-stop", "--quiet"]


def run_records(out, step: str) -> list:
    """The records of step ``step`` (``baseline``, ``dm-ipc1``, ...) in run directory ``out``."""
    return sorted((out / "records").glob(f"*__{step}__*.json"))


def run_record(out, step: str) -> dict:
    """The one record of ``step`` in ``out``."""
    [path] = run_records(out, step)
    return json.loads(path.read_text())


def _table_rows(path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]


def test_evaluate_on_a_file_from_run_reproduces_runs_accuracy_exactly(tmp_path, capsys):
    """`ddlnl evaluate` once trained the depth-3 ConvNet on 8x8 digits (run fits depth 2) with its
    own seed, and so gave another number for the same file."""
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--methods", "dm", "--ipc", "2", "--n-runs", "2", *TINY]) == 0
    capsys.readouterr()
    cell = run_record(out, "dm-ipc2")
    syn = out / "synthetic" / "dm-ipc2.safetensors"
    overrides = [v for k, v in zip(TINY, TINY[1:]) if k == "--set"]
    res, _, resolved = evaluate_file(syn, overrides=overrides, n_runs=2)
    assert resolved.train.depth == 2  # fitted to 8x8, as in the run
    assert "flip" not in resolved.train.dsa_strategy  # digits: no mirror images
    assert res.accs == cell["accs"] and res.seeds == cell["seeds"]
    # The command prints the same numbers.
    train_only = [a for item in overrides if item.startswith("train.") for a in ("--set", item)]
    assert main(["evaluate", str(syn), "--n-runs", "2", "--quiet", *train_only]) == 0
    printed = capsys.readouterr().out
    assert ", ".join(f"{100 * a:.2f}" for a in cell["accs"]) in printed


def test_evaluate_honours_set_overrides(tmp_path, capsys, monkeypatch):
    from ddlnl import methods

    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--methods", "dm", "--ipc", "1", "--n-runs", "1", *TINY]) == 0
    syn = out / "synthetic" / "dm-ipc1.safetensors"
    overrides = [v for k, v in zip(TINY, TINY[1:]) if k == "--set"]
    used = []

    def own(cfg, s, name):  # DM's own recipe is 1,000 epochs; a cheap stand-in shows it is used
        used.append(cfg.epochs)
        return replace(cfg, epochs=1), s.as_labeled()

    monkeypatch.setitem(methods.METHODS, "dm", methods.METHODS["dm"]._replace(own_recipe=own))
    res, _, resolved = evaluate_file(syn, overrides=overrides + ["n_runs=2", "train.epochs=3", "protocol=own"])
    assert len(res.accs) == 2 and resolved.job.eval_recipe == "own" and used == [3]
    assert main(["evaluate", str(syn), "--set", "n_runs=3", "--set", "train.width=8", "--set", "train.epochs=1",
                 "--quiet"]) == 0
    assert capsys.readouterr().out.count(",") >= 2 + 2  # three runs listed


def test_a_second_run_into_the_same_directory_keeps_the_first_runs_rows(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--methods", "dm", "--ipc", "1", "--n-runs", "1", "--log", "csv", *TINY]) == 0
    curves = (out / "curves.csv").read_text().splitlines()
    assert curves[0].startswith("name,run,epoch,") and "test_acc" in curves[0]
    assert [line.split(",")[:3] for line in curves[1:3]] == [["baseline", "0", "1"], ["baseline", "0", "2"]]
    assert (out / "figures" / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    first_rows = _table_rows(out / "table.md")
    first_files = {p.relative_to(out): p.read_bytes() for p in (out / "records").glob("*.json")}
    first_sets = {p.name: p.read_bytes() for p in (out / "synthetic").iterdir()}
    # Another IPC and another run count: added beside the first run's records.
    assert main(["run", "--out", str(out), "--methods", "dm", "--ipc", "2", "--n-runs", "2", *TINY]) == 0
    rows = _table_rows(out / "table.md")
    assert "warning:" not in (out / "table.md").read_text()
    for row in first_rows:
        method = row.split(" | ")[0].lstrip("| ")
        assert any(r.startswith(f"| {method}") and r.split(" | ")[2] == row.split(" | ")[2] for r in rows), (row, rows)
    assert any(r.startswith("| dm") and " | 2 | " in r for r in rows)
    assert sum(r.startswith("| full noisy set") for r in rows) == 2  # 1-run and 2-run baselines
    for rel, data in first_files.items():
        if rel.name not in {"results.json"}:
            assert (out / rel).read_bytes() == data, rel
    for name, data in first_sets.items():
        assert (out / "synthetic" / name).read_bytes() == data
    results = json.loads((out / "results.json").read_text())
    assert {(c["cell"]["method"], c["cell"]["ipc"], len(c["accs"])) for c in results["cells"]} >= {("dm", 1, 1), ("dm", 2, 2)}
    # The same ipc again with more runs re-evaluates the same synthetic set (not re-distilled).
    assert main(["run", "--out", str(out), "--methods", "dm", "--ipc", "1", "--n-runs", "2", *TINY]) == 0
    assert (out / "synthetic" / "dm-ipc1.safetensors").read_bytes() == first_sets["dm-ipc1.safetensors"]
    assert not list((out / "synthetic").glob("dm-ipc1-*"))
    assert "| dm (n_runs=1) | 1 |" in (out / "table.md").read_text()
    assert "| dm (n_runs=2) | 1 |" in (out / "table.md").read_text()


def test_the_default_directory_depends_only_on_the_data_setting():
    base = resolve_job(JobConfig())
    more = resolve_job(replace(JobConfig(), methods=("dm", "datm"), ipcs=(1, 10, 50), n_runs=5),
                       ["train.epochs=10", "dm.iterations=5"])
    assert default_run_dir(base) == default_run_dir(more)
    assert default_run_dir(base) != default_run_dir(resolve_job(replace(JobConfig(), noise="symmetric:0.4")))
    assert default_run_dir(base) != default_run_dir(resolve_job(replace(JobConfig(), seed=1)))


def test_a_directory_of_the_earlier_layout_gets_one_line_saying_what_to_do(tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"data": {}, "runs": []}))
    before = (out / "config.json").read_bytes()
    assert main(["run", "--out", str(out), "--methods", "dm", "--ipc", "1", "--n-runs", "1", *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "earlier ddlnl" in err[-1] and "--out" in err[-1]
    assert (out / "config.json").read_bytes() == before


def test_a_degenerate_run_is_noted_under_the_table_and_in_its_record(tmp_path, monkeypatch):
    """A constructed distiller whose log says it skipped most iterations while its objective rose
    (DATM on digits: 71 of 72 skipped, 0.80 -> 4.08): one line under the table, and the record."""
    from ddlnl import methods

    real = methods.METHODS["dm"].distill

    def degenerate(*args, **kwargs):
        syn = real(*args, **kwargs)
        meta = {**syn.meta, "loss": [0.8] * 4 + [4.08] * 16, "skipped": 71,
                "config": {**syn.meta["config"], "iterations": 72, "threshold": 1.0}}
        return type(syn)(syn.images, syn.labels, syn.lr, meta)

    monkeypatch.setitem(methods.METHODS, "dm", methods.METHODS["dm"]._replace(distill=degenerate))
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--methods", "dm", "--ipc", "1", "--n-runs", "1", *TINY]) == 0
    notes = [line for line in (out / "table.md").read_text().splitlines() if line.startswith("warning:")]
    assert len(notes) == 1 and notes[0].startswith("warning: dm IPC 1 is a degenerate run")
    assert "71 of 72 iterations skipped" in notes[0] and "rose from 0.8 to 4.08" in notes[0]
    rec = run_record(out, "dm-ipc1")
    assert len(rec["warnings"]) == 2
    assert run_record(out, "random-ipc1")["warnings"] == []


def test_results_and_report_read_a_run_directory_with_the_runs_numbers(tmp_path, capsys):
    """`ddlnl run` writes the records of a sweep root: `ddlnl results` and `ddlnl report` read the
    run directory and show the run table's accuracies."""
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--methods", "dm", "--ipc", "1", "--n-runs", "2", *TINY]) == 0
    capsys.readouterr()
    table = {}
    for row in _table_rows(out / "table.md"):
        cells = [c.strip() for c in row.strip("|").split("|")]
        table[(cells[0], cells[1])] = (cells[2], cells[5])  # accuracy, head/middle/tail
    assert set(table) == {("full noisy set", "all"), ("random", "1"), ("dm", "1")}
    assert all(thirds.count("/") == 2 for _, thirds in table.values())
    assert main(["results", str(out)]) == 0
    printed = capsys.readouterr().out
    listed = {}
    for line in printed.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        listed[(cells[4], cells[5])] = (cells[6], cells[9])
    assert listed == {("baseline", "all"): table[("full noisy set", "all")], ("random", "1"): table[("random", "1")],
                      ("dm", "1"): table[("dm", "1")]}
    assert main(["report", str(out)]) == 0
    report = (out / "report" / "table.md").read_text()
    (dm_acc, dm_thirds), (base_acc, base_thirds) = table[("dm", "1")], table[("full noisy set", "all")]
    accuracy, thirds = report.split("Head/middle/tail")
    assert f"| dm | {dm_acc} | {base_acc} | - |" in accuracy
    assert f"| dm | {dm_thirds} | {base_thirds} | - |" in thirds
    assert (out / "report" / "grids" / "digits-dm-symmetric-0.6-ipc1.png").read_bytes()[:4] == b"\x89PNG"
