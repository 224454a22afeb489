"""Expert trajectories for trajectory matching (MTT: Cazenavette et al., CVPR 2022; DATM: Guo et
al., ICLR 2024): training, compact storage, cached loading.

An *expert* is a ConvNet trained on the **noisy** training set with plain SGD at a constant
learning rate; its *trajectory* is its flat parameter vector before training and after every
epoch, a ``(N + 1) x P`` tensor (N epochs, P parameters, rows in ``model.named_parameters()``
order). Trajectory matching starts a student at epoch ``t`` of an expert and asks it to reach
epoch ``t + M`` in a few steps on the synthetic set.

Training settings are the reference ``buffer.py`` ones (MTT ``buffer.py``; DATM
``buffer/buffer_FTD.py``): SGD lr 0.01, momentum 0, weight decay 0, batch 256, DSA augmentation
of every training batch (``epoch(..., aug=True)`` with ``DiffAugment``), ConvNet-3 width 128 with
instance norm, 50 epochs, 100 experts. Experts go through ddlnl's one training loop
(:func:`ddlnl.train.train`, one call per epoch with a per-epoch seed).

Flat trajectories (option): FTD (Du et al., CVPR 2023) trains experts with GSAM, a sharpness-aware
step (:func:`ddlnl.train.gsam_gradient`), so that the trajectory the student matches is flatter and
the student's accumulated error smaller. DATM's ``buffer_FTD.py`` and the study's runs of it use
rho 0.01 with adaptive (ASAM) scaling; the study passes alpha 0.3 (``ddlnl_scripts.md``), DATM's
own script alpha 0.4. :data:`FTD` holds the study's values; ``ExpertConfig(**FTD)`` or DATM's
``expert_ftd=true`` select it. Default: plain-SGD (MTT ``buffer.py``) experts. A GSAM step costs
two forward/backward passes, so FTD experts take about twice as long to train.

Cache layout (``cache_root()/experts/<key>/``)::

    manifest.json                what produced the experts (config, data fingerprint, seed, layout)
    expert_0000.safetensors      one expert: tensor "trajectory" (N+1) x P, with its key and a
    expert_0001.safetensors      SHA-256 of its bytes in the header; written atomically

The key hashes the data fingerprint (images *and* noisy labels), the architecture, the training
settings and the seed, so experts trained on another noise draw can never be reused. Expert ``i``
is a pure function of (key, i): the number of experts is not part of the key, so asking for more
experts later trains only the new ones, and an interrupted run resumes where it stopped.

Defining steps (pinned by ``tests/test_defining_experts.py``, ``tests/test_experts.py``):

1. row 0 of a trajectory is the initial weights, row ``e + 1`` the weights after epoch ``e``
   (``epochs + 1`` rows);
2. each epoch is SGD on the NOISY labels at the epoch's lr with the reference's settings (lr 0.01,
   no momentum, no weight decay, batch 256, DSA); with momentum one optimiser serves every epoch;
3. ``lr_milestones`` multiply the lr by ``lr_gamma`` from their epoch on;
4. the cache key covers data (images and noisy labels), architecture, training settings and seed.

The package: :mod:`.config` (:class:`ExpertConfig`), :mod:`.trajectories` (parameter layout,
the functional forward pass, :class:`Trajectories`), :mod:`.cache` (training experts, their checked
files, the cache status, :func:`get_experts`); every name is re-exported here.
"""

from __future__ import annotations


# Re-exported: ``ddlnl.experts.X`` keeps working for every name of the former module.
from .config import (  # noqa: F401
    ExpertConfig, FORMAT, FTD, _STORAGE_DTYPES,
)
from .trajectories import (  # noqa: F401
    ParamLayout, Trajectories, functional_forward,
)
from .trajectories import _read_trajectory  # noqa: F401
from .cache import (  # noqa: F401
    ExpertStatus, _VERIFIED, _cache_folder, _digest, _expert_path, _file_identity, _layout_for, _manifest,
    _scan_cache, _valid_expert, _write_expert, expert_key, expert_status, get_experts,
    train_expert,
)



