"""A grid of experiments (``datasets x noises x seeds x (baselines + methods x ipcs)``): the
:class:`Grid` value, its YAML form checked key by key, and the grids saved under a sweep root."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cells import BASELINE_CELLS
from ..config import load_yaml
from ..errors import ConfigError, UserError
from ..methods import METHODS, get_method
from ..noise import parse_noise_spec


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset axis value, with where its files are and its natural-noise file if any."""

    name: str
    data_root: str | None = None
    noise_file: str | None = None


@dataclass(frozen=True)
class Grid:
    """A grid of experiments (see the module docstring for the YAML form)."""

    name: str
    datasets: tuple[DatasetEntry, ...]
    noises: tuple[str, ...]
    methods: tuple[str, ...]
    ipcs: tuple[int, ...]
    seeds: tuple[int, ...] = (0,)
    baselines: tuple[str, ...] = ("converged", "early-stop")
    n_runs: int = 3
    baseline_runs: int = 0
    eval_recipe: str = "common"  # common | own (JobConfig.eval_recipe); YAML key eval_recipe (or protocol)
    preset: str = "auto"
    train_subset: int = 0
    imbalance: float = 1.0  # long-tailed training sets (JobConfig.imbalance); 1 = balanced
    overrides: tuple[str, ...] = ()
    method_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    # name -> (base method, its overrides): a variant is a cell method of its own (own records, own
    # line in reports) that runs its base method with extra overrides and the base's seeds.
    variants: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)

    def base_method(self, method: str) -> str:
        """The METHODS name a grid method (a method or a variant) runs."""
        return self.variants[method][0] if method in self.variants else method

    def check(self) -> None:
        if not self.datasets or not self.noises or not self.ipcs or not self.seeds:
            raise ConfigError(f"grid {self.name!r}: datasets, noises, ipcs and seeds must each list at least one value")
        if self.preset not in {"auto", "cpu", "paper"}:
            raise ConfigError(f"grid {self.name!r}: preset {self.preset!r}; use auto, cpu or paper")
        if self.eval_recipe not in {"common", "own"}:
            raise ConfigError(f"grid {self.name!r}: eval_recipe {self.eval_recipe!r}; use common or own")
        missing = [v for v in self.variants if v not in self.methods]
        if missing:
            raise ConfigError(f"grid {self.name!r}: variant(s) {', '.join(missing)} defined but not listed in methods; "
                              "list them in methods or drop them")
        for name, (base, _) in self.variants.items():
            if name in METHODS or name in BASELINE_CELLS.values():
                raise ConfigError(f"grid {self.name!r}: variant {name!r} has the name of a method; rename it "
                                  f"(e.g. {name}-variant)")
            if base in self.variants or base == "random":
                raise ConfigError(f"grid {self.name!r}: variant {name!r} must be based on a distiller, not {base!r}")
            get_method(base)
        for m in self.methods:
            get_method(self.base_method(m))
        for b in self.baselines:
            if b not in BASELINE_CELLS:
                raise ConfigError(f"grid {self.name!r}: baseline {b!r}; use {', '.join(BASELINE_CELLS)}")
        for n in self.noises:
            parse_noise_spec(n)
        unknown = set(self.method_overrides) - set(self.methods) - {"random"}
        if unknown:
            raise ConfigError(f"grid {self.name!r}: method_set names methods not in the grid: {', '.join(sorted(unknown))}")


GRID_KEYS = {"name", "datasets", "noises", "methods", "ipcs", "seeds", "baselines", "n_runs", "baseline_runs", "eval_recipe",
             "protocol",
             "preset", "train_subset", "imbalance", "set", "method_set", "resources", "variants"}


def _variants(raw: Any) -> dict[str, tuple[str, tuple[str, ...]]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("grid key 'variants' must map a name to {method: NAME, set: [key=value, ...]}")
    out = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict) or "method" not in spec or set(spec) - {"method", "set"}:
            raise ConfigError(f"variant {name!r}: expected {{method: NAME, set: [key=value, ...]}}, got {spec!r}")
        if not isinstance(spec["method"], str):
            raise ConfigError(f"variant {name!r}: method must be a method name, got {spec['method']!r}")
        out[check_name(name, "variants")] = (spec["method"], tuple(_overrides(spec.get("set"), f"variants.{name}.set")))
    return out


def _as_list(value: Any, key: str) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (str, int, float)):
        return [value]
    raise ConfigError(f"grid key {key!r}: expected a list, got {type(value).__name__}")


# What a grid name, a variant name or any other user-given part of a path may hold: it becomes a
# folder or file name under the sweep root, so "../x" or "a/b" must never reach the file system.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(value: Any, key: str) -> str:
    """A grid-given name that is used in file names: a non-empty string of letters, digits, ``.``,
    ``_`` and ``-`` that does not start with ``.`` or ``-`` (so it stays inside its folder)."""
    if not isinstance(value, str):
        raise ConfigError(f"grid key {key!r}: expected a name (a string), got {type(value).__name__} {value!r}")
    if not SAFE_NAME.fullmatch(value) or ".." in value:
        raise ConfigError(f"grid key {key!r}: {value!r} is not a plain name; use letters, digits, '.', '_' and '-' "
                          "(it names a folder under the sweep root)")
    return value


def _strings(value: Any, key: str, *, required: bool = True) -> list[str]:
    items = _as_list(value, key)
    if required and not items:
        raise ConfigError(f"grid key {key!r}: give at least one value (e.g. {key}: [...])")
    for v in items:
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"grid key {key!r}: expected names (strings), got {type(v).__name__} {v!r}")
    return [v.strip() for v in items]


def _ints(value: Any, key: str, *, minimum: int, required: bool = True) -> list[int]:
    items = _as_list(value, key)
    if required and not items:
        raise ConfigError(f"grid key {key!r}: give at least one value (e.g. {key}: [0])")
    out = []
    for v in items:
        # YAML reads 1.5 as a float and true as a bool; neither is an integer, however Python casts.
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"grid key {key!r}: expected integers, got {type(v).__name__} {v!r}")
        if v < minimum:
            raise ConfigError(f"grid key {key!r}: values must be >= {minimum}, got {v}")
        out.append(v)
    if len(set(out)) != len(out):
        raise ConfigError(f"grid key {key!r}: {out} repeats a value; list each once")
    return out


def _int(data: dict[str, Any], key: str, default: int, minimum: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"grid key {key!r}: expected an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ConfigError(f"grid key {key!r}: must be >= {minimum}, got {value}")
    return value


def _scalar_str(data: dict[str, Any], key: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"grid key {key!r}: expected a string, got {type(value).__name__} {value!r}")
    return value


def _unique(values: list[str], key: str) -> None:
    if len(set(values)) != len(values):
        raise ConfigError(f"grid key {key!r}: {values} repeats a value; list each once")


def grid_from_dict(data: dict[str, Any], default_name: str = "grid") -> Grid:
    """Build and check a :class:`Grid` from a parsed YAML mapping; unknown keys are refused by name,
    and every value by its type and range."""
    from ..data import DATASETS

    if not isinstance(data, dict):
        raise ConfigError(f"a grid is a mapping of key: value, got {type(data).__name__}")
    unknown = set(data) - GRID_KEYS
    if unknown:
        raise ConfigError(f"unknown grid key(s) {', '.join(sorted(map(str, unknown)))}; valid: {', '.join(sorted(GRID_KEYS))}")
    for key in ("datasets", "noises", "methods", "ipcs"):
        if key not in data:
            raise ConfigError(f"grid is missing {key!r} (e.g. {key}: [...])")
    raw = data["datasets"]
    entries = []
    if isinstance(raw, dict):
        for name, opts in raw.items():
            opts = {} if opts is None else opts
            if not isinstance(opts, dict):
                raise ConfigError(f"dataset {name!r}: expected {{data_root: PATH, noise_file: PATH}}, got {opts!r}")
            bad = set(opts) - {"data_root", "noise_file"}
            if bad:
                raise ConfigError(f"dataset {name!r}: unknown option(s) {', '.join(sorted(map(str, bad)))}; use data_root, noise_file")
            for k, v in opts.items():
                if v is not None and not isinstance(v, str):
                    raise ConfigError(f"dataset {name!r}: {k} must be a path (a string), got {v!r}")
            entries.append(DatasetEntry(check_name(name, "datasets"), opts.get("data_root"), opts.get("noise_file")))
    else:
        entries = [DatasetEntry(check_name(n, "datasets")) for n in _strings(raw, "datasets")]
    if not entries:
        raise ConfigError("grid key 'datasets': give at least one dataset")
    for e in entries:
        if e.name not in DATASETS:
            raise ConfigError(f"grid key 'datasets': unknown dataset {e.name!r}; use one of {', '.join(sorted(DATASETS))}")
    _unique([e.name for e in entries], "datasets")
    method_set = data.get("method_set") or {}
    if not isinstance(method_set, dict):
        raise ConfigError("grid key 'method_set' must map a method name to a list of key=value overrides")
    resources = data.get("resources") or {}
    if not isinstance(resources, dict):
        raise ConfigError("grid key 'resources' must be a mapping, e.g. {cpus: 2, gpus: 0, mem_gb: 16}")
    bad = set(resources) - RESOURCE_KEYS
    if bad:
        raise ConfigError(f"grid key 'resources': unknown {', '.join(sorted(map(str, bad)))}; use {', '.join(sorted(RESOURCE_KEYS))}")
    for k, v in resources.items():
        if k == "partition":
            if v is not None and not isinstance(v, str):
                raise ConfigError(f"grid key 'resources.partition': expected a name, got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (k != "mem_gb" and not float(v).is_integer()):
            raise ConfigError(f"grid key 'resources.{k}': expected a number >= 0{'' if k == 'mem_gb' else ' (an integer)'}, got {v!r}")
    noises = _strings(data["noises"], "noises")
    _unique(noises, "noises")
    methods = [m for m in _strings(data["methods"], "methods", required=False) if m != "random"]
    _unique(methods, "methods")
    baselines = _strings(data.get("baselines", ["converged", "early-stop"]), "baselines", required=False)
    _unique(baselines, "baselines")
    grid = Grid(
        name=check_name(data.get("name", default_name), "name"), datasets=tuple(entries),
        noises=tuple(noises), methods=tuple(methods),
        ipcs=tuple(_ints(data["ipcs"], "ipcs", minimum=1)), seeds=tuple(_ints(data.get("seeds", [0]), "seeds", minimum=0)),
        baselines=tuple(baselines),
        n_runs=_int(data, "n_runs", 3, 1), baseline_runs=_int(data, "baseline_runs", 0, 0),
        eval_recipe=_eval_recipe(data), preset=_scalar_str(data, "preset", "auto"),
        train_subset=_int(data, "train_subset", 0, 0), imbalance=_imbalance(data),
        overrides=tuple(_overrides(data.get("set"), "set")),
        method_overrides={check_name(k, "method_set"): tuple(_overrides(vs, f"method_set.{k}")) for k, vs in method_set.items()},
        resources=dict(resources), variants=_variants(data.get("variants")),
    )
    grid.check()
    return grid


def _imbalance(data: dict[str, Any]) -> float:
    """The grid's ``imbalance`` (a number >= 1; 1, the default, is balanced)."""
    from ..job import check_imbalance

    return check_imbalance(data.get("imbalance", 1.0), "grid key 'imbalance'")


RESOURCE_KEYS = {"cpus", "gpus", "mem_gb", "timeout_min", "partition"}


def _eval_recipe(data: dict[str, Any]) -> str:
    """The grid's ``eval_recipe``; ``protocol``, its name in grids written before, is still read."""
    if "eval_recipe" in data and "protocol" in data:
        raise ConfigError("grid keys 'eval_recipe' and 'protocol' name the same setting (protocol is its older "
                          "name): keep eval_recipe only")
    return _scalar_str(data, "eval_recipe" if "eval_recipe" in data else "protocol", "common")


def _overrides(value: Any, key: str) -> list[str]:
    items = _as_list(value, key)
    for v in items:
        if not isinstance(v, str) or "=" not in v:
            raise ConfigError(f"grid key {key!r}: expected key=value strings, got {v!r}")
    return items


def load_grid(path: str | Path) -> Grid:
    """Read a grid YAML file (its name defaults to the file's stem, made a plain name)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip(".-") or "grid"
    return grid_from_dict(load_yaml(path), default_name=stem)


def default_root(grid: Grid, base: str | Path = Path("runs") / "sweeps") -> Path:
    """``runs/sweeps/<grid name>``; the name is a plain name (checked), so the root stays in ``base``."""
    root = Path(base) / check_name(grid.name, "name")
    if Path(base).resolve() not in root.resolve().parents:
        raise ConfigError(f"grid name {grid.name!r} would leave {base}; use a plain name")
    return root


def save_grid(root: str | Path, grid: Grid) -> Path:
    """Record ``grid`` under ``ROOT/grids/`` (atomically), so reports of the root know its cells."""
    import yaml

    from ..utils import atomic_write_text

    path = Path(root) / "grids" / f"{grid.name}.yaml"
    atomic_write_text(path, yaml.safe_dump(grid_to_dict(grid), sort_keys=False))
    return path


def grids_of_root(root: str | Path) -> list[Grid] | None:
    """Every grid that has run in ``root`` (saved by :func:`save_grid`), or None if none was saved."""
    grids = []
    for p in sorted((Path(root) / "grids").glob("*.yaml")):
        try:
            grids.append(load_grid(p))
        except UserError as exc:
            raise ConfigError(f"{p}: {exc}; fix or delete it (`ddlnl sweep` writes it again)") from None
    return grids or None


def grid_to_dict(grid: Grid) -> dict[str, Any]:
    """The YAML-form mapping of a grid (round-trips through :func:`grid_from_dict`)."""
    return {"name": grid.name,
            "datasets": {e.name: {"data_root": e.data_root, "noise_file": e.noise_file} for e in grid.datasets},
            "noises": list(grid.noises), "methods": list(grid.methods), "ipcs": list(grid.ipcs),
            "seeds": list(grid.seeds), "baselines": list(grid.baselines), "n_runs": grid.n_runs,
            "baseline_runs": grid.baseline_runs, "eval_recipe": grid.eval_recipe, "preset": grid.preset, "train_subset": grid.train_subset,
            "set": list(grid.overrides), "method_set": {k: list(v) for k, v in grid.method_overrides.items()},
            "variants": {k: {"method": b, "set": list(v)} for k, (b, v) in grid.variants.items()},
            "resources": dict(grid.resources),
            **({"imbalance": grid.imbalance} if grid.imbalance != 1.0 else {})}
