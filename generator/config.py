"""Typed job configs: dataclasses with defaults, loaded from YAML, overridden with ``--set a.b=v``.

An unknown key, a wrong type, a list of the wrong length, a value outside its choices (``typing.Literal``)
or a malformed override is a UserError naming the file (or the ``--set``) and the key, raised while the
config loads, before a job writes anything. Checks that span fields or ranges live in a config's
``__post_init__``, which raises ``ConfigValueError`` with the field's name. The resolved config is saved in
the run directory and in every checkpoint (tuples as lists), so a run can be rebuilt from its own files.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import re
import types
import typing
from pathlib import Path

import yaml

from generator.errors import UserError
from generator.io import access_denied, atomic_write_text

SEED_MAX = 2**32 - 1  # the largest seed numpy accepts


class ConfigValueError(UserError):
    """A field's value is outside what the job accepts: raised by a config's ``__post_init__`` with the field's
    name (``key``) and what to do (``reason``); ``from_dict`` adds the file and the section."""

    def __init__(self, key: str, reason: str, where: str | None = None):
        super().__init__(f"{where}: {key}: {reason}" if where else f"{key}: {reason}")
        self.key, self.reason, self.where = key, reason, where


def _type_name(tp) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _at(where: str, key: str) -> str:
    return f"{where}: {key}" if key else where


def _join(key: str, name) -> str:
    return f"{key}.{name}" if key else str(name)


def _example(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _coerce(value, tp, where: str, key: str = "", example=None):
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats, lists for tuples (a fixed-length
    ``tuple[int, int]`` needs exactly that many items), ``Literal[...]`` lists its choices. ``where`` names the
    file or the override, ``key`` the dotted key inside it; ``example`` (the default) shows a valid value."""
    at = _at(where, key)
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{at}: expected a section (a mapping of {tp.__name__} fields), got {value!r}")
        return _from_dict(tp, value, where, key)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if not any(type(value) is type(c) and value == c for c in choices):
            raise UserError(f"{at}: {value!r} is not a valid choice; use one of {', '.join(map(str, choices))}")
        return value
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where, key, example)
            except UserError:
                pass
        raise UserError(f"{at}: {value!r} is not one of {', '.join(_type_name(a) for a in args)}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{at}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            items = [args[0]] * len(value)
        else:
            items = list(args)
            if len(value) != len(items):
                hint = f" such as {list(example)}" if isinstance(example, (list, tuple)) else ""
                raise UserError(f"{at}: expected a list of {len(items)} values{hint}, got {value!r}")
        return tuple(_coerce(v, a, where, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, items, strict=True)))
    if origin is list:
        (item,) = typing.get_args(tp)[:1] or (typing.Any,)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{at}: expected a list, got {value!r}")
        return [_coerce(v, item, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is typing.Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 2e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{at}: {value}: expected a finite number")
    if tp is bool and not isinstance(value, bool):
        raise UserError(f"{at}: expected true or false, got {value!r}")
    if tp in (int, float) and isinstance(value, bool):
        raise UserError(f"{at}: expected a number, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        empty = (" (an empty value; for an empty string write '', in a shell --set \"KEY=''\")"
                 if value is None and tp is str else "")
        raise UserError(f"{at}: expected {_type_name(tp)}, got {value!r}{empty}")
    if tp is str and "\0" in value:  # YAML's "\0" escape: no file name or path can hold it
        raise UserError(f"{at}: {value!r} holds a NUL character (\\0), which no path or name can hold; remove it")
    if tp is str and value.startswith("~"):  # a path in the home folder (`out: ~/runs`), as a shell would read it
        value = os.path.expanduser(value)
    return value


def _unknown(where: str, section: str, name, fields, renamed: dict | None = None) -> UserError:
    """An unknown key; one that a config class has renamed (its ``RENAMED``: old key -> new key) names the new key."""
    if renamed and name in renamed:
        return UserError(f"{where}: key {_join(section, name)!r} is now {_join(section, renamed[name])!r}; "
                         f"rename it in the config")
    inside = f" in {section}" if section else ""
    return UserError(f"{where}: unknown key {_join(section, name)!r}; "
                     f"valid keys{inside} are {', '.join(sorted(fields))}")


def _from_dict(cls, data: dict, where: str, key: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted((k for k in data if k not in fields), key=str)
    if unknown:
        raise _unknown(where, key, unknown[0], fields, getattr(cls, "RENAMED", None))
    kwargs = {k: _coerce(v, hints[k], where, _join(key, k), _example(fields[k])) for k, v in data.items()}
    for k, v in kwargs.items():  # every seed numpy or torch is seeded with
        if k in ("seed", "seeds") or k.endswith("_seed"):
            bad = [x for x in (v if isinstance(v, (list, tuple)) else [v])
                   if isinstance(x, int) and not isinstance(x, bool) and not 0 <= x <= SEED_MAX]
            if bad:
                raise ConfigValueError(_join(key, k), f"{bad[0]}: a seed is a whole number 0..{SEED_MAX}", where)
    try:
        return cls(**kwargs)
    except ConfigValueError as e:
        raise ConfigValueError(_join(key, e.key), e.reason, where) from None


def from_dict(cls, data: dict, where: str = "config"):
    """Build dataclass ``cls`` from ``data``; unknown keys, wrong types and values outside their choices are errors
    naming ``where`` (the file) and the key."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
    return _from_dict(cls, data, where, "")


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_dict(cfg) -> dict:
    """The config as plain YAML / JSON / checkpoint data: tuples become lists, as they were written."""
    return _plain(dataclasses.asdict(cfg))


DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")  # the devices a job may be asked to run on


def check_ranges(cfg, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = (),
                 up_to_one: tuple[str, ...] = (), below_one: tuple[str, ...] = ()) -> None:
    """A config section's ranges, for its ``__post_init__``: each field of ``positive`` above 0, each of
    ``non_negative`` at least 0, of ``up_to_one`` in [0, 1] (probabilities), of ``below_one`` in [0, 1) (shares
    that must leave something, Adam's betas), and its ``device`` (if it has one) auto, cpu, cuda or cuda:N."""
    for name in positive:
        if not getattr(cfg, name) > 0:
            raise ConfigValueError(name, f"{getattr(cfg, name)}: must be above 0")
    for name in non_negative:
        if getattr(cfg, name) < 0:
            raise ConfigValueError(name, f"{getattr(cfg, name)}: must be 0 or more")
    for name in up_to_one:
        if not 0 <= getattr(cfg, name) <= 1:
            raise ConfigValueError(name, f"{getattr(cfg, name)}: use a value in [0, 1]")
    for name in below_one:
        if not 0 <= getattr(cfg, name) < 1:
            raise ConfigValueError(name, f"{getattr(cfg, name)}: use a value in [0, 1)")
    device = getattr(cfg, "device", "auto")
    if not DEVICE.fullmatch(str(device)):
        raise ConfigValueError("device", f"{device!r} is not a device; use auto, cpu, cuda or cuda:N")


def check_size(cfg, *names: str) -> None:
    """Image sizes ``[height, width]`` a job can draw and train at: height 32..1024, width 16..512 (the range of
    ``vmarket simulate --size``)."""
    for name in names:
        size = getattr(cfg, name)
        if size is None:
            continue
        if len(size) != 2 or not (32 <= size[0] <= 1024 and 16 <= size[1] <= 512):
            raise ConfigValueError(name, f"{list(size)}: height must be 32..1024 and width 16..512 (Market-1501 is "
                                         f"[128, 64])")


def check_unique(cfg, *names: str) -> None:
    """Lists that name each item once (seeds, splits, settings, data roots): a second copy would be a silent
    duplicate run, or twice the weight of its images."""
    for name in names:
        values = getattr(cfg, name)
        twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if twice is not None:
            raise ConfigValueError(name, f"{twice!r} given twice; list each once")


def digest(data) -> str:
    """16 hex digits of the sha256 of ``data`` (plain JSON data, keys sorted): what a resumable job records of the
    settings it was started with, to tell its own unfinished output from another's."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _set_name(text: str) -> str:
    return f"--set {text!r}"


def parse_override(text: str, name: str | None = None) -> tuple[list[str], object]:
    """``a.b=v`` -> (["a", "b"], v parsed as YAML); ``name`` is how errors call the override (``--set 'a.b=v'``)."""
    name = name or _set_name(text)
    if "=" not in text:
        raise UserError(f"{name}: expected KEY=VALUE such as train.steps=1000")
    key, raw = text.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise UserError(f"{name}: {key.strip()!r} is not a key; expected KEY=VALUE such as train.steps=1000")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return keys, value


def _override_type(cls, keys: list[str], name: str):
    """The annotation (and default) of the field that the override ``name``, split into ``keys``, assigns to;
    unknown paths are errors."""
    tp = cls
    for i, k in enumerate(keys):
        section = ".".join(keys[:i])
        if not dataclasses.is_dataclass(tp):
            raise UserError(f"{name}: {section!r} is a value, not a section; set it as {section}=VALUE")
        fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
        if k not in fields:
            raise _unknown(name, section, k, fields, getattr(tp, "RENAMED", None))
        tp = typing.get_type_hints(tp)[k]
    return tp, _example(fields[keys[-1]])


BASE_KEY = "base"  # a config's top-level key naming the YAML file it extends (relative to the config's folder)


class _UniqueKeys(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (PyYAML keeps the last silently, so the first section
    of two ``data:`` would vanish)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: the anchor's keys, flattened below
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (again on line {key_node.start_mark.line + 1}); keep one",
                    key_node.start_mark)
            if isinstance(key, typing.Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeys)  # noqa: S506 (a SafeLoader)
    except OSError as e:
        if e.errno == errno.EACCES:
            raise UserError(access_denied(path, "read", "config")) from None
        raise UserError(f"{path}: cannot read config ({e.strerror}); check the path") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a UTF-8 text file (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                        "a config is YAML text: save it as UTF-8") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]}); fix the syntax") from None
    if data is None and str(path) == os.devnull:  # `-c /dev/null`: said outright, every default (and the --set)
        return {}
    if data is None:  # taken as "every default", an empty file would run a job the user never configured
        raise UserError(f"{path}: empty config (no keys, or comments only); fill it in (the files under configs/ are "
                        f"examples), or name {os.devnull} for every default")
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping of sections such as 'train:'")
    return data


def merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` on top: sections merge key by key, any other value (a list too) is replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _beside(folder: Path, name: str) -> str:
    """A config file that a config in ``folder`` names: relative to that folder (so a folder of configs works from
    anywhere), else, where only that exists, to the current folder (as a path given on the command line is)."""
    if Path(name).is_absolute():
        return name
    here = Path(os.path.normpath(folder / name))
    return name if not here.exists() and Path(name).exists() else str(here)


def read_config(path: Path, chain: tuple[Path, ...] = (), files: tuple[str, ...] = ()) -> dict:
    """The YAML mapping of ``path``, on top of the file its ``base:`` names (and that file's base, in turn). The
    top-level keys ``files`` name other config files: found beside the file that gives them (``_beside``)."""
    data = _read_yaml(path)
    for key in files:
        if isinstance(data.get(key), str) and data[key]:
            data[key] = _beside(path.parent, data[key])
    if BASE_KEY not in data:
        return data
    base = data.pop(BASE_KEY)
    if not isinstance(base, str) or not base:
        raise UserError(f"{path}: base: {base!r} is not a file name; name the YAML config this one extends, "
                        f"relative to {path.parent}")
    base_path = path.parent / base
    chain = (*chain, path.resolve())
    if base_path.resolve() in chain:
        raise UserError(f"{path}: base: {base} extends itself ({' -> '.join(str(p) for p in (*chain, base_path))}); "
                        "remove the loop")
    if not base_path.is_file():
        what = "a folder, not a config file" if base_path.is_dir() else "no such file"
        raise UserError(f"{path}: base: {base}: {what} ({base_path}); give a path relative to {path.parent}")
    return merge(read_config(base_path, chain, files), data)


def load_config(cls, path: str | os.PathLike | None = None, overrides: list[str] = (), set_name=_set_name):
    """Load ``cls`` from a YAML file (or its defaults when ``path`` is None) and apply ``--set`` overrides. A file
    may extend another with a top-level ``base: OTHER.yaml`` (relative to its folder): its keys replace the base's,
    section by section. The top-level keys that ``cls.CONFIG_FILES`` lists name other config files, relative to the
    folder of the file that gives them (or, where only that exists, to the current folder).

    A config with a ``set`` list (``JOB:KEY=VALUE`` entries for the jobs it runs) takes ``--set JOB:KEY=VALUE`` as
    one more entry, after the file's, so that it wins over them.

    Every error (file, key, type, choice, range) is raised here, before the job writes anything. ``set_name(text)``
    is how an error names an override (default ``--set 'text'``)."""
    data: dict = {}
    where = "config"
    if path is not None:
        path = Path(path)
        where = str(path)
        data = read_config(path, files=getattr(cls, "CONFIG_FILES", ()))
    set_by = {}  # dotted key -> the name of the override that gave it its value
    for text in overrides:
        name = set_name(text)
        keys, value = parse_override(text, name)
        if ":" in keys[0]:
            if "set" not in {f.name for f in dataclasses.fields(cls)}:
                raise UserError(f"{name}: JOB:KEY=VALUE sets a key of one job of a config that runs jobs (a set "
                                f"list), and {where} runs none; set one of its own keys, KEY=VALUE")
            # a key of one of its jobs (JOB:KEY=VALUE): one more entry of its set list, after the file's, so it wins
            data["set"] = [*(data.get("set") or []), text.strip()]
            continue
        tp, example = _override_type(cls, keys, name)
        _coerce(value, tp, name, ".".join(keys), example)  # named by its override, not by the file
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise UserError(f"{name}: {k!r} is not a section in {where}; fix the file")
        node[keys[-1]] = value
        set_by[".".join(keys)] = name
    try:
        return from_dict(cls, data, where)
    except ConfigValueError as e:
        if e.key in set_by:
            raise UserError(f"{set_by[e.key]}: {e.key}: {e.reason}") from None
        raise


def save_config(cfg, path: Path) -> None:
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


# re-ID dataset layouts a data root may hold (generator.data.layouts reads them); auto: detected from the folder
DataFormat = typing.Literal["auto", "market1501", "duke", "msmt17", "cuhk03_detected", "cuhk03_labeled"]


MIN_IDS = 2  # a SimMarket needs one training and one test identity
TOO_FEW_IDS = f"SimMarket needs at least {MIN_IDS} identities (one train, one test)"


def share_defect(ids: int, train_share: float) -> str | None:
    """Why ``ids`` identities cannot be split at ``train_share`` (as ``generator.simmarket.plan`` does), or None."""
    if ids < MIN_IDS:
        return TOO_FEW_IDS
    if not 0 < train_share < 1 or round(ids * train_share) in (0, ids):
        return f"{ids} identities need a share in (0, 1) that leaves at least one identity in each split"
    return None


@dataclasses.dataclass
class DataConfig:
    root: str = "outputs/data/simmarket"  # dataset root: Market-1501, DukeMTMC-reID, MSMT17, CUHK03, or SimMarket
    format: DataFormat = "auto"  # layout of `root` (generator.data.layouts); auto: detected from its contents
    simulate_ids: int = 0  # > 0: write a SimMarket with this many identities at `root` when it is missing
    simulate_seed: int = 0  # seed of that SimMarket
    size: tuple[int, int] = (128, 64)  # image height, width
    splits: list[typing.Literal["train", "query", "gallery"]] = dataclasses.field(
        default_factory=lambda: ["train"])  # splits to train on
    flip: float = 0.5  # horizontal flip probability (left and right joints swap)
    workers: int = 2  # DataLoader worker processes
    heatmap_radius: int = 4  # disk radius of the 18 pose maps
    mask_radius: int = 7  # disk radius of the coarse pose mask
    # leave out person images that have no keypoint row (the run log counts them) instead of refusing the dataset;
    # junk and distractor images without a row are always left out, they are never trained on
    skip_missing_keypoints: bool = False
    # more datasets (same layout rules as root) whose training split stage I and the pose AE also train on, e.g. a
    # large unlabelled split of other people: their identity labels are never read; held-out evaluation stays on root
    unlabelled_roots: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        check_ranges(self, non_negative=("simulate_ids", "workers", "heatmap_radius", "mask_radius"),
                     up_to_one=("flip",))
        check_size(self, "size")
        if not self.splits:
            raise ConfigValueError("splits", "empty; name at least one of train, query, gallery")
        check_unique(self, "splits", "unlabelled_roots")
        if self.simulate_ids == 1:
            raise ConfigValueError("simulate_ids", f"1: {TOO_FEW_IDS}; use 0 for a dataset that is there")

