"""Typed run configs: dataclasses, YAML load/save and ``--a.b=value`` overrides.

One dataclass tree describes a run completely; the CLI is generated from the same tree, and
every run saves its resolved tree as ``config.yaml`` beside its outputs.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import yaml

from vlaforge.files import atomic_write_text
from vlaforge.pool import BACKENDS, map_in_workers
from vlaforge.seeds import EVAL_SEEDS


@dataclasses.dataclass
class WorkersConfig:
    """Base of every config whose verb runs a process pool: the field and its resolution, once."""

    workers: int = dataclasses.field(
        default=0, metadata={"help": "worker processes; 0 = one per core (backend=ray: per CPU of the cluster)"})
    backend: str = dataclasses.field(
        default="local", metadata={"help": "where the episodes run: local (a process pool here) | ray (Ray tasks)"})
    ray_address: str = dataclasses.field(default="", metadata={
        "help": "backend=ray: the cluster (host:port, ray://host:10001 or auto); empty = start one on this machine"})

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"config key 'backend' must be one of {', '.join(BACKENDS)}, got {self.backend!r}")

    def num_workers(self) -> int:
        """Worker processes: the number given, or one per core for 0 (left 0 for a Ray cluster,
        which counts its CPUs itself)."""
        return self.workers or (0 if self.backend == "ray" else os.cpu_count() or 1)

    def pool(self) -> dict:
        """These fields, to hand on to the configs of the runs a verb makes (transfer's evaluations)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(WorkersConfig)}

    def map(self, fn: Callable[[Any], Any], jobs: list, initializer: Callable[..., None], initargs: tuple = (),
            ordered: bool = True) -> Iterator[Any]:
        """``fn(job)`` for every job on this config's backend and workers (vlaforge.pool)."""
        return map_in_workers(fn, jobs, self.num_workers(), initializer, initargs, ordered, self.backend,
                              self.ray_address)


@dataclasses.dataclass
class PolicyRunConfig(WorkersConfig):
    """Base of the verbs that run a trained policy's episodes in worker processes: which policy,
    the first scene seed (every run compared replays the same scenes) and where results go."""

    policy: str = dataclasses.field(default="", metadata={"help": "policy directory"})
    seed: int = dataclasses.field(
        default=EVAL_SEEDS, metadata={"help": "first scene seed (collection seeds stay below 1e9)"}
    )
    output_dir: str = dataclasses.field(
        default="", metadata={"help": "where the results go (a folder named after the verb); empty = beside the policy"}
    )


@dataclasses.dataclass
class EpisodesConfig(PolicyRunConfig):
    """A ``PolicyRunConfig`` that evaluates a fixed number of episodes per task."""

    episodes: int = dataclasses.field(default=20, metadata={"help": "episodes per task"})


@dataclasses.dataclass
class HorizonConfig:
    """Base of every config whose verb executes action chunks closed-loop (receding horizon)."""

    action_horizon: int = dataclasses.field(default=0, metadata={"help": "actions executed per chunk; 0 = chunk_size/2"})

    def horizon(self, chunk_size: int) -> int:
        """Actions executed from each chunk of ``chunk_size``: ``action_horizon``, or half the
        chunk for 0; more than the chunk holds is refused."""
        horizon = self.action_horizon or max(1, chunk_size // 2)
        if horizon < 1:
            raise ValueError(f"action_horizon must be >= 1 (or 0 = chunk_size/2), got {horizon}")
        if horizon > chunk_size:
            raise ValueError(f"action_horizon {horizon} exceeds the policy's chunk_size {chunk_size}")
        return horizon


class ConfigError(ValueError):
    """A config key, value or file that cannot be used."""


T = TypeVar("T")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``hint``; ints widen to floats."""
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r} expects a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
            try:
                return _coerce(value, option, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError("; ".join(errors))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} expects true/false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} expects an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key {key!r} expects a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key {key!r} expects a string, got {value!r}")
    raise ConfigError(f"config key {key!r} has an unsupported type {hint}")


def from_dict(cls: type[T], data: dict | None, prefix: str = "") -> T:
    """Build ``cls`` from a nested dict, rejecting unknown keys with the valid ones listed."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping, got {data!r}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = list(fields)
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            where = prefix.rstrip(".") or "<root>"
            raise ConfigError(f"unknown config key {prefix + str(key)!r}; valid keys in {where}: {', '.join(names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            # A partial section overrides the parent's default for it (a default_factory may set
            # values of its own), not the section type's bare defaults.
            default = _field_default(fields[key])
            if default is not None and isinstance(value, dict):
                value = _merged(to_dict(default), value)
            kwargs[key] = from_dict(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, prefix + key)
    return cls(**kwargs)


def _field_default(f: dataclasses.Field) -> Any:
    """The field's default value (a fresh one from its factory), or None when it has none."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _merged(base: dict, update: dict) -> dict:
    """``base`` with ``update`` laid over it, nested mappings merged key by key."""
    out = dict(base)
    for key, value in update.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def setting_changes(old: dict, new: dict) -> list[str]:
    """The keys of two flat settings dicts whose values differ, as 'key: old -> new' (a key on one
    side only counts as None on the other): what a refused resume names."""
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Apply ``a.b=value`` strings (values parsed as YAML) to a config, returning a new one."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"unknown config key {key!r}")
            node = node[p]
        if parts[-1] not in node:
            valid = ", ".join(node)
            raise ConfigError(f"unknown config key {key!r}; valid keys here: {valid}")
        if isinstance(node[parts[-1]], list) and not isinstance(value, list):
            value = [value] if value not in (None, "") else []
        node[parts[-1]] = value
    return from_dict(type(cfg), data)


def load_yaml(cls: type[T], path: str | os.PathLike) -> T:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    return from_dict(cls, data)


def save_yaml(cfg: Any, path: str | os.PathLike) -> None:
    """Write the config atomically so a crash never leaves half a config.yaml."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe_fields(cls: type, prefix: str = "", default: Any = None) -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) for every leaf of a config tree; drives ``--help``. Nested
    defaults are the parent's (a parent may set its own, e.g. the quickstart's episode count)."""
    rows = []
    hints = _hints(cls)
    default = cls() if default is None else default
    for f in dataclasses.fields(cls):
        hint, value = hints[f.name], getattr(default, f.name)
        if dataclasses.is_dataclass(hint):
            rows += describe_fields(hint, f"{prefix}{f.name}.", value)
        else:
            name = getattr(hint, "__name__", str(hint)).replace("typing.", "")
            rows.append((prefix + f.name, name, value, f.metadata.get("help", "")))
    return rows
