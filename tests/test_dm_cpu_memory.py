"""CPU loops reuse freed memory (:func:`ddlnl.utils.retain_freed_cpu_memory`).

With glibc's defaults, a tensor of 32 MiB or more is a fresh ``mmap`` each time, so allocating it
again page-faults every page in again (DM's real-batch activations at width 32 and batch 256 cost
0.2-0.7 s of page faults per iteration; ``benchmarks/results/vs_reference_dm.md``). After DM's,
DATM's, DANCE's or RCIG's loop (or the training loop) has run on a CPU, re-allocating a 40 MiB
tensor must reuse pages (no faults), and ``DDLNL_SYSTEM_MALLOC=1`` must leave the allocator alone
(faults as before), with the synthetic set bit-identical either way. DATM and DANCE train their experts
through the training loop, which sets the allocator too; in their probes that loop's call is
disabled, as when the experts come from the cache and nothing trains in the process, so only the
distill loop's own call can pass. Each case runs in a fresh interpreter, since the setting is
process-wide.
"""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

PROBE = r"""
import hashlib, json, resource, sys, torch
from ddlnl.data import LabeledTensors

def faults():
    for _ in range(2):
        torch.ones(10 * 2**20)  # 40 MiB written and freed, so the heap may hold it before counting
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(6):
        torch.ones(10 * 2**20)  # 10,240 pages of 4 KiB, written, then freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

g = torch.Generator().manual_seed(0)
data = LabeledTensors(torch.randn(40, 3, 16, 16, generator=g), torch.arange(4).repeat_interleave(10))
first = faults()
digest = None
if sys.argv[1] in ("datm", "dance"):
    import ddlnl.train.loop
    ddlnl.train.loop.retain_freed_cpu_memory = lambda: False  # experts train as if read from the cache
if sys.argv[1] == "dm":
    from ddlnl.methods import dm
    syn = dm.distill(data, 1, dm.DMConfig(iterations=2, width=4, batch_real=4), seed=0, num_classes=4)
elif sys.argv[1] == "datm":
    from ddlnl.methods import datm
    cfg = datm.DATMConfig(iterations=2, syn_steps=3, expert_epochs=1, current_max_start_epoch=1, max_start_epoch=1,
                          num_experts=1, expert_train_epochs=2, expert_batch=20, width=4, depth=2,
                          cache_experts=False)
    syn = datm.distill(data, 1, cfg, seed=0, num_classes=4)
elif sys.argv[1] == "dance":
    from ddlnl.methods import dance
    cfg = dance.DANCEConfig(iterations=2, num_pretrained=1, pretrain_epochs=2, pretrain_batch=20, batch_real=4,
                            width=4, depth=2, cache_experts=False)
    syn = dance.distill(data, 1, cfg, seed=0, num_classes=4)
elif sys.argv[1] == "rcig":
    from ddlnl.methods import rcig
    cfg = rcig.RCIGConfig(iterations=2, batch_real=8, width=4, pool_size=1, inner_steps=2, hinv_steps=2,
                          inner_lr=1e-3, hinv_lr=1e-3)
    syn = rcig.distill(data, 1, cfg, seed=0, num_classes=4)
if sys.argv[1] != "train":
    digest = hashlib.sha256(syn.images.numpy().tobytes() + syn.labels.numpy().tobytes()).hexdigest()
else:
    from ddlnl.train import TrainConfig, build_model, train
    cfg = TrainConfig(width=4, epochs=1, batch_size=20)
    train(build_model(cfg, channels=3, num_classes=4, image_size=(16, 16), seed=0), data, cfg, seed=0)
print(json.dumps({"before": first, "after": faults(), "digest": digest}))
"""


@functools.lru_cache(maxsize=None)
def _probe(loop: str, opt_out: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    env.pop("DDLNL_SYSTEM_MALLOC", None)
    if opt_out:
        env["DDLNL_SYSTEM_MALLOC"] = "1"
    proc = subprocess.run([sys.executable, "-c", PROBE, loop], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")
@pytest.mark.parametrize("loop", ["dm", "datm", "dance", "rcig", "train"])
def test_cpu_loop_makes_large_allocations_reuse_pages(loop):
    counts = _probe(loop, opt_out=False)
    if counts["before"] < 40000:  # e.g. transparent huge pages always on, or another allocator
        pytest.skip(f"this system does not fault large allocations page by page ({counts})")
    # 61,440 pages allocated; a small allocation can split the freed block once, so one 40 MiB
    # tensor may still be faulted in (measured: 0 or 10,240), never most of them.
    assert counts["after"] < counts["before"] / 4, counts


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")
@pytest.mark.parametrize("loop", ["dm", "datm", "dance", "rcig"])
def test_opt_out_leaves_the_allocator_alone(loop):
    counts = _probe(loop, opt_out=True)
    if counts["before"] < 40000:
        pytest.skip(f"this system does not fault large allocations page by page ({counts})")
    assert counts["after"] > counts["before"] / 2, counts
    assert counts["digest"] == _probe(loop, opt_out=False)["digest"]  # the allocator moves no value
