"""The study's settings (configs/study/) and `--preset paper`: checked against facts typed by hand
from the study's own files (Kciiiman/DD_LNL@d59a5a5; DM: VICO-UoE/DatasetCondensation), not read
from the tables the code reads, so that a wrong table row or a wrong lookup fails here."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import pytest

from ddlnl import study
from ddlnl.cli import main
from ddlnl.config import apply_overrides
from ddlnl.errors import ConfigError
from ddlnl.methods import METHODS, method_config, paper_resolution
from ddlnl.pipeline import JobConfig, describe_cell, resolve_job
from ddlnl.study import StudyCell

C10 = "DATM+ours/configs/CIFAR-10/ConvIN"
C100 = "DATM+ours/configs/CIFAR-100/ConvIN"
TINY = "DATM+ours/configs/TinyImageNet/ConvIN"
BUFFER = "ddlnl_scripts.md + DATM+ours/buffer/buffer_FTD.py (rho 0.01, alpha 0.3, 100 experts x 100 epochs)"
DANCE = "DANCE+ours/arguments/reproduce_condense.py, arg_condense.py, arg_pretrain.py; ddlnl_scripts.md --factor 2"
RCIG3 = "RCIG+ours/configs_final/depth_3.txt; ddlnl_scripts.md --max_steps 10000; distill_dataset.py"
DM = "VICO-UoE/DatasetCondensation main_DM.py"

# (method, dataset, ipc, noise, {field: study value}, the file the values were read from).
FACTS = [
    ("datm", "cifar10", 1, "symmetric:0.4",
     {"lr_y": 5.0, "threshold": 1.1, "max_start_epoch": 4, "lr_lr": 1e-7, "batch_syn": 10,
      "sequential_generation": False, "syn_lr_init": 0.001, "syn_steps": 80, "lr_img": 100.0,
      # not in the file: DATM+ours/utils/cfg.py's defaults
      "current_max_start_epoch": 20, "expansion_end_iteration": 3000}, f"{C10}/symmetric/IPC1_0.4.yaml"),
    ("datm", "cifar10", 10, "symmetric:0.8",
     {"lr_lr": 1e-6, "syn_lr_init": 0.001, "current_max_start_epoch": 10, "max_start_epoch": 20,
      "expansion_end_iteration": 1000, "sequential_generation": True, "batch_syn": 100}, f"{C10}/symmetric/IPC10_0.8.yaml"),
    ("datm", "cifar10", 50, "symmetric:0.2",
     {"lr_img": 1000.0, "syn_lr_init": 0.001, "current_max_start_epoch": 20, "max_start_epoch": 40,
      "expansion_end_iteration": 2000, "batch_syn": 500, "lr_lr": 1e-5}, f"{C10}/symmetric/IPC50_0.2.yaml"),
    ("datm", "cifar10", 500, "symmetric:0.6",
     {"syn_steps": 40, "lr_img": 50.0, "syn_lr_init": 0.01, "min_start_epoch": 40, "max_start_epoch": 60,
      "lr_y": 10.0, "batch_syn": 1000, "sequential_generation": False}, f"{C10}/symmetric/IPC500_0.6.yaml"),
    ("datm", "cifar10", 1, "asymmetric:0.6",
     {"lr_y": 5.0, "threshold": 1.1, "max_start_epoch": 4, "lr_lr": 1e-7, "syn_lr_init": 0.001},
     f"{C10}/asymmetric/IPC1_0.6.yaml"),
    ("datm", "cifar10", 1000, "asymmetric:0.2",
     {"syn_steps": 100, "iterations": 6000, "lr_img": 50.0, "min_start_epoch": 40, "max_start_epoch": 60},
     f"{C10}/asymmetric/IPC1000_0.2.yaml"),
    ("datm", "cifar10", 1000, "asymmetric:0.78", {"init": "real", "iterations": 10000},
     f"{C10}/asymmetric/IPC1000_0.8.yaml (its noise_rate is 0.78)"),
    ("datm", "cifar10", 1, "natural:aggre", {"syn_lr_init": 0.01, "lr_y": 5.0, "threshold": 1.1},
     f"{C10}/annot/IPC1_aggre.yaml"),
    ("datm", "cifar10", 10, "natural:worst", {"syn_lr_init": 0.001, "lr_lr": 1e-5}, f"{C10}/annot/IPC10_worst.yaml"),
    ("datm", "cifar10", 10, "natural:random2", {"syn_lr_init": 0.01, "max_start_epoch": 20}, f"{C10}/annot/IPC10_rand2.yaml"),
    ("datm", "cifar10", 50, "natural:random1", {"lr_img": 1000.0, "syn_lr_init": 0.01, "batch_syn": 500},
     f"{C10}/annot/IPC50_rand1.yaml"),
    ("datm", "cifar100", 1, "symmetric:0.2",
     {"syn_steps": 40, "expert_epochs": 3, "lr_img": 1000.0, "syn_lr_init": 0.01, "lr_y": 10.0, "batch_syn": 1000,
      "current_max_start_epoch": 10, "max_start_epoch": 20, "expansion_end_iteration": 1000}, f"{C100}/symmetric/IPC1_0.2.yaml"),
    ("datm", "cifar100", 10, "symmetric:0.6",
     {"current_max_start_epoch": 30, "max_start_epoch": 50, "expansion_end_iteration": 2000, "lr_img": 1000.0},
     f"{C100}/symmetric/IPC10_0.6.yaml"),
    ("datm", "cifar100", 50, "symmetric:0.8",
     {"init": "real", "sequential_generation": False, "min_start_epoch": 20, "max_start_epoch": 70},
     f"{C100}/symmetric/IPC50_0.8.yaml"),
    ("datm", "cifar100", 100, "asymmetric:0.4",
     {"lr_img": 50.0, "min_start_epoch": 30, "max_start_epoch": 70, "sequential_generation": False},
     f"{C100}/asymmetric/IPC100_0.4.yaml"),
    ("datm", "cifar100", 10, "natural:noisy",
     {"lr_img": 1000.0, "syn_lr_init": 0.01, "current_max_start_epoch": 30, "max_start_epoch": 50, "batch_syn": 1000},
     f"{C100}/annot/IPC10_noisy100.yaml"),
    ("datm", "tiny-imagenet", 1, "symmetric:0.4",
     {"depth": 4, "lr_img": 10000.0, "syn_steps": 40, "lr_lr": 1e-4, "current_max_start_epoch": 15,
      "max_start_epoch": 20, "syn_lr_init": 0.01}, f"{TINY}/symmetric/IPC1_0.4.yaml"),
    ("datm", "tiny-imagenet", 10, "symmetric:0.8",
     {"depth": 4, "lr_img": 100.0, "min_start_epoch": 10, "max_start_epoch": 50, "batch_syn": 500},
     f"{TINY}/symmetric/IPC10_0.8.yaml"),
    ("datm", "tiny-imagenet", 50, "symmetric:0.6",
     {"depth": 4, "syn_steps": 20, "init": "real", "min_start_epoch": 40, "max_start_epoch": 70},
     f"{TINY}/symmetric/IPC50_0.6.yaml"),
    ("datm", "tiny-imagenet", 50, "symmetric:0.2", {"init": "correct"}, f"{TINY}/symmetric/IPC50_0.2.yaml"),
    # Experts: FTD (GSAM) experts as the study's buffer script trains them.
    ("datm", "cifar10", 10, "symmetric:0.4",
     {"num_experts": 100, "expert_train_epochs": 100, "expert_lr": 0.01, "expert_batch": 256, "expert_ftd": True,
      "expert_sam_rho": 0.01, "expert_sam_alpha": 0.3}, BUFFER),
    ("datm", "cifar100", 50, "asymmetric:0.2", {"expert_train_epochs": 100, "expert_ftd": True}, BUFFER),
    ("dance", "cifar10", 1, "symmetric:0.2",
     {"iterations": 10000, "factor": 2, "lr_img_per_ipc": 0.01, "pretrain_epochs": 60, "depth": 3, "momentum": 0.5,
      "batch_real": 128, "num_pretrained": 5}, DANCE),
    ("dance", "cifar100", 10, "natural:noisy", {"factor": 2, "pretrain_epochs": 60, "pretrain_lr": 0.01}, DANCE),
    ("dance", "tiny-imagenet", 10, "symmetric:0.6", {"depth": 4, "factor": 2, "iterations": 10000}, DANCE),
    ("dance", "cifar10", 50, "asymmetric:0.4", {"pretrain_batch": 64, "pretrain_weight_decay": 5e-4}, DANCE),
    ("rcig", "cifar10", 1, "symmetric:0.4",
     {"iterations": 10000, "lr_img": 0.003, "l2_rate": 5e-4, "inner_steps": 20, "hinv_steps": 20, "pool_size": 30,
      "pool_lr": 5e-5, "pool_max_steps": 16, "pool_reinit_after": 100, "use_flip": True, "softplus_beta": 60.0,
      "depth": 3, "width": 128, "batch_real": 1024}, RCIG3),
    ("rcig", "cifar100", 10, "symmetric:0.8", {"use_flip": True, "depth": 3}, RCIG3),
    ("rcig", "cifar100", 50, "asymmetric:0.4", {"use_flip": False, "pool_size": 30}, "RCIG+ours/configs_final/cifar100_50.txt"),
    ("rcig", "tiny-imagenet", 1, "symmetric:0.2", {"depth": 4, "use_flip": True}, "RCIG+ours/configs_final/depth_4_200.txt"),
    ("rcig", "tiny-imagenet", 10, "symmetric:0.2", {"depth": 4, "use_flip": False}, "RCIG+ours/configs_final/depth_4_big.txt"),
    ("dm", "cifar10", 10, "symmetric:0.4",
     {"iterations": 20000, "lr_img": 1.0, "momentum": 0.5, "batch_real": 256, "init": "real", "depth": 3}, DM),
    ("dm", "cifar100", 1, "natural:noisy", {"iterations": 20000, "batch_real": 256}, DM),
    ("dm", "tiny-imagenet", 50, "symmetric:0.8", {"depth": 4, "iterations": 20000}, DM + " + the study's ConvNetD4"),
]


@pytest.mark.parametrize("method,dataset,ipc,noise,facts,source", FACTS,
                         ids=[f"{m}-{d}-ipc{i}-{n}" for m, d, i, n, _, _ in FACTS])
def test_paper_preset_is_the_studys_setting(method, dataset, ipc, noise, facts, source):
    cfg = method_config(method, "paper", cell=StudyCell.of(dataset, ipc, noise))
    got = {k: getattr(cfg, k) for k in facts}
    assert got == facts, f"not as in {source}"
    res = paper_resolution(method, StudyCell.of(dataset, ipc, noise))
    assert not res.notes, res.notes  # an exact row: no neighbour
    assert all(res.sources[k].startswith("study: ") for k in facts if k in res.sources)


def test_facts_cover_every_method_and_dataset():
    assert len(FACTS) >= 30
    assert {f[0] for f in FACTS} == {"datm", "dance", "rcig", "dm"}
    assert {f[1] for f in FACTS} == set(study.STUDY_DATASETS)
    assert {(f[0], f[1]) for f in FACTS} == {(m, d) for m in ("datm", "dance", "rcig", "dm") for d in study.STUDY_DATASETS}


def test_values_the_study_uses_but_ddlnl_cannot_run_are_named_not_applied(monkeypatch):
    res = paper_resolution("datm", StudyCell.of("cifar10", 10, "symmetric:0.4"))
    assert res.values["zca"] is True and "zca" not in res.deviations  # every DATM config: zca: True (now run)
    cell = StudyCell.of("cifar10", 10, "symmetric:0.4")
    monkeypatch.setitem(study.PENDING, ("datm", "zca"), ("not runnable here", lambda v: v is True))
    res = paper_resolution("datm", cell)
    assert "zca" not in res.values and res.deviations["zca"][0] is True
    assert "not runnable here" in res.deviations["zca"][1]
    assert method_config("datm", "paper", cell=cell).zca is False  # the config keeps ddlnl's value


def test_rcig_on_tiny_imagenet_runs_the_studys_plain_relu():
    cell = StudyCell.of("tiny-imagenet", 1, "symmetric:0.4")
    res = paper_resolution("rcig", cell)
    assert res.values["softplus_beta"] == 0 and not res.deviations  # depth_4_200.txt: softplus_temp 0
    assert "depth_4_200.txt" in res.sources["softplus_beta"]
    cfg = method_config("rcig", "paper", cell=cell)
    assert cfg.softplus_beta == 0 and cfg.zca is True  # RCIG whitens every non-MNIST dataset
    cifar = method_config("rcig", "paper", cell=StudyCell.of("cifar10", 10, "symmetric:0.4"))
    assert cifar.softplus_beta == 60.0


def test_a_cell_without_a_study_row_names_its_neighbour():
    # CIFAR-10 IPC 100 symmetric 0.4: the study has IPC 50 and 500; 50 is nearer in log IPC.
    cell = StudyCell.of("cifar10", 100, "symmetric:0.4")
    res = paper_resolution("datm", cell)
    assert len(res.notes) == 1 and "nearest neighbour: ipc 50, noise symmetric:0.4" in res.notes[0]
    assert "IPC50_0.4.yaml" in res.notes[0]
    cfg = method_config("datm", "paper", cell=cell)
    assert (cfg.lr_img, cfg.max_start_epoch, cfg.batch_syn) == (1000.0, 40, 500)  # IPC50_0.4.yaml
    # Tiny-ImageNet has no asymmetric configs: the same IPC at the nearest symmetric rate.
    res = paper_resolution("datm", StudyCell.of("tiny-imagenet", 10, "asymmetric:0.4"))
    assert "ipc 10, noise symmetric:0.4" in res.notes[0]
    # The IPC decides first (DATM's hyperparameters follow the IPC): CIFAR-100N has IPC 1-50 only,
    # so IPC 100 takes a synthetic-noise IPC 100 config rather than the IPC 50 noisy100 one.
    res = paper_resolution("datm", StudyCell.of("cifar100", 100, "natural:noisy"))
    assert "nearest neighbour: ipc 100," in res.notes[0]
    # RCIG on Tiny-ImageNet IPC 50: the scripts name configs for IPC 1 and 10 only.
    res = paper_resolution("rcig", StudyCell.of("tiny-imagenet", 50, "symmetric:0.2"))
    assert "ipc 10" in res.notes[0] and "depth_4_big.txt" in res.notes[0] and res.values["use_flip"] is False


def test_datasets_the_study_did_not_run_keep_the_published_defaults():
    for method in ("datm", "dance", "rcig", "dm"):
        res = paper_resolution(method, StudyCell.of("fashion-mnist", 10, "symmetric:0.4"))
        assert not res.values and "no fashion-mnist experiments" in res.notes[0]
        assert method_config(method, "paper", cell=StudyCell.of("fashion-mnist", 10, "symmetric:0.4")) == \
            METHODS[method].config()


def test_cpu_preset_ignores_the_study():
    cell = StudyCell.of("cifar10", 1, "symmetric:0.4")
    for method in METHODS:
        assert method_config(method, "cpu", cell=cell) == method_config(method, "cpu")


def test_run_resolves_each_ipc_through_the_tables():
    job = JobConfig(dataset="cifar10", noise="symmetric:0.4", methods=("datm", "dm"), ipcs=(1, 10), preset="paper")
    resolved = resolve_job(job, ["datm.iterations=7"])
    assert resolved.method_cfg("datm", 1).lr_y == 5.0 and resolved.method_cfg("datm", 10).lr_y == 2.0
    assert resolved.method_cfg("datm", 1).iterations == resolved.method_cfg("datm", 10).iterations == 7  # --set wins
    assert "datm" in resolved.per_ipc and "dm" not in resolved.per_ipc
    assert resolved.method_cfg("datm", 1).zca is True  # the study's zca: True, applied
    # A job on a dataset the study did not run resolves as before (no per-IPC configs, no new keys).
    plain = resolve_job(JobConfig(preset="paper", methods=("datm",)), [])
    assert not plain.per_ipc and "per_ipc" not in plain.to_dict()


def _show(capsys, *args):
    rc = main(["config", "show", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_config_show_json_round_trips(capsys):
    rc, out, _ = _show(capsys, "--method", "datm", "--dataset", "cifar100", "--ipc", "10", "--noise", "natural:noisy",
                       "--preset", "paper", "--set", "datm.iterations=3", "--set", "protocol=own", "--json")
    assert rc == 0
    desc = json.loads(out)
    expected = method_config("datm", "paper", {"iterations": 3}, cell=StudyCell.of("cifar100", 10, "natural:noisy"))
    assert apply_overrides(METHODS["datm"].config(), desc["method"]) == expected
    for section in ("method", "experts", "train", "evaluation"):
        assert set(desc["sources"][section]) == set(desc[section])
    assert desc["sources"]["method"]["iterations"] == "--set"
    assert desc["sources"]["method"]["lr_img"].endswith("DATM+ours/configs/CIFAR-100/ConvIN/annot/IPC10_noisy100.yaml")
    assert desc["experts"]["epochs"] == 100 and desc["experts"]["sam_rho"] == 0.01
    assert desc["evaluation"]["epochs"] == 1000 and desc["evaluation"]["batch_size"] == 128  # DATM evaluation.py
    assert desc["sources"]["evaluation"]["epochs"].startswith("study: ")
    again = describe_cell(JobConfig(dataset="cifar100", noise="natural:noisy", preset="paper"), "datm", 10,
                          ["datm.iterations=3", "protocol=own"])
    assert json.loads(json.dumps(again, default=str)) == desc


def test_config_show_names_evaluation_differences(capsys):
    rc, out, _ = _show(capsys, "--method", "dance", "--dataset", "cifar10", "--ipc", "10", "--noise", "symmetric:0.4",
                       "--preset", "paper", "--set", "protocol=own", "--json")
    desc = json.loads(out)
    assert desc["evaluation"]["epochs"] == 1500 and desc["evaluation"]["batch_size"] == 64  # arg_condense.py
    assert (desc["evaluation"]["cutmix_prob"], desc["evaluation"]["cutmix_beta"]) == (0.5, 1.0)  # mix_p, beta
    # lr x0.2 at 2/3 and 5/6 (train.py's MultiStepLR): applied, and sourced to the study's file
    assert desc["evaluation"]["schedule"] == "multistep" and not any("schedule" in n for n in desc["notes"])
    assert "DANCE+ours/train.py (MultiStepLR" in desc["sources"]["evaluation"]["schedule"]


@pytest.mark.parametrize("args,match", [
    (["--method", "dmx", "--dataset", "cifar10", "--ipc", "1", "--noise", "symmetric:0.4"], "unknown method"),
    (["--method", "dm", "--dataset", "cifarx", "--ipc", "1", "--noise", "symmetric:0.4"], "unknown dataset"),
    (["--method", "dm", "--dataset", "cifar10", "--ipc", "0", "--noise", "symmetric:0.4"], "--ipc"),
    (["--method", "dm", "--dataset", "cifar10", "--ipc", "1", "--noise", "foo:0.4"], "unknown noise kind"),
    (["--method", "dm", "--dataset", "cifar10", "--ipc", "1", "--noise", "symmetric:0.4", "--set", "dm.bogus=1"], "bogus"),
])
def test_config_show_bad_input_is_one_line_exit_2(capsys, args, match):
    rc, out, err = _show(capsys, *args)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and match in err


def test_tables_refuse_unknown_columns_and_bad_values(tmp_path):
    from ddlnl.train import TrainConfig

    configs = {n: m.config for n, m in METHODS.items()}
    for table, bad in (("dm.csv", ("iterations", "iteratons")), ("rcig.csv", ("true", "maybe")),
                       ("eval.csv", ("epochs", "epoch_eval_train"))):
        root = tmp_path / table
        shutil.copytree(study.study_dir(), root)
        text = (root / table).read_text()
        (root / table).write_text(text.replace(bad[0], bad[1], 1))
        with pytest.raises(ConfigError):
            study.check_tables(configs, TrainConfig, root=str(root))
    study.check_tables(configs, TrainConfig)  # the committed tables pass


@pytest.mark.parametrize("dataset,depth", [("tiny-imagenet", 4), ("cifar10", 3), ("cifar100", 3)])
def test_paper_preset_evaluates_and_trains_baselines_on_the_study_network(dataset, depth):
    # Hand-typed facts: DATM+ours/configs/TinyImageNet/ConvIN/*.yaml say `model: ConvNetD4` and
    # DATM_tesla.py evaluates on args.model; CIFAR keeps cfg.py's ConvNet (depth 3).
    job = JobConfig(dataset=dataset, noise="symmetric:0.4", methods=("dm", "datm", "dance", "rcig"), ipcs=(10,),
                    preset="paper")
    resolved = resolve_job(job, [])
    assert resolved.train.depth == depth and resolved.baseline.depth == depth
    assert all(resolved.methods[m].depth == depth for m in ("dm", "datm", "dance", "rcig"))
    own = describe_cell(job, "datm", 10, ["eval_recipe=own"])
    assert own["evaluation"]["depth"] == depth and not any("depth" in n for n in own["notes"])
    assert own["sources"]["train"]["depth"].startswith("study: Kciiiman/DD_LNL@d59a5a5 DATM+ours/")
    # --set wins over the study; the cpu preset keeps ddlnl's depth 3
    assert resolve_job(job, ["train.depth=2"]).train.depth == 2  # (a larger depth would be fitted to 32x32)
    assert resolve_job(job, ["baseline.depth=2"]).baseline.depth == 2
    cpu = resolve_job(JobConfig(dataset=dataset, noise="symmetric:0.4", methods=("dm",), ipcs=(10,), preset="cpu"), [])
    assert cpu.train.depth == 3 and cpu.baseline.depth == 3


@pytest.mark.parametrize("old,new", [("tiny-imagenet,*,*,4", "tiny-imagenet,10,*,4"),
                                     ("dataset,ipc,noise,depth", "dataset,ipc,noise,deepth"),
                                     ("tiny-imagenet,*,*,4", "tiny-imagenet,*,*,four")])
def test_network_table_refuses_a_per_ipc_row_an_unknown_field_and_a_bad_value(tmp_path, old, new):
    from ddlnl.train import TrainConfig

    root = tmp_path / "study"
    shutil.copytree(study.study_dir(), root)
    text = (root / "network.csv").read_text()
    assert old in text
    (root / "network.csv").write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match="network.csv"):
        study.check_tables({n: m.config for n, m in METHODS.items()}, TrainConfig, root=str(root))


def test_every_datm_config_file_of_the_study_has_one_row():
    # 124 config files under DATM+ours/configs (git ls-tree of Kciiiman/DD_LNL@d59a5a5).
    rows = study.load_tables()["datm"]
    assert len(rows) == 124 and len({r.source for r in rows}) == 124
    assert len({(r.dataset, r.ipc, r.noise) for r in rows}) == 124


# ---------------------------------------------------------------------------------------------
# The dry-run memory and time plan (ddlnl.plan).

def test_net_stats_match_a_hand_count():
    from ddlnl.plan import net_stats

    # ConvNet depth 1, width 4, no norm, on 1 x 8 x 8, 3 classes: conv 4x8x8 -> relu -> pool 4x4x4 -> linear 3.
    s = net_stats({"depth": 1, "width": 4, "norm": "none"}, 1, (8, 8), 3)
    assert s.params == (9 * 1 * 4 + 4) + (4 * 4 * 4 * 3 + 3)
    assert s.activations == 64 + 256 + 256 + 64 + 3  # input, conv, relu, pool, logits
    assert s.flops == 2 * 9 * 1 * 256 + 2 * 64 * 3
    assert s.max_layer == 256


def test_step_time_is_the_fastest_timed_step_per_image(monkeypatch):
    import torch

    from ddlnl import plan

    # A fake clock: the timed steps last 5, 1 and 3 "seconds" (a loaded machine only lengthens a
    # step, so the 1 is its cost); per image = 1 / 32 (batch 32). A mean would give 3 / 32.
    ticks = iter([0.0, 5.0, 10.0, 11.0, 20.0, 23.0])
    monkeypatch.setattr(plan, "_STEP_CACHE", {})
    value = plan.seconds_per_image_step({"depth": 1, "width": 2, "norm": "none"}, 1, (8, 8), 3,
                                        torch.device("cpu"), reps=3, clock=lambda: next(ticks))
    assert value == 1.0 / 32


def test_dry_run_says_when_a_busy_cpu_inflates_the_time_plan():
    import torch

    from ddlnl.cli.commands import busy_machine_note

    cpu = torch.device("cpu")
    note = busy_machine_note(cpu, load=4.2, cores=2)
    assert note.startswith("note: this machine is busy (load 4.2 on 2 cores)") and "inflated" in note
    assert busy_machine_note(cpu, load=2.0, cores=2) is None  # not busier than its cores
    assert busy_machine_note(torch.device("meta"), load=9.0, cores=2) is None  # only a CPU plan is measured on the CPU


def test_dm_plan_grows_with_the_real_batch():
    from ddlnl.plan import method_plan

    def peak(batch_real, num_classes=10):
        cfg = method_config("dm", overrides={"batch_real": batch_real, "width": 16})
        parts, steps, _, _ = method_plan("dm", cfg, ipc=1, num_classes=num_classes, n_train=1000, channels=1,
                                         image_size=(28, 28))
        fixed = ("runtime", "training images", "synthetic set (+ optimizer state)")
        return sum(v for k, v in parts.items() if k not in fixed), steps

    (small, s1), (large, s2) = peak(64), peak(256)
    assert large > 3 * small * 0.9 and s2 > s1
    # one class at a time (methods/dm.py): 10 times the classes, (almost) the same batch memory
    many, s3 = peak(64, num_classes=100)
    assert many < 1.05 * small and s3 > 9 * s1  # (the classifier has K outputs)


def test_dry_run_flags_cells_over_a_small_memory_budget(tmp_path, capsys):
    import torch

    from ddlnl.sweep import load_grid, plan_grid

    grid = load_grid("configs/grids/tiny-digits.yaml")
    # 102 MiB (the runtime's ~100 MiB + the cell's own): the full-data baselines (all 1257 digits,
    # batch 256) do not fit, the 1-2 IPC cells do.
    estimates, budget = plan_grid(grid, tmp_path, device=torch.device("cpu"), budget=102 * 2 ** 20)
    assert budget == 102 * 2 ** 20 and len(estimates) == 10
    assert [e.status.cell.method for e in estimates if e.fits is False] == ["baseline", "baseline"]
    tight, _ = plan_grid(grid, tmp_path, device=torch.device("cpu"), budget=2 ** 16)
    assert all(e.fits is False for e in tight) and all(e.plan.seconds > 0 for e in tight)
    assert main(["sweep", "configs/grids/tiny-digits.yaml", "--root", str(tmp_path), "--dry-run",
                 "--memory-gb", "0.1"]) == 0
    out = capsys.readouterr().out
    assert out.count("DOES NOT FIT") == 2 and "2 cell(s) will not fit" in out
    assert main(["sweep", "configs/grids/tiny-digits.yaml", "--root", str(tmp_path), "--dry-run",
                 "--memory-gb", "-1"]) == 2
