"""Mutation testing of the defining functions (``make mutate``; not part of ``make test``).

For each module in :data:`TARGETS` the repository's ``src/`` and ``tests/`` are copied to a work
folder (mutmut edits files in place, so the working tree is never touched), a patch that marks
only the listed functions' bodies as changed is written, and ``mutmut run --use-patch-file``
mutates exactly those lines and runs the module's listed tests against every mutant. The report
(``benchmarks/results/mutation.md``, ``--out`` elsewhere) lists per module: mutants, killed,
survived, timed out, with the diff of every survivor and, where one is written down in
:data:`EQUIVALENT`, why it is equivalent.

Two things make this affordable on a small machine:

* **a pre-forked pytest** (``--serve``): torch, numpy and pytest are imported once by a server
  process; mutmut's runner is a tiny client that asks the server to fork and run pytest on the
  module's tests. The child imports ``ddlnl`` afresh from the (mutated) work folder, so every
  mutant is tested on its own code. This saves the 2-3 s of ``import torch`` per mutant.
* **incremental reruns**: the work folder (``--work``, default ``$TMPDIR/ddlnl-mutate/<module>``)
  and its ``.mutmut-cache`` are kept. A rerun copies the current sources and tests in and mutmut
  re-tests only mutants that were not killed (mutmut's rule: a killed mutant stays killed when
  tests are added). ``--fresh`` starts from an empty cache. Only mutants on the current lines of
  the listed functions are counted.

Exit status of a test run: mutmut 2.5.1 counts only exit code 1 as "tests failed", so a mutant
that breaks collection (exit 2) or hangs would count as survived; the client maps every non-zero
exit to 1 and kills a run after ``--timeout`` seconds (reported as killed by timeout in the log).

Usage::

    python benchmarks/mutate.py                 # every module of TARGETS
    python benchmarks/mutate.py noise dm        # some modules
    python benchmarks/mutate.py --list          # the targets, their functions and tests

Needs the ``mutate`` extra (``pip install -e '.[mutate]'``: mutmut 2.5.1 and whatthepatch).
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "mutation.md"

# name -> (source file, defining functions (top-level names or Class.method), tests that pin them).
# Tests are files or pytest node ids; only fast, targeted tests, so that one mutant costs seconds.
TARGETS: dict[str, tuple[str, list[str], list[str]]] = {
    "noise": ("src/ddlnl/noise/sampling.py",
              ["_sample_from_rows", "apply_transition", "_truncated_normal", "truncated_normal_mean",
               "_raw_pixels", "_class_flip_probabilities", "instance_dependent_labels"],
              ["tests/test_defining_noise.py", "tests/test_reference_values.py", "tests/test_noise.py"]),
    "noise_matrices": ("src/ddlnl/noise/matrices.py",
                       ["symmetric_matrix", "pairflip_matrix", "asymmetric_map", "_next_within_group",
                        "asymmetric_matrix", "_map_matrix"],
                       ["tests/test_defining_noise.py", "tests/test_reference_values.py", "tests/test_noise.py"]),
    "noise_labels": ("src/ddlnl/noise/labels.py", ["realized_transition", "realized_noise_rate"],
                     ["tests/test_defining_noise.py", "tests/test_reference_values.py", "tests/test_noise.py"]),
    "experts": ("src/ddlnl/experts/cache.py", ["train_expert"], ["tests/test_defining_experts.py"]),
    "experts_config": ("src/ddlnl/experts/config.py", ["ExpertConfig.epoch_lr", "ExpertConfig.train_config"],
                       ["tests/test_defining_experts.py"]),
    "estimate": ("src/ddlnl/estimate/transition.py",
                 ["anchor_transition", "class_prior_from_labels", "_log_likelihood", "fit_temperature", "_posterior",
                  "_em", "estimate_noise"],
                 ["tests/test_defining_estimate.py", "tests/test_estimate.py"]),
    "estimate_bounds": ("src/ddlnl/estimate/bounds.py", ["ipc_upper_bound", "noise_rate_lower_bound"],
                        ["tests/test_defining_estimate.py", "tests/test_estimate.py"]),
    "estimate_advice": ("src/ddlnl/estimate/advice.py", ["max_valid_rate"],
                        ["tests/test_defining_estimate.py", "tests/test_estimate.py"]),
    "label_issues_votes": ("src/ddlnl/label_issues/votes.py", ["neighbour_votes"],
                           ["tests/test_defining_label_issues.py",
                            "tests/test_label_issues.py::test_neighbour_votes_exclude_the_sample_itself"]),
    "label_issues": ("src/ddlnl/label_issues/finder.py",
                     ["deconvolve_votes", "_count_thresholds", "confident_learning_issues", "find_issues"],
                     ["tests/test_defining_label_issues.py",
                      "tests/test_label_issues.py::test_flags_follow_the_threshold_rule",
                      "tests/test_label_issues.py::test_exact_votes_and_T_recover_the_true_label_of_wrong_labels",
                      "tests/test_label_issues.py::test_deconvolved_exact_vote_is_the_true_class",
                      "tests/test_label_issues.py::test_per_class_threshold_flags_almost_nothing_on_clean_labels",
                      "tests/test_label_issues.py::test_per_class_rule_is_cleanlabs_confident_learning",
                      "tests/test_label_issues.py::test_estimated_threshold_flags_the_expected_number_per_class",
                      "tests/test_label_issues.py::test_neighbour_votes_exclude_the_sample_itself"]),
    "train": ("src/ddlnl/train/step.py", ["soft_cross_entropy", "_lr_at", "_loss", "make_optimizer"],
              ["tests/test_defining_train.py", "tests/test_train.py::test_warmup_and_cosine_floor_schedule",
               "tests/test_train.py::test_multistep_schedule_is_torchs_multisteplr_at_two_thirds_and_five_sixths",
               "tests/test_train.py::test_soft_labels_equal_one_hot_hard_labels",
               "tests/test_train.py::test_adam_with_mse_on_label_vectors_learns"]),
    "train_loop": ("src/ddlnl/train/loop.py", ["train"], ["tests/test_defining_train.py", "tests/test_train.py",
                   "--deselect", "tests/test_train.py::test_training_learns_a_separable_problem"]),
    "augment": ("src/ddlnl/augment/ops.py",
                ["_scale", "_rotate", "_flip", "_brightness", "_saturation", "_contrast", "_quantile_to_index",
                 "_crop"],
                ["tests/test_defining_dsa.py", "tests/test_augment.py"]),
    "augment_zca": ("src/ddlnl/augment/zca.py", ["ZCA.transform", "ZCA.inverse_transform"],
                    ["tests/test_defining_dsa.py", "tests/test_augment.py"]),
    "augment_draws": ("src/ddlnl/augment/ops.py", ["_cutout"], ["tests/test_defining_dsa.py", "tests/test_augment.py"]),
    "augment_dsa": ("src/ddlnl/augment/dsa.py", ["DSA._sample_op"], ["tests/test_defining_dsa.py", "tests/test_augment.py"]),
    "dm": ("src/ddlnl/methods/dm.py", ["class_matching_loss", "distill"],
           ["tests/test_defining_dm.py",
            "tests/test_correction.py::test_dm_with_true_T_matches_each_class_to_its_clean_embedding_mean",
            "tests/test_correction.py::test_dm_correction_needs_a_noise_model",
            "tests/test_correction.py::test_dm_posterior_init_starts_the_receiving_class_from_its_clean_images"]),
    "dance": ("src/ddlnl/methods/dance.py", ["interpolate", "inner_class_loss", "inter_class_loss"],
              ["tests/test_defining_dance.py"]),
    "dance_dm": ("src/ddlnl/methods/dm.py", ["matching_loss"], ["tests/test_defining_dance.py"]),
    "datm": ("src/ddlnl/methods/datm.py", ["DATMConfig.window_upper", "plan_steps", "_distance", "Student.loss"],
             ["tests/test_defining_datm.py", "tests/test_datm.py::test_window_grows_as_datm_upper_bound",
              "tests/test_datm.py::test_plan_covers_every_image_once_per_pass"]),
    "rcig": ("src/ddlnl/methods/rcig/losses.py", ["outer_predictions", "label_margin", "outer_loss"],
             ["tests/test_defining_rcig.py",
              "tests/test_correction.py::test_rcig_forward_corrected_outer_loss_prefers_the_clean_prediction"]),
    "remedy": ("src/ddlnl/remedy.py", ["teacher_dm_config", "noise_model_for_job"],
               ["tests/test_correction.py::test_correction_rounds_2_re_estimates_T_from_teachers_on_the_remedied_set",
                "tests/test_correction.py::test_the_teacher_set_of_a_posterior_init_job_is_plain_dm",
                "tests/test_correction.py::test_the_estimated_route_keeps_its_teacher_sets_and_remakes_them_only_when_their_inputs_change",
                "tests/test_correction.py::test_the_estimated_route_of_a_job_without_dm_uses_dm_s_preset"]),
    "rcig_solvers": ("src/ddlnl/methods/rcig/solvers.py", ["_clip_to"], ["tests/test_defining_rcig.py"]),
    "rcig_loop": ("src/ddlnl/methods/rcig/loop.py", ["_monotone", "_diverged", "_search_lr"],
                  ["tests/test_defining_rcig.py"]),
    "random_subset": ("src/ddlnl/methods/random_subset.py", ["distill"], ["tests/test_defining_random.py"]),
    "common": ("src/ddlnl/methods/common.py", ["class_indices", "check_ipc", "sample_per_class"],
               ["tests/test_defining_random.py"]),
}

# Targets cut from one module when it became a package: the equivalent survivors recorded for the
# former module (by the mutated line's text) still apply to them.
FORMER_MODULE = {"noise_matrices": "noise", "noise_labels": "noise", "estimate_bounds": "estimate",
                 "estimate_advice": "estimate", "experts_config": "experts", "label_issues_votes": "label_issues",
                 "augment_zca": "augment", "augment_dsa": "augment_draws", "rcig_solvers": "rcig"}

# Survivors shown to be equivalent (or not part of the defining step), by module and the mutated
# line's text after the mutation (stripped); the reason goes into the report.
_SQUARE = "the transition matrix is validated square (K x K) just before, so t.shape[1] == t.shape[0]"
_BOUND = ("a float64 normal draw equals the truncation bound exactly with probability 0, so < and <= (> and >=) "
          "truncate to the same distribution")
_SALT = ("a seed salt: another salt gives another, equally distributed, draw from the same seed; no behaviour "
         "defines which draw a seed gives")
_DISPLAY = ("the progress bar's text (shown only with show_progress): not a behaviour of training, and not "
            "part of the defining step")
_STACK = ("the stacked values are 1-D per-sample vectors (length N), so dimension +1 is the last one, as -1: "
          "the same N x 3 rows")
_HALF = ("for an odd side k the square starts half a pixel earlier and ends half a pixel earlier: the integer "
         "rows in [top - 0.5, top - 0.5 + k) are those in [top, top + k); for an even k, k / 2 == k // 2")
_SQUARE_T = "ExpertConfig.check refuses a forward_transition that is not K x K, so t.shape[1] == t.shape[0]"
EQUIVALENT: dict[str, dict[str, str]] = {
    "remedy": {
        'key = json.dumps([job.data_identity(), TEACHER_IPC, asdict(cfg), *key_parts], sort_keys=False, default=str)':
            "the key is only compared with keys made by the same code: asdict and data_identity list their fields in "
            "a fixed order, so sorted or not, equal inputs give equal keys and different inputs different ones",
        'cfg2 = replace(dm_cfg, noise_correction="estimated", correction_init=getattr(mcfg, "correction_init", "XXgivenXX"))':
            "only DM has correction_rounds, and DM's config always has correction_init: the default is never read",
        'first = hashlib.sha256(np.ascontiguousarray(est.transition, dtype=np.float64).tobytes()).hexdigest()[:17]':
            "any prefix of the digest tells different first estimates apart",
        'syn2 = teacher_set(f"teacher-dm-ipc{TEACHER_IPC}-round2.safetensors", cfg2, est, ["XXround2XX", first])':
            "a label in the round-2 set's key: any other constant keeps it apart from the round-1 key (whose config "
            "differs anyway)",
        'seed=derive_seed(job.seed, "XXcorrection-teachersXX", 2), device=device)': _SALT,
        'seed=derive_seed(job.seed, "correction-teachers", 3), device=device)': _SALT,
    },
    "noise": {
        "return np.minimum(picked, probs.shape[1] + 1).astype(np.int64)":
            "the clamp never acts: after the division cdf[:, -1] is exactly 1.0 and every uniform is < 1, so "
            "picked <= K - 1 already",
        "_check_range(clean, t.shape[1])": _SQUARE,
        "row = np.broadcast_to(t[cls], (int(where.sum()), t.shape[1]))": _SQUARE,
        "bad = (out <= low) | (out > high)": _BOUND,
        "bad = (out < low) | (out >= high)": _BOUND,
        "cdf = lambda z: 0.5 * (2 + math.erf(z / math.sqrt(2)))  # noqa: E731":
            "the CDF's constant cancels: only cdf(b) - cdf(a) is used",
    },
    "experts": {
        "if t.shape[1] != num_classes:": _SQUARE_T,
        'raise DataError(f"experts: forward_transition is {t.shape[1]} x {t.shape[0]}, the data have {num_classes} classes")': _SQUARE_T,
        'raise DataError(f"experts: forward_transition is {t.shape[0]} x {t.shape[1]}, the data have {num_classes} classes")': _SQUARE_T,
        'expert_seed = derive_seed(seed, "XXexpertXX", index)': _SALT,
        'train_module.train(model, train, tcfg, seed=derive_seed(expert_seed, "XXepochXX", epoch),': _SALT,
        "optimizer = train_module.make_optimizer(tcfg, model, cfg.epoch_lr(1))":
            "train() sets every parameter group's lr (here the epoch's lr) before each step, so the lr the "
            "optimiser is built with is never used",
    },
    "estimate": {
        "k = t.shape[1]": "T is square (K x K), so t.shape[1] == t.shape[0]",
        "q *= q.sum()": "the EM update is homogeneous in q and renormalised: any positive scale of q gives the same "
                        "priors",
        "pi = np.full(k, 2.0 / k)": "the update is invariant to the scale of pi (it is renormalised); only the first "
                                    "convergence check sees the scale, at the cost of at most one more iteration",
        "pi = np.full(k, 1.0 * k)": "the update is invariant to the scale of pi (it is renormalised); only the first "
                                    "convergence check sees the scale, at the cost of at most one more iteration",
        "model = np.maximum(t.T @ pi, 2e-300)": "where the floor acts (a label no class can produce) that term "
                                                 "dominates the update by ~1e300 and the factor 2 cancels in the "
                                                 "renormalisation",
        "new *= new.sum()": "new.sum() is exactly 1 before this line: sum_j pi_j sum_i T[j, i] q_i / (T^T pi)_i "
                            "= sum_i q_i = 1, so dividing and multiplying by it agree (up to round-off)",
        "if np.abs(new - pi).max() <= tol:": "< and <= differ only when the change equals tol exactly",
        "if loglik - previous < tol * abs(loglik):": "< and <= differ only when the gain equals the tolerance exactly",
        "if fa > fb:": "only exact ties of the likelihood differ, and then both points are equally good",
        "for _ in range(21):": "one more golden-section step moves log t by < 1e-4 (the bracket is already "
                               "0.618^20 of its width): below the resolution the search promises",
        "lo, hi = logs[max(i - 2, 0)], logs[min(i + 1, len(logs) - 1)]":
            "a wider bracket around the best grid point: the likelihood is unimodal in log t there and the search "
            "converges to the same maximum (within 1e-4 in log t)",
        "lo, hi = logs[max(i - 1, 0)], logs[min(i + 2, len(logs) - 1)]":
            "a wider bracket around the best grid point: the likelihood is unimodal in log t there and the search "
            "converges to the same maximum (within 1e-4 in log t)",
        "rate = float(np.clip(1.0 - float(np.sum(prior * np.diag(t_mat))), 0.0, 2.0))":
            "1 - sum_i pi_i T[i, i] <= 1 because pi and T are non-negative, so the upper clip never acts",
        "it = 1": "_em's iteration count is discarded by its only caller (estimate_noise)",
        "it = None": "_em's iteration count is discarded by its only caller (estimate_noise)",
    },
    "train": {
        "span = max(cfg.epochs - cfg.warmup_epochs, 2e-09)": "the floor only acts when epochs == warmup_epochs, "
            "where progress is capped at 1 with either floor",
        "progress_ = min(2.0, (t - cfg.warmup_epochs) / span)": "t <= epochs during training, so progress never "
            "exceeds 1 and the cap never acts",
        "return soft_cross_entropy(logits, target) if target.ndim == 3 else F.cross_entropy(logits, target)":
            "torch's F.cross_entropy takes probability targets too and computes the same mean soft cross-entropy",
    },
    "train_loop": {
        'g_order = generator(derive_seed(seed, "XXorderXX"))': _SALT,
        'g_aug = generator(derive_seed(seed, "XXaugmentXX"))': _SALT,
        'rng_mix = np.random.default_rng(derive_seed(seed, "XXcutmixXX"))': _SALT,
        'g_mix = generator(derive_seed(seed, "XXcutmix-permXX"))': _SALT,
        "best_acc, best_state = -2.0, None": "any start below 0 works: an accuracy is >= 0, so the first recorded "
                                             "epoch is taken either way",
        "opt.zero_grad(set_to_none=False)": "backward writes the same gradient into a zeroed tensor as into None; a "
                                            "parameter without a gradient keeps grad None both ways (never touched)",
        "device = None": "equivalent on a CPU-only machine (tensor.to(None) leaves it where it is); with a model on a "
                         "GPU the data would stay on the CPU and the forward pass fail "
                         "(tests/test_cuda.py::test_training_loop_gives_the_same_weights_on_cuda, skipped "
                         "without a GPU)",
        'bar = progress(range(cfg.epochs), desc=desc, enabled=show_progress, unit="XXepochXX")': _DISPLAY,
        'bar.set_postfix(loss=f"{total_loss * n:.3f}")': _DISPLAY,
        'bar.set_postfix(loss=f"XX{total_loss / n:.3f}XX")': _DISPLAY,
    },
    "label_issues": {
        "thresholds[c] = 0.5 * (q[m - 1] + q[m]) if q[m] >= q[m - 1] else q[m]":
            "when q[m] == q[m - 1] the midpoint is q[m] itself: both branches give the same threshold",
        "model = np.maximum(r @ t, 2e-300)  # N x K: (T^T r_n)_i":
            "where (T^T r)_i is exactly 0 every term it divides is multiplied by 0 (T[j, i] = 0, or r_j = 0 and "
            "then new_j = 0), so the floor's size never matters; the two floors differ only for a label the "
            "current r gives a positive probability below 2e-300",
        "new /= np.maximum(new.sum(axis=1, keepdims=True), 2e-300)":
            "each row of new sums to sum_i v_i = 1 before this line (the votes are distributions), so the floor "
            "only acts on an all-zero vote, which neighbour_votes never gives",
        "new *= np.maximum(new.sum(axis=1, keepdims=True), 1e-300)":
            "each row of new sums to exactly sum_i v_i = 1 before this line (the votes are distributions), so "
            "dividing and multiplying by it agree",
        "if np.abs(new - r).max() <= tol:": "< and <= differ only when the change equals tol exactly",
    },
    "augment": {
        "theta = torch.stack([torch.stack([sx, zero, zero], +1), torch.stack([zero, sy, zero], -1)], 1)": _STACK,
        "theta = torch.stack([torch.stack([sx, zero, zero], -1), torch.stack([zero, sy, zero], +1)], 1)": _STACK,
        "theta = torch.stack([torch.stack([cos, -sin, zero], +1), torch.stack([sin, cos, zero], -1)], 1)": _STACK,
        "theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], +1)], 1)": _STACK,
        "return index.clamp(0, max(count + 1, 0))":
            "the upper clamp never acts on a quantile in [0, 1): a float32 u is at most 1 - 2^-24, and in float64 "
            "(1 - 2^-24) * count < count for every count below 2^24, so the floor is at most count - 1",
        "return index.clamp(0, max(count - 1, 1))":
            "differs only for count 1, where floor(u * 1) is 0 for every u in [0, 1) and neither clamp acts",
    },
    "augment_draws": {
        "top = _quantile_to_index(quantile_h, h + 1 - size_h % 2).to(x.device) - size_h / 2": _HALF,
        "left = _quantile_to_index(quantile_w, w + 1 - size_w % 2).to(x.device) - size_w / 2": _HALF,
    },
    "augment_dsa": {
        'return {"flip": uniform() <= p.prob_flip}': "a float32 uniform equals prob_flip exactly with probability "
                                                    "at most 2^-24: the same flip probability",
        'raise AssertionError(f"XXunhandled op {op!r}XX")  # guarded by STRATEGY_TOKENS':
            "unreachable: DSA refuses an unknown strategy token when it is built",
    },
    "dance": {
        "if labels.ndim == 3:": "torch's F.cross_entropy takes probability rows too and computes the same mean soft "
                                "cross-entropy",
    },
    "datm": {
        "x = images if step.draw is None and self.dsa is None else self.dsa.apply(images, step.draw)":
            "plan_steps gives a step a DSA draw exactly when the student has a DSA, so draw is None iff dsa is "
            "None and 'or' and 'and' agree on every step that is ever taken",
        "chunks: list[torch.Tensor] = None": "'if not chunks' treats None like the empty list: a fresh "
                                             "permutation is drawn first either way",
    },
    "rcig_loop": {
        "return len(values) >= 1 and values[-1] > values[0]":
            "with one value values[-1] is values[0], which is never greater than itself",
    },
    "random_subset": {'g = generator(derive_seed(seed, "XXrandom-subsetXX"))': _SALT},
    "dm": {
        'g = generator(derive_seed(seed, "XXdmXX"))': _SALT,
        'reinitialize_(net, derive_seed(seed, "XXdm-netXX", it), host=host)': _SALT,
        'bar = progress_bar(range(cfg.iterations), desc=f"XXdm ipc={ipc}XX", enabled=progress)': _DISPLAY,
        'bar.set_postfix(loss=f"XX{float(loss.detach()):.3f}XX")': _DISPLAY,
        "net = build_model(net_cfg, channels=channels, num_classes=num_classes, image_size=(h, w), seed=1,":
            "the network is re-initialised (reinitialize_, the iteration's seed) before its first use, so the "
            "construction seed's weights are never used",
        "image_size=(h, w), seed=1)": "the host copy is re-initialised by reinitialize_ before its weights are "
                                      "copied over, so its construction seed's weights are never used",
        'host = None if device.type != "cpu" else build_model(net_cfg, channels=channels, num_classes=num_classes,':
            "equivalent on a CPU: a CPU host copy is re-initialised with the same seed and copied over, the same "
            "bit-identical weights as re-initialising in place; on a GPU (no host) reinitialize_ refuses the device "
            "model (tests/test_cuda.py, skipped without a GPU)",
        'host = None if device.type == "XXcpuXX" else build_model(net_cfg, channels=channels, num_classes=num_classes,':
            "a host copy is then built on a CPU too: it is re-initialised with the same seed and copied over, the "
            "same bit-identical weights as re-initialising in place; on a GPU nothing changes (a host is built)",
        "host = None": "equivalent on a CPU, where host is None already; on a GPU reinitialize_ refuses the device "
                       "model without a CPU host (tests/test_cuda.py, skipped without a GPU)",
        "p.requires_grad_(True)": "the network's parameters then collect gradients, but no optimiser holds them and "
                                  "they are re-drawn every iteration: the images' gradient and step are the same",
        "opt.zero_grad(set_to_none=False)": "backward writes the same gradient into a zeroed tensor as into None",
        "draw = dsa.sample(2, g, siamese=True)": "a siamese draw gives every image the first draw's parameters; a "
                                                 "length-2 draw only consumes one more uniform per op from g: another, "
                                                 "equally distributed stream (like a seed salt)",
    },
}


# --------------------------------------------------------------------------------------------
# Patch restricted to the defining functions
# --------------------------------------------------------------------------------------------


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
        body = found[name].body
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


def sync_tree(dest: Path) -> None:
    """Copy the tracked and untracked (not ignored) ``src/``, ``tests/`` files into ``dest``."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for sub in ("src", "tests"):
        if (dest / sub).exists():
            shutil.rmtree(dest / sub)
    for rel in files:
        if rel.startswith(("src/", "tests/")) or rel == "pyproject.toml":
            if (ROOT / rel).is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, dest / rel)


# --------------------------------------------------------------------------------------------
# Pre-forked pytest: server and client
# --------------------------------------------------------------------------------------------


def serve(sock_path: str, workdir: str, timeout: float, log_path: str) -> None:
    """Import the heavy modules once, then fork one pytest per request (never imports ddlnl)."""
    __import__("numpy")  # imported once here, so that no child pays for it
    import pytest
    import torch

    torch.set_num_threads(1)
    sys.dont_write_bytecode = True
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(4)
    log = open(log_path, "a", buffering=1)
    while True:
        conn, _ = server.accept()
        with conn:
            request = json.loads(conn.makefile().readline())
            if request.get("stop"):
                return
            start = time.perf_counter()
            pid = os.fork()
            if pid == 0:  # child: a fresh ddlnl import from the work folder, pytest, exit status
                os.chdir(workdir)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                try:
                    rc = int(pytest.main(request["args"]))
                except BaseException:  # noqa: BLE001 - any crash is a failed run
                    rc = 3
                os._exit(rc)
            rc = _wait(pid, conn, timeout)
            log.write(f"{time.strftime('%H:%M:%S')} rc={rc} {time.perf_counter() - start:.1f}s\n")
            try:
                conn.sendall(f"{rc}\n".encode())
            except OSError:
                pass


def _wait(pid: int, conn: socket.socket, timeout: float) -> int:
    """Exit status of the child, or "timeout"/"client gone" (child killed) as a failed run."""
    import select

    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        gone = select.select([conn], [], [], 0.05)[0] and not conn.recv(1, socket.MSG_PEEK)
        if gone or time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return 124 if not gone else 125


def client(sock_path: str, args: list[str]) -> int:
    """mutmut's runner: ask the server to run pytest; 1 if anything but a clean pass.

    Without a server (it died), pytest runs in a subprocess here, so a lost server never turns
    into killed mutants."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(sock_path)
            s.sendall((json.dumps({"args": args}) + "\n").encode())
            rc = int(s.makefile().readline().strip() or "")
    except (OSError, ValueError):
        rc = subprocess.run([sys.executable, "-m", "pytest", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL).returncode
    print(f"pytest exit status {rc}")
    return 0 if rc == 0 else 1


def stop_server(sock_path: str) -> None:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(sock_path)
            s.sendall(b'{"stop": true}\n')
    except OSError:
        pass


# --------------------------------------------------------------------------------------------
# One module
# --------------------------------------------------------------------------------------------


def _children(pid: int) -> list[tuple[int, str]]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == pid:
                    out.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
            except (OSError, ValueError, IndexError):
                pass
    return out


def run_mutmut(command: list[str], work: Path, env: dict[str, str], log) -> bool:
    """Run mutmut to the end (True), or stop it (False) when its worker process is gone.

    mutmut 2.5.1 tests mutants in a spawned worker and waits on a queue for its results; if the
    worker dies without a word (killed from outside), mutmut waits forever. Killed mutants are
    in the cache, so a restart resumes with the rest.
    """
    log.flush()
    proc = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    seen, missing = False, 0
    try:
        while proc.poll() is None:
            time.sleep(5)
            workers = [p for p, cmd in _children(proc.pid) if "spawn_main" in cmd]
            seen = seen or bool(workers)
            missing = missing + 1 if seen and not workers else 0
            if missing >= 3 and proc.poll() is None:
                return False
    finally:
        if proc.poll() is None:  # lost worker, or we were stopped: take mutmut's processes down too
            for p, _ in _children(proc.pid):
                for q, _ in _children(p):
                    os.kill(q, signal.SIGKILL)
                os.kill(p, signal.SIGKILL)
            proc.kill()
            proc.wait()
    if proc.returncode % 2:  # mutmut's exit status is a bit field; bit 0 = a fatal error
        raise SystemExit(f"mutmut failed (exit status {proc.returncode}) in {work}; see {log.name}")
    return True


def current_mutants(work: Path, source: str, lines: list[int]) -> list[tuple[int, str, int]]:
    """(id, status, line number) of the cache's mutants on the listed lines as they are now."""
    text = (work / source).read_text().splitlines()
    con = sqlite3.connect(work / ".mutmut-cache")
    rows = con.execute("SELECT m.id, m.status, l.line_number, l.line FROM Mutant m JOIN Line l ON m.line = l.id "
                       "JOIN SourceFile f ON l.sourcefile = f.id WHERE f.filename = ?", (source,)).fetchall()
    con.close()
    wanted = set(lines)
    return [(i, status, n + 1) for i, status, n, line in rows
            if n + 1 in wanted and n < len(text) and text[n] == line]


def show(work: Path, env: dict[str, str], mutmut: str, mutant: int) -> str:
    diff = subprocess.run([mutmut, "show", str(mutant)], cwd=work, env=env, capture_output=True, text=True).stdout
    return "\n".join(line for line in diff.splitlines()
                     if line.startswith(("-", "+")) and not line.startswith(("---", "+++")))


def run_module(name: str, args: argparse.Namespace, log) -> dict:
    source, functions, tests = TARGETS[name]
    missing = [t for t in tests if not t.startswith("-") and not (ROOT / t.split("::")[0]).exists()]
    if missing:
        raise SystemExit(f"{name}: test file(s) {missing} do not exist; update TARGETS")
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    work = Path(args.work or Path(tempfile.gettempdir()) / "ddlnl-mutate") / name
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        return collect(name, work, 0.0)
    sync_tree(work)
    lines = function_lines(work / source, functions)
    write_patch(source, (work / source).read_text(), lines, work / "defining.patch")
    env = dict(os.environ, PYTHONPATH=str(work / "src"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    sock = str(work / "pytest.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    server = subprocess.Popen([sys.executable, __file__, "--serve", sock, "--serve-dir", str(work),
                               "--timeout", str(args.timeout), "--serve-log", str(work / "runs.log")], env=env)
    for _ in range(600):
        if os.path.exists(sock):
            break
        time.sleep(0.1)
    pytest_args = ["-x", "-q", "-p", "no:cacheprovider", *tests]
    runner = f"{sys.executable} {__file__} --client {sock} -- {' '.join(pytest_args)}"
    start = time.perf_counter()
    command = [mutmut, "run", "--paths-to-mutate", source, "--runner", runner, "--use-patch-file",
               "defining.patch", "--no-progress", "--simple-output"]
    try:
        for attempt in range(args.restarts + 1):
            # A stopped mutmut leaves its current mutant in the file: start from the pristine source.
            shutil.copy2(ROOT / source, work / source)
            Path(str(work / source) + ".bak").unlink(missing_ok=True)
            done = run_mutmut(command, work, env, log)
            if done:
                break
            log.write(f"{name}: mutmut's worker process disappeared; restarting mutmut (attempt {attempt + 1})\n")
        else:
            raise SystemExit(f"{name}: mutmut's worker kept disappearing; see {log.name}")
    finally:
        stop_server(sock)
        server.wait(timeout=30)
    seconds = time.perf_counter() - start
    timing = work / "seconds.json"
    spent = json.loads(timing.read_text()) if timing.exists() else []
    timing.write_text(json.dumps(spent + [round(seconds, 1)]))
    load = os.getloadavg()
    (work / "last_run.json").write_text(json.dumps({"finished": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}",
                                                    "load": [round(v, 1) for v in load]}))
    return collect(name, work, seconds)


def collect(name: str, work: Path, seconds: float) -> dict:
    """The module's numbers from its cache (``seconds``: this run; all runs are in seconds.json)."""
    source, functions, tests = TARGETS[name]
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    env = dict(os.environ, PYTHONPATH=str(work / "src"))
    if not (work / ".mutmut-cache").exists():
        raise SystemExit(f"mutmut failed for {name} (no cache in {work})")
    shutil.copy2(ROOT / source, work / source)  # count against the pristine source
    lines = function_lines(work / source, functions)
    mutants = current_mutants(work, source, lines)
    if not mutants:
        raise SystemExit(f"mutmut made no mutants for {name} (functions {functions}); see the log")
    count = lambda *s: sum(1 for _, status, _ in mutants if status in s)  # noqa: E731
    timing = work / "seconds.json"
    runs = json.loads(timing.read_text()) if timing.exists() else []
    survivors = []
    for i, status, line in sorted(mutants):
        if status == "bad_survived":
            diff = show(work, env, mutmut, i)
            after = next((d[1:].strip() for d in diff.splitlines() if d.startswith("+")), "")
            known = {**EQUIVALENT.get(FORMER_MODULE.get(name, name), {}), **EQUIVALENT.get(name, {})}
            survivors.append((i, line, diff, known.get(after)))
    return {"module": name, "source": source, "functions": functions, "tests": tests, "seconds": seconds,
            "last_run": json.loads((work / "last_run.json").read_text()) if (work / "last_run.json").exists() else None,
            "all_seconds": sum(runs), "runs": len(runs), "total": len(mutants), "untested": count("untested"),
            # mutmut's ok_suspicious: the tests FAILED, only slowly (under load): a kill
            "killed": count("ok_killed", "bad_timeout", "ok_suspicious"), "survived": count("bad_survived"),
            "survivors": survivors}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def machine_line() -> str:
    load = os.getloadavg()
    return (f"{platform.node() or 'host'} ({os.cpu_count()} CPUs, {platform.machine()}), "
            f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


def _last(r: dict) -> str:
    last = r.get("last_run")
    return f"{last['finished']}, {' '.join(f'{v:.1f}' for v in last['load'])}" if last else "not recorded"


def report(results: list[dict], header: str = "") -> str:
    lines = ["# Mutation testing of the defining functions", "",
             f"`python benchmarks/mutate.py {' '.join(r['module'] for r in results)}` (mutmut 2.5.1; mutations only "
             f"on the listed functions' lines), finished {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on "
             f"{machine_line()}; tests with 1 torch thread.", ""]
    if header:
        lines += [header, ""]
    lines += ["A mutant is *killed* when a listed test fails, errors or times out; a *survivor* left every listed "
              "test green. *Equivalent* survivors (reason below each) cannot be told apart from the original by "
              "any behaviour the step defines; killed % is killed / (mutants - equivalent).", "",
              "| module | mutants | killed | survived | equivalent | killed % of non-equivalent | minutes (all runs) "
              "| last run finished (UTC), load average then |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        equivalent = sum(1 for s in r["survivors"] if s[3])
        tested = r["total"] - r["untested"] - equivalent
        pct = 100.0 * r["killed"] / tested if tested else float("nan")
        lines.append(f"| {r['module']} | {r['total'] - r['untested']} | {r['killed']} | {r['survived'] - equivalent} | "
                     f"{equivalent} | {pct:.1f} | {r['all_seconds'] / 60:.1f} ({r['runs']}) | {_last(r)} |")
    if len(results) > 1:
        eq = sum(sum(1 for s in r["survivors"] if s[3]) for r in results)
        total = sum(r["total"] - r["untested"] for r in results)
        killed = sum(r["killed"] for r in results)
        lines.append(f"| **all** | {total} | {killed} | {sum(r['survived'] for r in results) - eq} | {eq} | "
                     f"{100.0 * killed / max(total - eq, 1):.1f} | {sum(r['all_seconds'] for r in results) / 60:.1f} | |")
    lines += ["", "## What was mutated and which tests ran", ""]
    for r in results:
        lines.append(f"- **{r['module']}** (`{r['source']}`): {', '.join(r['functions'])}; tests: "
                     f"{', '.join(r['tests'])}" + (f"; {r['untested']} mutants not reached" if r["untested"] else ""))
    for r in results:
        if r["survivors"]:
            lines += ["", f"## Survivors: {r['module']}", ""]
            for i, line, diff, why in r["survivors"]:
                lines += [f"mutant {i} (line {line}){': equivalent: ' + why if why else ': NOT killed'}", "```diff",
                          diff, "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    if sys.argv[1:2] == ["--client"]:  # mutmut's runner: no argparse, no imports beyond the stdlib
        sys.exit(client(sys.argv[2], sys.argv[4:]))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `kill` also stops mutmut and the server
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", help=f"subset of {', '.join(TARGETS)}")
    ap.add_argument("--list", action="store_true", help="print the targets and exit")
    ap.add_argument("--out", default=str(RESULT), help="report file (default: %(default)s)")
    ap.add_argument("--work", default=None, help="folder of the per-module work copies and caches")
    ap.add_argument("--report-only", action="store_true", help="write the report from the kept caches, run nothing")
    ap.add_argument("--fresh", action="store_true", help="forget earlier results (re-test every mutant)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before one test run counts as killed")
    ap.add_argument("--restarts", type=int, default=20, help="restarts of mutmut when its worker disappears")
    ap.add_argument("--header", default="", help="a paragraph for the report (how it was run)")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--serve-dir", help=argparse.SUPPRESS)
    ap.add_argument("--serve-log", help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    if args.serve:
        serve(args.serve, args.serve_dir, args.timeout, args.serve_log)
        return
    if args.list:
        for k, (src, fns, tests) in TARGETS.items():
            print(f"{k}: {src}: {', '.join(fns)}  [{', '.join(tests)}]")
        return
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
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
            results.append(run_module(name, args, log))
            r = results[-1]
            print(f"  {r['total']} mutants, {r['killed']} killed, {r['survived']} survived, {r['untested']} untested "
                  f"in {r['seconds'] / 60:.1f} min", flush=True)
            Path(args.out).write_text(report(results, args.header))
    print(report(results, args.header))


if __name__ == "__main__":
    main()
