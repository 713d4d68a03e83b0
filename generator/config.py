"""Typed job configs: dataclasses with defaults, loaded from YAML, overridden with ``--set a.b=v``.

An unknown key, a wrong type or a malformed override is a UserError naming the
file and the key. The resolved config is saved in the run directory and in
every checkpoint, so a run can be rebuilt from its own files.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path

import yaml

from generator.errors import UserError
from generator.io import atomic_write_text


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value, tp, where: str):
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats, lists for tuples."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if origin is typing.Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except UserError:
                pass
        raise UserError(f"{where}: {value!r} is not one of {', '.join(_type_name(a) for a in args)}")
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1] or (typing.Any,)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is typing.Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 2e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is bool and not isinstance(value, bool):
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if tp in (int, float) and isinstance(value, bool):
        raise UserError(f"{where}: expected a number, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise UserError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls, data: dict, where: str = "config"):
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; valid keys are {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> tuple[list[str], object]:
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected KEY=VALUE such as train.steps=1000")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def load_config(cls, path: str | os.PathLike | None = None, overrides: list[str] = ()):
    """Load ``cls`` from a YAML file (or its defaults when ``path`` is None) and apply ``--set`` overrides."""
    data: dict = {}
    where = "config"
    if path is not None:
        path = Path(path)
        where = str(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as e:
            raise UserError(f"{path}: cannot read config ({e.strerror}); check the path") from None
        except yaml.YAMLError as e:
            raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]}); fix the syntax") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: a config must be a mapping of sections such as 'train:'")
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {text!r}: {k!r} is not a section")
        node[keys[-1]] = value
    return from_dict(cls, data, where)


def save_config(cfg, path: Path) -> None:
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


@dataclasses.dataclass
class DataConfig:
    root: str = "outputs/data/simmarket"  # Market-1501-format root (real, or SimMarket)
    simulate_ids: int = 0  # > 0: write a SimMarket with this many identities at `root` when it is missing
    simulate_seed: int = 0  # seed of that SimMarket
    size: list[int] = dataclasses.field(default_factory=lambda: [128, 64])  # image height, width
    splits: list[str] = dataclasses.field(default_factory=lambda: ["train"])  # splits to train on
    flip: float = 0.5  # horizontal flip probability (left and right joints swap)
    workers: int = 2  # DataLoader worker processes
    heatmap_radius: int = 4  # disk radius of the 18 pose maps
    mask_radius: int = 7  # disk radius of the coarse pose mask

