#!/usr/bin/env bash
# The checks a lent CUDA machine is for, as one prepared run (a session's device time is short).
#
#   bash benchmarks/device_check.sh OUT [STAGES]      # STAGES: a comma list, default cuda,bench,suite,grid
#
# Run from the repository root on the GPU machine, with a python3 that holds a CUDA torch and
# ddlnl's dependencies (no install: PYTHONPATH=src). Each stage writes into OUT as it ends, so a
# run cut short still returns what it finished:
#   cuda   tests/test_cuda.py: every distiller, the training loop, evaluation (one by one and
#          together) and `ddlnl run` give on CUDA what they give on the CPU   -> OUT/cuda_tests.log
#   bench  benchmarks/bench_device.py at the study's CIFAR-10 configuration   -> OUT/device_<gpu>.md
#   suite  the default test suite with CUDA present                          -> OUT/suite.log
#   grid   the Fashion-MNIST grids (configs/grids/fashion-mnist-{cpu,methods,ftd}.yaml) in one sweep
#          root, WORKERS workers per grid sharing the GPU; the records (not the artifacts) are packed into
#          OUT/grid_records.tar.gz, and `ddlnl report` of them into OUT/grid_report.tar.gz. A root
#          from an earlier call can be given back as GRID_ROOT (its records are reused: the sweep resumes).
# Fashion-MNIST: DDLNL_DATA must hold fashion-mnist/ (the IDX .gz files), e.g. a carried folder.
# GRIDS names other grids of configs/grids/ (a smoke test on a CPU: DEVICE=cpu GRIDS=tiny-digits).
# GRID_SECONDS bounds the grid stage (default 300); a cell cut off is recomputed by the next call.
set -uo pipefail
OUT=${1:?usage: device_check.sh OUT [STAGES]}
STAGES=${2:-cuda,bench,suite,grid}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
has() { [[ ",$STAGES," == *",$1,"* ]]; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
} 2>&1 | tee "$OUT/cuda_tests.log"

if has cuda; then
  $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_augment.py 2>&1 | tee -a "$OUT/cuda_tests.log"
fi
if has bench; then
  $PY benchmarks/bench_device.py --device "${DEVICE:-cuda}" \
    --out "$OUT/device_$($PY -c 'import torch; print(torch.cuda.get_device_name(0).split()[-1].lower())').md"
fi
if has suite; then
  timeout 300 $PY -m pytest -q -x -p no:cacheprovider 2>&1 | tail -40 > "$OUT/suite.log"
  echo "suite exit ${PIPESTATUS[0]}" >> "$OUT/suite.log"
fi
if has grid; then
  ROOT=${GRID_ROOT:-runs/fashion-mnist-device}
  WORKERS=${WORKERS:-2}  # per grid
  # Every grid's workers at once, one time limit for all: the grids share their baseline, random
  # and DM cells in one root, and the cell locks keep two workers off the same cell.
  for g in ${GRIDS:-fashion-mnist-cpu fashion-mnist-methods fashion-mnist-ftd}; do
    for w in $(seq "$WORKERS"); do
      OMP_NUM_THREADS=2 timeout "${GRID_SECONDS:-300}" $PY -m ddlnl sweep "configs/grids/$g.yaml" --root "$ROOT" \
        > "$OUT/grid-$g-$w.log" 2>&1 &
    done
  done
  wait
  for f in "$OUT"/grid-*.log; do echo "== $f"; tail -5 "$f"; done > "$OUT/grid_summary.txt"
  rm -f "$OUT"/grid-*.log
  $PY -m ddlnl report "$ROOT" >> "$OUT/grid_summary.txt" 2>&1 || true
  tar czf "$OUT/grid_records.tar.gz" -C "$ROOT" records
  [ -d "$ROOT/report" ] && tar czf "$OUT/grid_report.tar.gz" -C "$ROOT" report
fi
ls -la "$OUT"
