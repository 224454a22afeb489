"""Checked overrides of frozen config dataclasses (``--set key=value`` and YAML files).

Defaults live in the dataclasses; overrides only replace fields. An unknown key or a value that
does not parse as the field's type is a :class:`~ddlnl.errors.ConfigError` that names the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

from .errors import ConfigError

C = TypeVar("C")


def _parse_bool(text: str, key: str) -> bool:
    low = text.strip().lower()
    if low in {"true", "1", "yes", "on"}:
        return True
    if low in {"false", "0", "no", "off"}:
        return False
    raise ConfigError(f"{key}: expected true or false, got {text!r}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (a string from the command line, or a YAML value) to type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in {"none", "null"}):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: cannot parse {value!r}")
    if origin is typing.Literal:
        if isinstance(value, str):
            for a in args:
                if str(a) == value:
                    return a
        if value in args:
            return value
        raise ConfigError(f"{key}: expected one of {', '.join(map(str, args))}, got {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str):
            items = [v for v in value.replace("(", "").replace(")", "").replace("[", "").replace("]", "").split(",") if v.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigError(f"{key}: expected a comma-separated list, got {value!r}")
        inner = args[0] if args else str
        return origin(_coerce(v, inner, key) for v in items)
    if tp is bool:
        if isinstance(value, bool):
            return value
        return _parse_bool(str(value), key)
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if not f.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported field type {tp!r}")


def apply_overrides(cfg: C, overrides: Mapping[str, Any] | Sequence[str] | None) -> C:
    """Return ``cfg`` with fields replaced from ``overrides``.

    Args:
        cfg: a frozen dataclass instance.
        overrides: ``{"key": value}`` or ``["key=value", ...]`` (the ``--set`` form).

    Raises:
        ConfigError: unknown key (the message lists the valid ones), bad syntax or bad type.
    """
    if not overrides:
        return cfg
    if not isinstance(overrides, Mapping):
        parsed: dict[str, Any] = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"--set {item!r}: expected key=value")
            k, v = item.split("=", 1)
            parsed[k.strip()] = v.strip()
        overrides = parsed
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            raise ConfigError(
                f"unknown key {key!r} for {type(cfg).__name__}; valid keys: {', '.join(sorted(names))}"
            )
        changes[key] = _coerce(value, hints[key], key)
    new = dataclasses.replace(cfg, **changes)
    check = getattr(new, "check", None)
    if callable(check):
        check()
    return new


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found: check the path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value at the top level")
    return data


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-able dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)


def identity(cfg: Any) -> dict[str, Any]:
    """The fields of a config that identify a result (used in cache keys and record keys).

    A field listed in the dataclass's ``KEY_NEUTRAL`` mapping is left out while it holds that
    neutral value: options added after results existed (say a new optimizer choice whose default
    is the old behaviour) then keep the keys, and so the records, of everything computed before.
    A field renamed since (the dataclass's ``KEY_NAMES``: new -> old name) is keyed by its old name.
    """
    data = dataclasses.asdict(cfg)
    neutral = getattr(type(cfg), "KEY_NEUTRAL", {})
    names = getattr(type(cfg), "KEY_NAMES", {})  # a field renamed since: keyed by its former name
    return {names.get(k, k): v for k, v in data.items() if not (k in neutral and v == neutral[k])}
