"""Mutation testing of the defining functions (``make mutate``; not part of ``make test``).

For each module in :data:`TARGETS`, the repository is copied to a scratch folder (mutmut edits
files in place, so the working tree is never touched), a patch that marks only the listed
functions' lines as changed is written, and ``mutmut run --use-patch-file`` mutates those lines
and runs the module's tests against every mutant. The report lists per module: mutants, killed,
survived, timed out, with the diff of each survivor, and is written to
``benchmarks/results/mutation.md`` (``--out`` elsewhere).

Usage::

    python benchmarks/mutate.py                 # every module of TARGETS
    python benchmarks/mutate.py noise dm        # some modules
    python benchmarks/mutate.py --list          # the targets and their functions

Needs the ``mutate`` extra (``pip install -e '.[mutate]'``: mutmut 2.5.1 and whatthepatch).
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "mutation.md"

# module -> (source file, defining functions (top-level names or Class.method), tests that pin them)
TARGETS: dict[str, tuple[str, list[str], list[str]]] = {
    "random_subset": ("src/ddlnl/methods/random_subset.py", ["distill"],
                      ["tests/test_defining_random.py"]),
    "common": ("src/ddlnl/methods/common.py", ["class_indices", "check_ipc", "sample_per_class"],
               ["tests/test_defining_random.py"]),
    "dm": ("src/ddlnl/methods/dm.py", ["matching_loss", "distill"],
           ["tests/test_defining_dm.py"]),
    "noise": ("src/ddlnl/noise.py",
              ["symmetric_matrix", "pairflip_matrix", "asymmetric_map", "_next_within_group", "asymmetric_matrix",
               "_map_matrix", "_sample_from_rows", "apply_transition", "_truncated_normal", "truncated_normal_mean",
               "instance_dependent_labels", "realized_transition", "realized_noise_rate"],
              ["tests/test_defining_noise.py", "tests/test_reference_values.py", "tests/test_noise.py"]),
    "train": ("src/ddlnl/train.py", ["soft_cross_entropy", "_lr_at", "_loss", "_optimizer", "gsam_gradient"],
              ["tests/test_defining_train.py", "tests/test_train.py"]),
}


def function_lines(path: Path, names: list[str]) -> list[int]:
    """1-based line numbers of the bodies of ``names`` (docstrings excluded)."""
    tree = ast.parse(path.read_text())
    found: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found[f"{node.name}.{sub.name}"] = sub
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(f"{path}: no function(s) {missing}; update TARGETS in {Path(__file__).name}")
    lines: set[int] = set()
    for name in names:
        node = found[name]
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:]
        for stmt in body:
            lines.update(range(stmt.lineno, stmt.end_lineno + 1))
    return sorted(lines)


def write_patch(source: str, text: str, lines: list[int], out: Path) -> None:
    """A unified diff in which exactly ``lines`` of ``source`` appear as added."""
    src = text.splitlines()
    hunks, run = [], []
    for n in lines:
        if run and n != run[-1] + 1:
            hunks.append(run)
            run = []
        run.append(n)
    if run:
        hunks.append(run)
    body = [f"--- a/{source}", f"+++ b/{source}"]
    added = 0
    for h in hunks:
        body.append(f"@@ -{h[0] - 1 - added},0 +{h[0]},{len(h)} @@")
        body.extend("+" + src[n - 1] for n in h)
        added += len(h)
    out.write_text("\n".join(body) + "\n")


def copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if rel.startswith(("src/", "tests/", "pyproject.toml")) and (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)


def counts(work: Path) -> dict[str, int]:
    con = sqlite3.connect(work / ".mutmut-cache")
    rows = con.execute("SELECT status, COUNT(*) FROM Mutant GROUP BY status").fetchall()
    con.close()
    return dict(rows)


def survivors(work: Path, env: dict[str, str], mutmut: str) -> list[tuple[int, str]]:
    con = sqlite3.connect(work / ".mutmut-cache")
    ids = [r[0] for r in con.execute("SELECT id FROM Mutant WHERE status IN ('bad_survived', 'bad_timeout', "
                                     "'ok_suspicious') ORDER BY id")]
    con.close()
    out = []
    for i in ids:
        diff = subprocess.run([mutmut, "show", str(i)], cwd=work, env=env, capture_output=True, text=True).stdout
        out.append((i, "\n".join(line for line in diff.splitlines() if line.startswith(("-", "+"))
                                 and not line.startswith(("---", "+++")))))
    return out


def run_module(name: str, log) -> dict:
    source, functions, tests = TARGETS[name]
    tests = [t for t in tests if (ROOT / t).exists()]
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    with tempfile.TemporaryDirectory(prefix=f"ddlnl-mutate-{name}-") as tmp:
        work = Path(tmp)
        copy_tree(work)
        lines = function_lines(work / source, functions)
        write_patch(source, (work / source).read_text(), lines, work / "defining.patch")
        env = dict(os.environ, PYTHONPATH=str(work / "src"), OMP_NUM_THREADS="1")
        runner = f"{sys.executable} -m pytest -x -q -p no:cacheprovider {' '.join(tests)}"
        start = time.perf_counter()
        proc = subprocess.run([mutmut, "run", "--paths-to-mutate", source, "--runner", runner,
                               "--use-patch-file", "defining.patch", "--no-progress", "--simple-output"],
                              cwd=work, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        log.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        if not (work / ".mutmut-cache").exists():
            raise SystemExit(f"mutmut did not run for {name}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        c = counts(work)
        return {"module": name, "source": source, "functions": functions, "tests": tests, "seconds": seconds,
                "total": sum(c.values()), "killed": c.get("ok_killed", 0), "survived": c.get("bad_survived", 0),
                "timeout": c.get("bad_timeout", 0), "suspicious": c.get("ok_suspicious", 0),
                "untested": c.get("untested", 0), "survivors": survivors(work, env, mutmut)}


def report(results: list[dict]) -> str:
    load = os.getloadavg()
    lines = ["# Mutation testing of the defining functions", "",
             f"`python benchmarks/mutate.py` (mutmut 2.5.1, mutations only on the listed functions' lines), "
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node() or 'host'} "
             f"({os.cpu_count()} CPUs, {platform.machine()}), load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, "
             "tests with 1 torch thread.", "",
             "A *killed* mutant made a test fail (or time out); a *survivor* left every listed test green.", "",
             "| module | functions | mutants | killed | survived | timeout | killed % | minutes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        tested = r["total"] - r["untested"]
        killed = r["killed"] + r["timeout"]
        pct = 100.0 * killed / tested if tested else float("nan")
        lines.append(f"| {r['module']} | {', '.join(r['functions'])} | {tested} | {r['killed']} | {r['survived']} | "
                     f"{r['timeout']} | {pct:.1f} | {r['seconds'] / 60:.1f} |")
    for r in results:
        if r["survivors"]:
            lines += ["", f"## Survivors: {r['module']} (`{r['source']}`; tests: {', '.join(r['tests'])})", ""]
            for i, diff in r["survivors"]:
                lines += [f"mutant {i}:", "```diff", diff, "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", help=f"subset of {', '.join(TARGETS)}")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--out", default=str(RESULT))
    args = ap.parse_args()
    if args.list:
        for k, (src, fns, tests) in TARGETS.items():
            print(f"{k}: {src}: {', '.join(fns)}  [{', '.join(tests)}]")
        return
    names = args.modules or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise SystemExit(f"unknown module(s) {unknown}: use {', '.join(TARGETS)}")
    results = []
    log_path = Path(tempfile.gettempdir()) / "ddlnl-mutate.log"
    print(f"mutmut output: {log_path}")
    with open(log_path, "a") as log:
        for name in names:
            print(f"mutating {name} ...", flush=True)
            results.append(run_module(name, log))
            r = results[-1]
            print(f"  {r['total']} mutants, {r['killed']} killed, {r['survived']} survived, {r['timeout']} timeout "
                  f"in {r['seconds'] / 60:.1f} min", flush=True)
            Path(args.out).write_text(report(results))
    print(report(results))


if __name__ == "__main__":
    main()
