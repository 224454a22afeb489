"""The reference study's settings as data: ``configs/study/*.csv``, read, checked and looked up.

Cheng et al. (arXiv 2411.11924) ran DATM, DANCE and RCIG from their repository Kciiiman/DD_LNL
(commit ``d59a5a5``). Every hyperparameter of those runs is a row of a committed table, with the
file it came from (a path in that repository unless another repository is named):

==================  ============================================================================
``datm.csv``        one row per DATM config file (dataset, IPC, noise), ``DATM+ours/configs/``
``experts.csv``     the expert trajectories (``buffer_FTD.py`` and the study's scripts)
``dance.csv``       DANCE (``arguments/reproduce_*.py``, ``arg_*.py``, the study's scripts)
``rcig.csv``        RCIG (``configs_final/*.txt`` chosen per dataset and IPC as the scripts say)
``dm.csv``          DM (not run by the study: DM's own ``main_DM.py``)
``eval.csv``        each method's evaluation recipe (shown beside ddlnl's; see below)
``defaults.csv``    values a study file leaves to its code's defaults (``DATM+ours/utils/cfg.py``)
``network.csv``     the network per dataset that the study distils, evaluates and trains baselines on
                    (``TrainConfig`` fields; the paper preset's evaluation and baseline networks)
==================  ============================================================================

A row is keyed by ``dataset`` (a ddlnl dataset name), ``ipc`` and ``noise`` (a ddlnl noise spec:
``none``, ``symmetric:0.4``, ``asymmetric:0.4``, ``natural:aggre``, ``natural:noisy``, ...); ``*``
matches anything. The other columns are config field names of the method (``DATMConfig`` etc.;
``experts.csv`` too, since the expert fields live there) or, in ``eval.csv``, of ``TrainConfig``
plus the study-only columns in :data:`EVAL_STUDY_ONLY`. An empty cell means "not set by this
row's source". An unknown column, key or value is a :class:`~ddlnl.errors.ConfigError`.

Looking up a cell (:func:`resolve`):

1. Every row whose key matches the cell applies; a more specific row (fewer ``*``) overrides a
   less specific one; two rows of the same specificity that disagree are an error.
2. If no matching row is specific on every axis the table distinguishes for that dataset (the
   study has no row for this IPC or noise), the *nearest neighbour* row is added: the key of the
   same dataset that minimises, in this order, the distance ``|log ipc - log ipc'|``, the noise
   kind (same kind and natural variant 0, another kind of noise 1, noisy against clean 2) and
   ``|rate - rate'|``; ties go to the smaller IPC, then the first noise spec in sort order. The
   resolution names it.
3. Fields still unset take the method's study defaults (``defaults.csv``), if the dataset has rows.
4. A dataset with no rows at all (``digits``, ``fashion-mnist``) gets nothing from the study: the
   config keeps ddlnl's published defaults, and the resolution says so.

Study values ddlnl cannot run yet are in :data:`PENDING`: they are reported as deviations and not
applied (the config keeps ddlnl's value), so that ``--preset paper`` says what it does not do.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from .config import _coerce
from .errors import ConfigError
from .noise import parse_noise_spec

STUDY_DIR_ENV = "DDLNL_STUDY_DIR"
STUDY_REPO = "Kciiiman/DD_LNL@d59a5a5"
KEY_COLUMNS = ("dataset", "ipc", "noise")
METHOD_TABLES = {"datm": "datm.csv", "dance": "dance.csv", "rcig": "rcig.csv", "dm": "dm.csv"}
# The datasets the study ran (ddlnl registry names); a ``*`` row applies to these only.
STUDY_DATASETS = {"cifar10", "cifar100", "tiny-imagenet"}
# eval.csv columns in the study's own units that ddlnl's TrainConfig does not hold as such; they
# are shown beside ddlnl's evaluation config, never applied.
EVAL_STUDY_ONLY = {"steps", "warmup_steps", "cutmix_prob", "cutmix_beta", "flip_copies"}

# (method, field) -> (why ddlnl does not apply the study's value yet, which values that concerns).
# Remove an entry when ddlnl supports the value: the paper preset then applies it.
# (Empty since RCIG's softplus_temp 0, plain ReLU on Tiny-ImageNet, became ``softplus_beta=0``.)
PENDING: dict[tuple[str, str], tuple[str, Callable[[Any], bool]]] = {}


def study_dir() -> Path:
    """Where the tables are: ``$DDLNL_STUDY_DIR``, else ``configs/study`` of this checkout."""
    env = os.environ.get(STUDY_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "configs" / "study"


@dataclass(frozen=True)
class StudyCell:
    """One cell of the study: dataset, images per class and noise spec (canonical text)."""

    dataset: str
    ipc: int
    noise: str

    @classmethod
    def of(cls, dataset: str, ipc: int, noise: str) -> "StudyCell":
        return cls(dataset, int(ipc), canonical_noise(noise))


def canonical_noise(text: str) -> str:
    """``"sym:0.40"`` -> ``"symmetric:0.4"``; ``"natural:aggre:file.pt"`` -> ``"natural:aggre"``."""
    spec = parse_noise_spec(text)
    if spec.kind == "none":
        return "none"
    if spec.kind == "natural":
        return f"natural:{spec.variant}"
    if spec.kind == "file":
        return f"file:{spec.path}"
    return f"{spec.kind}:{spec.rate:g}"


@dataclass(frozen=True)
class Row:
    """One table row: its key (``None`` = ``*``), its non-empty values (text) and its source."""

    table: str
    line: int
    dataset: str | None
    ipc: int | None
    noise: str | None
    values: dict[str, str]
    source: str
    method: str | None = None

    @property
    def specificity(self) -> int:
        return sum(v is not None for v in (self.dataset, self.ipc, self.noise))

    def matches(self, cell: StudyCell) -> bool:
        return ((self.dataset is None or self.dataset == cell.dataset) and (self.ipc is None or self.ipc == cell.ipc)
                and (self.noise is None or self.noise == cell.noise))

    def where(self) -> str:
        return f"configs/study/{self.table}:{self.line}"


@dataclass
class Resolution:
    """A cell's study values for one config: typed values, where each came from, and notes.

    ``values`` holds only what is applied; ``deviations`` maps a field to the study value that is
    not applied (:data:`PENDING`) and why.
    """

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    deviations: dict[str, tuple[Any, str]] = field(default_factory=dict)


def _read(path: Path, table: str, with_method: bool) -> list[Row]:
    if not path.is_file():
        raise ConfigError(f"study table {path} not found: set ${STUDY_DIR_ENV} to the configs/study folder")
    rows = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        need = (("method",) if with_method else ()) + KEY_COLUMNS + ("source",)
        missing = [c for c in need if c not in cols]
        if missing:
            raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}")
        for line, raw in enumerate(reader, start=2):
            where = f"{path.name}:{line}"
            if None in raw:
                raise ConfigError(f"{where}: more cells than columns")
            ds, ipc, noise = (raw[k].strip() for k in KEY_COLUMNS)
            if ds != "*" and ds not in STUDY_DATASETS:
                raise ConfigError(f"{where}: unknown dataset {ds!r}")
            try:
                ipc_v = None if ipc == "*" else int(ipc)
            except ValueError:
                raise ConfigError(f"{where}: ipc {ipc!r} is not an integer or *") from None
            try:
                noise_v = None if noise == "*" else canonical_noise(noise)
            except Exception as exc:  # a UserError naming the spec
                raise ConfigError(f"{where}: {exc}") from None
            if not raw["source"].strip():
                raise ConfigError(f"{where}: every row names its source file")
            values = {k: v.strip() for k, v in raw.items()
                      if k not in need and v is not None and v.strip() != ""}
            rows.append(Row(table, line, None if ds == "*" else ds, ipc_v, noise_v, values, raw["source"].strip(),
                            method=raw["method"].strip() if with_method else None))
    return rows


@lru_cache(maxsize=4)
def load_tables(root: str | None = None) -> dict[str, list[Row]]:
    """Every study table as rows, keyed ``"datm"``, ..., ``"experts"``, ``"eval"``, ``"defaults"``.

    Only the format is checked here; :func:`check_tables` checks the columns against the configs.
    """
    base = Path(root) if root else study_dir()
    tables = {m: _read(base / f, f, with_method=False) for m, f in METHOD_TABLES.items()}
    tables["experts"] = _read(base / "experts.csv", "experts.csv", with_method=True)
    tables["eval"] = _read(base / "eval.csv", "eval.csv", with_method=True)
    tables["network"] = _read(base / "network.csv", "network.csv", with_method=False)
    defaults = []
    path = base / "defaults.csv"
    if not path.is_file():
        raise ConfigError(f"study table {path} not found")
    with path.open(newline="") as fh:
        for line, raw in enumerate(csv.DictReader(fh), start=2):
            if not all(raw.get(k) for k in ("method", "field", "value", "source")):
                raise ConfigError(f"defaults.csv:{line}: needs method, field, value and source")
            defaults.append(Row("defaults.csv", line, None, None, None, {raw["field"]: raw["value"]},
                                raw["source"], method=raw["method"]))
    tables["defaults"] = defaults
    return tables


def _rows_for(method: str, tables: dict[str, list[Row]]) -> list[Row]:
    return list(tables.get(method, [])) + [r for r in tables["experts"] if r.method == method]


def _typed(cls: type, key: str, text: str, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    try:
        return _coerce(text, hints[key], key)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def check_tables(configs: dict[str, type], train_config: type, root: str | None = None) -> None:
    """Every column is a field of its config (or pending / study-only), every value parses.

    Args:
        configs: method name -> its config dataclass (``METHODS[name].config``).
        train_config: the evaluation config dataclass (``TrainConfig``).
    """
    tables = load_tables(root)
    for method, cls in configs.items():
        names = {f.name for f in dataclasses.fields(cls)}
        rows = _rows_for(method, tables) + [r for r in tables["defaults"] if r.method == method]
        for row in rows:
            for key, text in row.values.items():
                if key not in names:
                    raise ConfigError(f"{row.where()}: {key!r} is not a {cls.__name__} field")
                _typed(cls, key, text, row.where())
    known = set(configs)
    names = {f.name for f in dataclasses.fields(train_config)} | EVAL_STUDY_ONLY
    for row in tables["eval"] + tables["experts"] + tables["defaults"]:
        if row.method not in known:
            raise ConfigError(f"{row.where()}: unknown method {row.method!r}")
    for row in tables["eval"]:
        for key in row.values:
            if key not in names:
                raise ConfigError(f"{row.where()}: {key!r} is not a {train_config.__name__} field")
    for row in tables["network"]:
        if row.ipc is not None or row.noise is not None:
            raise ConfigError(f"{row.where()}: a network row is per dataset (ipc and noise *)")
        for key, text in row.values.items():
            if key not in names - EVAL_STUDY_ONLY:
                raise ConfigError(f"{row.where()}: {key!r} is not a {train_config.__name__} field")
            _typed(train_config, key, text, row.where())


def _noise_distance(a: str | None, b: str) -> tuple[int, float]:
    """(0 same kind and variant, 1 another kind of noise, 2 noisy vs clean; |rate - rate'|)."""
    if a is None:
        return 0, 0.0
    ka, _, ra = a.partition(":")
    kb, _, rb = b.partition(":")
    kind = 0 if (ka, ra if ka == "natural" else "") == (kb, rb if kb == "natural" else "") else (
        2 if "none" in (ka, kb) else 1)
    try:
        return kind, abs(float(ra) - float(rb))
    except ValueError:  # natural variants, none: no rate to compare
        return kind, 0.0


def _select(rows: list[Row], cell: StudyCell) -> tuple[list[Row], str | None]:
    """The rows that apply to ``cell`` (steps 1-2 of the module doc) and the neighbour note."""
    if cell.dataset not in STUDY_DATASETS:
        return [], None
    mine = [r for r in rows if r.dataset in (None, cell.dataset)]
    used = [ax for ax in ("ipc", "noise") if any(getattr(r, ax) is not None for r in mine)]
    matched = [r for r in mine if r.matches(cell)]
    if any(all(getattr(r, ax) is not None for ax in used) for r in matched) or not used:
        return matched, None
    keyed = [r for r in mine if all(getattr(r, ax) is not None for ax in used)]
    if not keyed:
        return matched, None

    def distance(r: Row) -> tuple:
        dipc = abs(math.log(r.ipc) - math.log(cell.ipc)) if r.ipc is not None and cell.ipc > 0 else 0.0
        kind, drate = _noise_distance(r.noise, cell.noise)
        return (round(dipc, 9), kind, round(drate, 9), r.ipc or 0, r.noise or "")

    best = min(keyed, key=distance)
    near = [r for r in keyed if (r.dataset, r.ipc, r.noise) == (best.dataset, best.ipc, best.noise)]
    label = ", ".join(f"{ax} {getattr(best, ax)}" for ax in used)
    note = (f"the study has no row for {cell.dataset} IPC {cell.ipc} {cell.noise}; "
            f"nearest neighbour: {label} ({', '.join(sorted({r.source.split(' ')[0] for r in near}))})")
    return matched + near, note


def resolve(method: str, cell: StudyCell, config: type, root: str | None = None) -> Resolution:
    """The study's values for ``method`` at ``cell`` as typed ``config`` fields, with sources."""
    tables = load_tables(root)
    rows = _rows_for(method, tables)
    res = Resolution()
    if method not in METHOD_TABLES:
        if dataclasses.fields(config):  # random has no hyperparameters: nothing to say
            res.notes.append(f"the study has no table for {method!r}: ddlnl's defaults")
        return res
    chosen, note = _select(rows, cell)
    if not chosen:
        res.notes.append(f"the study ran no {cell.dataset} experiments: {method} keeps ddlnl's published defaults")
        return res
    if note:
        res.notes.append(note)
    # Least specific first so more specific rows override; equal specificity must agree.
    chosen.sort(key=lambda r: r.specificity)
    raw: dict[str, tuple[str, Row]] = {}
    for row in chosen:
        for key, text in row.values.items():
            if key in raw and raw[key][1].specificity == row.specificity and raw[key][0] != text:
                raise ConfigError(f"{row.where()} and {raw[key][1].where()} disagree on {key} for {cell}")
            raw[key] = (text, row)
    for row in tables["defaults"]:
        if row.method == method:
            for key, text in row.values.items():
                raw.setdefault(key, (text, row))
    for key, (text, row) in sorted(raw.items()):
        value = _typed(config, key, text, row.where())
        source = f"{STUDY_REPO} {row.source}" if not row.source.startswith("VICO-UoE") else row.source
        pending = PENDING.get((method, key))
        if pending is not None and pending[1](value):
            res.deviations[key] = (value, f"{pending[0]} (study: {key}={text}, {source})")
            continue
        res.values[key] = value
        res.sources[key] = f"study: {source}"
    return res


def network_facts(dataset: str, train_config: type, root: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The study's network on ``dataset`` (``network.csv``) as typed ``train_config`` fields, and
    their sources; empty for a dataset the study did not use. The paper preset evaluates every set
    and trains the baselines on it, as the study does (e.g. ConvNet-4 on Tiny-ImageNet)."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for row in load_tables(root)["network"]:
        if row.dataset == dataset:
            for key, text in row.values.items():
                values[key] = _typed(train_config, key, text, row.where())
                sources[key] = f"study: {STUDY_REPO} {row.source}"
    return values, sources


def eval_facts(method: str, cell: StudyCell, root: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """The study's evaluation recipe for ``method`` at ``cell`` (``eval.csv``, as text) and sources."""
    rows = [r for r in load_tables(root)["eval"] if r.method == method]
    chosen = sorted((r for r in rows if r.matches(cell)), key=lambda r: r.specificity)
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for row in chosen:
        for key, text in row.values.items():
            values[key] = text
            sources[key] = f"study: {STUDY_REPO} {row.source}" if not row.source.startswith("VICO-UoE") else f"study: {row.source}"
    return values, sources
