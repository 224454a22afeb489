"""The report: figures and a table from the result records of a sweep root or a run directory,
and the machine line of benchmark results."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .figures import CLAMP_LIMIT, _plt, _save, curves_figure, display_pixels, image_grid_png  # noqa: F401 (re-exported)
from .formatting import fmt_acc, fmt_delta, markdown_table  # noqa: F401 (re-exported)

__all__ = ["CLAMP_LIMIT", "display_pixels", "image_grid_png", "curves_figure", "fmt_acc", "fmt_delta", "markdown_table",
           "machine_summary", "write_result", "accuracy_figure", "accuracy_by_method_figure", "write_report",
           "baseline_curves_figure", "write_set_grids", "write_table", "read_report_table"]


def machine_summary() -> str:
    """One line describing this machine: CPU model, cores, memory, torch version, GPU if any."""
    import os
    import platform

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    try:  # timings mean little without knowing what else ran: say so in every result
        load = ", load average (1/5/15 min) " + "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        load = ""
    return (f"{cpu}, {os.cpu_count()} cores{mem}{gpu}; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}{load}")


def kept_section(path: str | Path, heading: str) -> str:
    """The hand-written ``## <heading>`` section at the end of a committed result file (kept by
    every rewrite of its tables), or "" when the file or the section does not exist."""
    path = Path(path)
    if not path.exists():
        return ""
    text = path.read_text()
    at = text.find(f"\n## {heading}")
    return text[at:].strip("\n") if at >= 0 else ""


def write_result(path: str | Path, title: str, body: str, notes: str = "") -> Path:
    """Write a benchmark result as markdown with the machine and date stated."""
    import datetime

    from .utils import atomic_write_text

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"# {title}\n\nMachine: {machine_summary()}  \nRun: {stamp}\n\n{body}\n"
    if notes:
        text += f"\n{notes}\n"
    atomic_write_text(path, text)
    return Path(path)


def _aggregate(records: Sequence[dict]) -> dict[tuple, dict]:
    """(dataset, noise, method, ipc) -> mean/std over every run of every seed, and ``thirds``: the
    head/middle/tail accuracy over the runs that kept per-class accuracy
    (:func:`ddlnl.longtail.thirds_text`; ``-`` when none did)."""
    from .longtail import thirds_text

    groups: dict[tuple, list[float]] = {}
    per_class: dict[tuple, list] = {}
    for r in records:
        c = r["cell"]
        k = (c["dataset"], c["noise"], c["method"], c["ipc"])
        groups.setdefault(k, []).extend(r.get("accs", []))
        per_class.setdefault(k, []).extend(r.get("per_class") or [])
    return {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v),
                "thirds": thirds_text({"per_class": per_class[k]})} for k, v in groups.items() if v}


def _noise_order(noise: str) -> tuple:
    kind, _, rest = noise.partition(":")
    try:
        return (kind, float(rest))
    except ValueError:
        return (kind, 0.0, rest)


def _keys(agg: dict[tuple, dict]) -> tuple[list[str], list[str], list[str], list[int]]:
    datasets = sorted({k[0] for k in agg})
    methods = sorted({k[2] for k in agg if not k[2].startswith("baseline")}, key=lambda m: (m != "random", m))
    noises = sorted({k[1] for k in agg}, key=_noise_order)
    ipcs = sorted({k[3] for k in agg if k[3]})
    return datasets, methods, noises, ipcs


def _ipc_axis(ax, ipcs: Sequence[int]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(ipcs, [str(v) for v in ipcs])
    ax.minorticks_off()
    ax.set_xlabel("images per class")
    ax.grid(alpha=0.3)


def _series(agg: dict[tuple, dict], ds: str, noise: str, method: str, ipcs: Sequence[int]) -> tuple[list, list]:
    ys = [100 * agg[(ds, noise, method, i)]["mean"] if (ds, noise, method, i) in agg else np.nan for i in ipcs]
    es = [100 * agg[(ds, noise, method, i)]["std"] if (ds, noise, method, i) in agg else np.nan for i in ipcs]
    return ys, es


def accuracy_figure(agg: dict[tuple, dict], path: str | Path) -> Path:
    """Accuracy vs IPC as the study draws it: one panel per dataset and noise setting (a row per
    dataset and noise kind, a column per rate), the distillers as solid lines, random real subsets
    as a grey reference line, the converged full-noisy baseline dashed and the early-stopped one
    dotted. ``agg``: ``(dataset, noise, method, ipc) -> {"mean", "std"}`` (baselines: method
    ``baseline`` / ``baseline_early_stop``, ipc 0). A missing cell is a gap, never a zero."""
    plt = _plt()
    datasets, methods, noises, ipcs = _keys(agg)
    distillers = [m for m in methods if m != "random"]
    kinds = sorted({n.partition(":")[0] for n in noises})
    rows = [(ds, kind) for ds in datasets for kind in kinds
            if any(k[0] == ds and k[1].partition(":")[0] == kind for k in agg)]
    per_row = {r: [n for n in noises if n.partition(":")[0] == r[1] and any(k[0] == r[0] and k[1] == n for k in agg)]
               for r in rows}
    ncols = max(1, max(len(v) for v in per_row.values()) if per_row else 1)
    fig, axes = plt.subplots(len(rows) or 1, ncols, figsize=(3.6 * ncols, 3.2 * max(1, len(rows)) + 0.7),
                             squeeze=False, sharey="row")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {m: colours[i % len(colours)] for i, m in enumerate(distillers)}
    for r, (ds, kind) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            if c >= len(per_row[(ds, kind)]):
                fig.delaxes(ax)
                continue
            noise = per_row[(ds, kind)][c]
            for m in distillers:
                ys, es = _series(agg, ds, noise, m, ipcs)
                if not np.all(np.isnan(ys)):
                    ax.errorbar(ipcs, ys, yerr=es, marker="o", color=colour[m], capsize=2, label=m, linewidth=1.5)
            ys, es = _series(agg, ds, noise, "random", ipcs)
            if not np.all(np.isnan(ys)):
                ax.errorbar(ipcs, ys, yerr=es, marker="x", color="0.55", capsize=2, linewidth=1.2,
                            label="random real subset")
            for name, style, label in (("baseline", "--", "full noisy set, converged"),
                                       ("baseline_early_stop", ":", "full noisy set, early stop")):
                base = agg.get((ds, noise, name, 0))
                if base:
                    ax.axhline(100 * base["mean"], color="black", linestyle=style, linewidth=1.2, label=label)
            _ipc_axis(ax, ipcs)
            ax.set_title(f"{ds}, {noise.replace(':', ' ')}", fontsize=10)
            if c == 0:
                ax.set_ylabel("clean test accuracy (%)")
    found: dict[str, Any] = {}
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            found.setdefault(lab, h)
    order = [*distillers, "random real subset", "full noisy set, converged", "full noisy set, early stop"]
    handles = {lab: found[lab] for lab in order if lab in found}
    if handles:
        fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=min(5, len(handles)),
                   fontsize=8)
    fig.tight_layout(rect=(0, 0.7 / fig.get_figheight() if handles else 0, 1, 1))
    return _save(fig, Path(path))


def accuracy_by_method_figure(agg: dict[tuple, dict], path: str | Path) -> Path:
    """The per-method view: one panel per dataset and method, one line per noise setting, the
    converged baseline of the same setting dashed in the same colour and the early-stopped one
    dotted (panels wrap at 4 per row; a dataset's panels share the y axis)."""
    plt = _plt()
    datasets, methods, noises, ipcs = _keys(agg)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ncols = max(1, min(4, len(methods)))
    rows_per_ds = -(-max(1, len(methods)) // ncols)
    fig, grid_axes = plt.subplots(len(datasets) * rows_per_ds, ncols,
                                  figsize=(4.0 * ncols, 3.4 * len(datasets) * rows_per_ds), squeeze=False)
    axes = []
    for i in range(len(datasets)):
        panels = [grid_axes[i * rows_per_ds + j // ncols][j % ncols] for j in range(rows_per_ds * ncols)]
        for ax in panels[len(methods):]:
            fig.delaxes(ax)
        panels = panels[:max(1, len(methods))]
        for ax in panels[1:]:
            ax.sharey(panels[0])
        axes.append(panels)
    early_drawn = False
    for i, ds in enumerate(datasets):
        for j, m in enumerate(methods):
            ax = axes[i][j]
            for k, noise in enumerate(noises):
                col = colours[k % len(colours)]
                ys, es = _series(agg, ds, noise, m, ipcs)
                if np.all(np.isnan(ys)):
                    continue  # no results for this noise here: no baselines either (less clutter)
                ax.errorbar(ipcs, ys, yerr=es, marker="o", color=col, capsize=2, label=noise)
                base = agg.get((ds, noise, "baseline", 0))
                if base:
                    ax.axhline(100 * base["mean"], color=col, linestyle="--", linewidth=1)
                early = agg.get((ds, noise, "baseline_early_stop", 0))
                if early:
                    ax.axhline(100 * early["mean"], color=col, linestyle=":", linewidth=1)
                    early_drawn = True
            _ipc_axis(ax, ipcs)
            ax.set_title(f"{ds}: {m}", fontsize=10)
        axes[i][0].set_ylabel("clean test accuracy (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for row in axes:
        for ax in row:
            h, lab = ax.get_legend_handles_labels()
            if len(h) > len(handles):
                handles, labels = h, lab
    if handles:
        title = "noise (dashed: full noisy set, converged" + ("; dotted: early stop)" if early_drawn else ")")
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8, title=title,
                   title_fontsize=8)
    fig.tight_layout(rect=(0, (0.12 / (len(datasets) * rows_per_ds)) if handles else 0, 1, 1))
    return _save(fig, Path(path))


def write_report(root: str | Path, out: str | Path | None = None, grid=None) -> list[Path]:
    """The study's figures and a table from the result records of a sweep root or a run directory.

    Writes into ``out`` (default ``ROOT/report``): ``accuracy_vs_ipc.png`` (:func:`accuracy_figure`:
    a panel per dataset and noise setting, methods as lines, both baselines), the per-method view
    ``accuracy_vs_ipc_by_method.png`` (:func:`accuracy_by_method_figure`), ``training_curves.png``
    (:func:`curves_figure`, from the baselines' recorded curves), ``table.md`` (accuracy per IPC
    beside both baselines, :func:`write_table`) and ``grids/*.png`` (:func:`write_set_grids`).
    """
    from .results import load_records

    root = Path(root)
    out = Path(out) if out is not None else root / "report"
    records = load_records(root, grid)
    if not records:
        from .errors import UserError

        raise UserError(f"{root} has no finished records yet: run `ddlnl sweep` (or `ddlnl run`) first")
    agg = _aggregate(records)
    written = [accuracy_figure(agg, out / "accuracy_vs_ipc.png"),
               accuracy_by_method_figure(agg, out / "accuracy_vs_ipc_by_method.png")]
    curves_path = baseline_curves_figure(records, out / "training_curves.png")
    if curves_path is not None:
        written.append(curves_path)
    written.append(write_table(agg, out / "table.md"))
    return written + write_set_grids(records, root, out / "grids", grid)


def baseline_curves_figure(records: Sequence[dict], path: Path) -> Path | None:
    """:func:`curves_figure` of the baselines' recorded training curves, a panel per dataset and
    noise setting (in noise order); None when no baseline recorded a curve."""
    curves: dict[str, dict[str, list]] = {}
    for r in records:
        c = r["cell"]
        if c["method"].startswith("baseline") and r.get("histories"):
            curves.setdefault(f"{c['dataset']}, {c['noise'].replace(':', ' ')}", {}).setdefault(
                c["method"], []).extend(r["histories"])
    ordered = sorted(curves.items(), key=lambda kv: _noise_order(kv[0].split(", ")[-1].replace(" ", ":")))
    return curves_figure(dict(ordered), path)


def write_set_grids(records: Sequence[dict], root: Path, folder: Path, grid=None) -> list[Path]:
    """The synthetic images of each dataset, method and noise, one row per class, at its largest
    IPC <= 10 (:func:`set_grid_png`); a record whose set is not under ``root`` is skipped."""
    from .synthetic import load_synthetic

    best: dict[tuple, dict] = {}
    for r in records:
        c = r["cell"]
        if c["method"].startswith("baseline") or not c["ipc"] or c["ipc"] > 10:
            continue
        k = (c["dataset"], c["method"], c["noise"])
        if k not in best or c["ipc"] > best[k]["cell"]["ipc"]:
            best[k] = r
    written = []
    for (ds, m, noise), r in sorted(best.items()):
        syn_rel = r.get("artifacts", {}).get("synthetic")
        if not syn_rel or not (root / syn_rel).exists():
            continue
        syn = load_synthetic(root / syn_rel)
        train_images = _training_images(root, r, grid) if syn.meta.get("image_space") == "zca" else None
        written.append(set_grid_png(syn, folder / grid_name(ds, m, noise, r["cell"]["ipc"]),
                                    f"{m}, IPC {r['cell']['ipc']}, {ds}, {noise}", train_images))
    return written


def grid_name(dataset: str, method: str, noise: str, ipc: int) -> str:
    """File name of a set's image grid in a report's ``grids/``."""
    return f"{dataset}-{method}-{noise.replace(':', '-')}-ipc{ipc}.png"


def set_grid_png(syn, path: str | Path, title: str, train_images: torch.Tensor | None = None) -> Path:
    """:func:`image_grid_png` of a synthetic set: its classes, labels and normalisation from its
    ``meta``; a ZCA-space set un-whitened with ``train_images`` (:func:`ddlnl.synthetic.display_images`)."""
    from .synthetic import display_images

    classes = syn.meta.get("classes") or [str(c) for c in range(syn.num_classes)]
    shown, space_note = display_images(syn, train_images)
    return image_grid_png(shown, syn.hard_labels, classes, syn.meta.get("mean", [0.0]), syn.meta.get("std", [1.0]),
                          path, title=title, soft=syn.labels.ndim == 2, space_note=space_note)


def _training_images(root: Path, record: dict, grid=None) -> torch.Tensor | None:
    """The training images of ``record``'s cell (to un-whiten a ZCA-space set), loaded through the
    grid saved in ``root`` (or ``grid``); None when the grid or the data is not at hand."""
    from .errors import UserError
    from .job import prepare_data
    from .sweep import Cell, cell_job, grids_of_root

    grids = (grid if isinstance(grid, (list, tuple)) else [grid]) if grid is not None else (grids_of_root(root) or [])
    g = next((g for g in grids if g.name == record.get("grid")), None)
    if g is None:
        return None
    try:
        return prepare_data(cell_job(g, Cell(**record["cell"])).job).dataset.train.images
    except (UserError, OSError, KeyError, TypeError):
        return None


def _table_rows(agg: dict[tuple, dict], text) -> tuple[list[str], list[list]]:
    """The header and rows of a report table: a row per dataset, noise and method, a column per IPC
    and one per baseline; ``text(value)`` writes one aggregate, ``-`` where there is none."""
    datasets, methods, noises, ipcs = _keys(agg)
    header = ["dataset", "noise", "method", *[f"IPC {i}" for i in ipcs], "full noisy (converged)", "early stop"]
    rows = []
    for ds in datasets:
        for noise in noises:
            baselines = [agg.get((ds, noise, name, 0)) for name in ("baseline", "baseline_early_stop")]
            for m in methods:
                if not any((ds, noise, m, ipc) in agg for ipc in ipcs):
                    continue
                values = [agg.get((ds, noise, m, ipc)) for ipc in ipcs] + baselines
                rows.append([ds, noise, m, *[text(v) if v else "-" for v in values]])
    return header, rows


def write_table(agg: dict[tuple, dict], path: str | Path) -> Path:
    """``table.md`` of a report: accuracy per IPC beside both baselines, per dataset, noise, method;
    below it, where any record kept per-class accuracy, the same table of the class thirds'
    accuracy (head/middle/tail)."""
    from .utils import atomic_write_text

    header, rows = _table_rows(agg, lambda v: fmt_acc(v["mean"], v["std"]))
    table = ("Clean-test accuracy (%) at the end of training, mean ± std over all evaluation runs and seeds; "
             "'-' = no record.\n\n" + markdown_table(header, rows) + "\n")
    if any(v.get("thirds", "-") != "-" for v in agg.values()):
        header, rows = _table_rows(agg, lambda v: v.get("thirds", "-"))
        table += ("\nHead/middle/tail (%): mean clean-test accuracy of the class thirds (class 0 first) over the "
                  "runs that kept per-class accuracy; '-' = no record, or one written before it was kept.\n\n"
                  + markdown_table(header, rows) + "\n")
    atomic_write_text(path, table)
    return Path(path)


def read_report_table(path: str | Path) -> dict[tuple, dict]:
    """The aggregate behind a report's ``table.md`` (the inverse of :func:`write_table`), so that its
    figures can be redrawn from a committed table when the records are not at hand."""
    agg: dict[tuple, dict] = {}
    lines = []
    for line in Path(path).read_text().splitlines():  # the first table: accuracy (the thirds follow)
        if line.startswith("|"):
            if line.startswith("| "):
                lines.append(line)
        elif lines:
            break
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    ipcs = [int(h.split()[1]) for h in header if h.startswith("IPC ")]

    def parse(cell: str) -> dict | None:
        cell = cell.strip()
        if cell == "-":
            return None
        mean, _, std = cell.partition("±")
        return {"mean": float(mean) / 100, "std": float(std) / 100}

    for line in lines[1:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if set(cells[0]) <= {"-"}:
            continue
        ds, noise, method = cells[:3]
        for ipc, cell in zip(ipcs, cells[3:3 + len(ipcs)]):
            if (v := parse(cell)) is not None:
                agg[(ds, noise, method, ipc)] = v
        for name, cell in zip(("baseline", "baseline_early_stop"), cells[3 + len(ipcs):]):
            if (v := parse(cell)) is not None:
                agg[(ds, noise, name, 0)] = v
    return agg
