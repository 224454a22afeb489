"""The sweep's SLURM executor against a real slurmctld/slurmd (started by .ci/slurm-up.sh).

Skipped, with the reason, where no SLURM node answers.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ddlnl.sweep import expand, grid_from_dict, run_submitit, status
from test_sweep import TINY


def _slurm_ready() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM client not installed (run .ci/slurm-up.sh)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "sinfo did not answer"
    if out.returncode != 0 or not any(s in out.stdout for s in ("idle", "mix", "alloc")):
        return f"no SLURM node up ({out.stderr.strip() or out.stdout.strip() or 'empty sinfo'})"
    return None


@pytest.mark.skipif(_slurm_ready() is not None, reason=str(_slurm_ready()))
def test_grid_runs_as_a_slurm_job_array(tmp_path):
    pytest.importorskip("submitit")
    grid = grid_from_dict({**TINY, "noises": ["symmetric:0.4"], "ipcs": [1],
                           "resources": {"cpus": 1, "mem_gb": 2, "timeout_min": 10}})
    jobs = run_submitit(grid, tmp_path, cluster="slurm", cells_per_job=2, echo=lambda s: None)
    assert len(jobs) == 2 and all(j.job_id for j in jobs)
    assert all(s.state == "done" for s in status(grid, tmp_path))
    assert len(list((tmp_path / "records").glob("*.json"))) == len(expand(grid))
