"""Run directories moved between machines in a few files of bounded size.

A GPU lent for short windows gives back a handful of files of a bounded size each, and the next window starts on
a bare machine. ``pack`` writes a tree of run directories (without the folders the job rebuilds itself, such as
simulated data) as one tar archive split into parts, with an index that carries each part's sha256. When the
tree is larger than the budget it is shrunk in two steps, each recorded in the index:

1. ``no-optimiser``: every training state (``state.pt``) loses its optimiser moments; the resumed run restarts
   them (``restore_state`` leaves the optimisers it names in ``dropped`` freshly built), while weights, step and
   RNGs carry over exactly.
2. ``float16``: every floating-point tensor of every checkpoint is stored in fp16 as well (the shipped
   checkpoints are fp16 already); loading casts them back into the fp32 modules.

From the first step on, a tensor equal to one already packed (a snapshot's weights in its training state, the
shipped fp16 copy of a snapshot) is stored once and referred to; ``unpack`` resolves the references, verifies
the parts against the index and restores the tree.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import torch

from generator.errors import UserError
from generator.io import atomic_save, atomic_write_text, load_checkpoint

INDEX = "transfer.json"
PART = "runs.tar."  # parts runs.tar.000, runs.tar.001, ...
LEVELS = ("full", "no-optimiser", "float16")
MIB = 2 ** 20
SAME = "__packed_same_as__"  # a tensor stored once: [file, key, ...] of its first occurrence
REBUILT = ("embeddings.pt",)  # caches a run rebuilds when they are missing (stage II's real embeddings)


def _is_optimiser_state(obj) -> bool:
    return isinstance(obj, dict) and {"state", "param_groups"} <= obj.keys()


def _without_optimisers(state: dict) -> dict:
    """A training state with the optimiser state dicts (also those kept per factor) removed and named in
    ``dropped``."""
    dropped = [k for k, v in state.items() if _is_optimiser_state(v)
               or (isinstance(v, dict) and v and all(_is_optimiser_state(x) for x in v.values()))]
    return {**{k: v for k, v in state.items() if k not in dropped},
            "dropped": sorted(set(state.get("dropped", [])) | set(dropped))}


def _half(obj):
    if torch.is_tensor(obj):
        return obj.half() if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: _half(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_half(v) for v in obj)
    return obj


def _members(src: Path, exclude: tuple[str, ...]) -> list[Path]:
    """Every regular file under ``src`` but those of the top-level folders in ``exclude``, rebuilt caches and
    unfinished writes."""
    out = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if rel.parts[0] in exclude or path.name in REBUILT or not path.is_file() or path.is_symlink():
            continue
        if any(part.startswith(".") and part.endswith((".partial", ".tmp")) for part in rel.parts):
            continue
        out.append(path)
    return out


def _shared(obj, name: str, where: list, seen: dict):
    """``obj`` with every tensor already in ``seen`` (by dtype, shape and bytes) replaced by a reference
    ``{SAME: [file, key, ...]}`` to its first occurrence; new tensors are added to ``seen`` under ``where``."""
    if torch.is_tensor(obj):
        raw = obj.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
        key = (str(obj.dtype), tuple(obj.shape), hashlib.sha256(raw).hexdigest())
        if key in seen:
            return {SAME: seen[key]}
        seen[key] = [name, *where]
        return obj
    if isinstance(obj, dict):
        return {k: _shared(v, name, [*where, k], seen) for k, v in obj.items()}
    return obj


def _resolve(obj, root: Path, cache: dict):
    """The inverse of ``_shared``: references replaced by the tensors they name (files under ``root``)."""
    if isinstance(obj, dict):
        if set(obj) == {SAME}:
            name, *keys = obj[SAME]
            if name not in cache:
                cache[name] = load_checkpoint(root / name)
            value = cache[name]
            for k in keys:
                value = value[k]
            return value
        return {k: _resolve(v, root, cache) for k, v in obj.items()}
    return obj


def _payload(path: Path, name: str, level: str, seen: dict) -> bytes:
    """The bytes of one file as packed at ``level``."""
    if path.suffix != ".pt" or level == "full":
        return path.read_bytes()
    obj = load_checkpoint(path)
    if path.name == "state.pt":
        obj = _without_optimisers(obj)
    if level == "float16":
        obj = _half(obj)
    buf = io.BytesIO()
    torch.save(_shared(obj, name, [], seen), buf)
    return buf.getvalue()


def pack(src: str | os.PathLike, dest: str | os.PathLike, budget_mib: float = 44.0, part_mib: float = 16.0,
         exclude: tuple[str, ...] = ("data",)) -> dict:
    """Write the tree ``src`` (but its top-level folders ``exclude``) to ``dest`` as tar parts of at most
    ``part_mib`` MiB and ``INDEX``; the parts together hold at most ``budget_mib`` MiB, at the first level of
    ``LEVELS`` that fits. Returns the index."""
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise UserError(f"{src}: not a folder of runs to pack")
    members = _members(src, exclude)
    for level in LEVELS:
        seen: dict = {}
        blobs = {}
        for p in members:
            name = p.relative_to(src).as_posix()
            blobs[name] = _payload(p, name, level, seen)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in blobs.items():
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), int((src / name).stat().st_mtime)
                tar.addfile(info, io.BytesIO(data))
        archive = buf.getvalue()
        if len(archive) <= budget_mib * MIB:
            break
    else:
        raise UserError(f"{src}: {len(archive) / MIB:.1f} MiB even in fp16 without optimiser state, over the "
                        f"{budget_mib:g} MiB budget; train a smaller model or raise the budget")
    dest.mkdir(parents=True, exist_ok=True)
    (dest / INDEX).unlink(missing_ok=True)  # no index until every part it names is written
    for old in dest.glob(f"{PART}*"):
        old.unlink()
    step = int(part_mib * MIB)
    parts = []
    for i, start in enumerate(range(0, len(archive), step)):
        chunk = archive[start:start + step]
        name = f"{PART}{i:03d}"
        tmp = dest / f".{name}.tmp"
        tmp.write_bytes(chunk)
        os.replace(tmp, dest / name)
        parts.append({"name": name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    index = {"level": level, "bytes": len(archive), "parts": parts, "files": list(blobs),  # in packing order
             "excluded": list(exclude)}
    atomic_write_text(dest / INDEX, json.dumps(index, indent=1))
    return index


def unpack(src: str | os.PathLike, dest: str | os.PathLike) -> dict:
    """Restore into ``dest`` the tree that ``pack`` wrote to ``src``, after checking every part's sha256; files
    already in ``dest`` under the same names are replaced. Returns the index."""
    src, dest = Path(src), Path(dest)
    if not (src / INDEX).is_file():
        raise UserError(f"{src}: no {INDEX}; give the folder a packing run wrote (its {PART}* parts and {INDEX})")
    try:
        index = json.loads((src / INDEX).read_text())
        parts = [(p["name"], p["sha256"]) for p in index["parts"]]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{src / INDEX}: not an index a packing run wrote; copy the whole folder again") from None
    chunks = []
    for name, sha in parts:
        path = src / name
        data = path.read_bytes() if path.is_file() else b""
        if hashlib.sha256(data).hexdigest() != sha:
            raise UserError(f"{path}: missing or not the part its {INDEX} names (sha256 differs); copy the whole "
                            "folder again")
        chunks.append(data)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r") as tar:
        tar.extractall(dest, filter="data")  # no member may land outside dest
    if index["level"] != "full":
        # references point to files packed earlier, so resolving in packing order always finds plain tensors
        cache: dict = {}
        for name in index["files"]:
            if name.endswith(".pt"):
                obj = _resolve(load_checkpoint(dest / name), dest, cache)
                cache[name] = obj
                atomic_save(obj, dest / name)
    return index
