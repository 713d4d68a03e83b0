"""The reference checkpoints shipped with the package (``generator/reference/``), trained on SimMarket by
``make reference``: stage I (G and D), the pose autoencoder and the stage-II mappings, in fp16, with
``provenance.json`` (command, configs, commit, steps, wall time, sha256 of each file, metrics).

``install(reference_dir, out, data_root)`` verifies every file against its sha256 and writes ordinary run
directories (``out/stage1``, ``out/pose``, ``out/stage2``) that the evaluation, the sampler and the builder
read like any trained run.
"""
from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path

import torch

from generator.api import real_embeddings
from generator.config import from_dict, save_config
from generator.errors import UserError
from generator.io import atomic_save, atomic_write_json, load_checkpoint, read_json_object
from generator.simmarket.simulate import settings, simulate
from generator.training.pose_ae import PoseConfig
from generator.training.stage1 import Stage1Config
from generator.training.stage2 import Stage2Config

FILES = {"stage1": "stage1.pt", "pose": "pose.pt", "stage2": "stage2.pt"}
PROVENANCE = "provenance.json"


def default_dir() -> Path:
    """The reference checkpoints installed with the package."""
    return Path(__file__).resolve().parent / "reference"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def provenance(reference_dir: str | os.PathLike | None = None, provisional_ok: bool = False) -> dict:
    """``provenance.json`` of a reference folder, after checking each checkpoint against its sha256.
    ``provisional_ok``: also the provisional one (the files alone) that packaging writes before it evaluates them."""
    ref = Path(reference_dir) if reference_dir else default_dir()
    path = ref / PROVENANCE
    if not path.is_file():
        raise UserError(f"{path}: no reference checkpoints here; run `make reference` to train them, "
                        "or pass --from-scratch to train every stage in this run")
    prov = read_json_object(path, "reinstall the package or rerun `make reference`")
    if not isinstance(prov.get("files"), dict) or any(not isinstance(prov["files"].get(n), dict)
                                                       or "sha256" not in prov["files"][n] for n in FILES.values()):
        raise UserError(f"{path}: no sha256 for each of {', '.join(FILES.values())}; reinstall the package or rerun "
                        "`make reference`")
    if prov.get("provisional") and not provisional_ok:
        raise UserError(f"{path}: the packaging of these checkpoints did not finish (its provenance is provisional); "
                        "rerun the reference job that wrote them (it resumes)")
    for name in FILES.values():
        f = ref / name
        if not f.is_file():
            raise UserError(f"{f}: missing; reinstall the package or rerun `make reference`")
        want = prov["files"][name]["sha256"]
        if sha256_file(f) != want:
            raise UserError(f"{f}: sha256 differs from {path} (a changed or partial file); reinstall the package "
                            "or rerun `make reference`")
    return prov


def model_size(reference_dir: str | os.PathLike | None = None) -> tuple[int, int]:
    """(H, W) the reference generator works at (its stage-I data size), from its checked provenance."""
    return tuple(provenance(reference_dir)["configs"]["stage1"]["data"]["size"])


def simulate_reference_data(root: str | os.PathLike, reference_dir: str | os.PathLike | None = None,
                            progress: bool = False) -> dict:
    """Write the SimMarket the reference was trained and evaluated on (deterministic per seed) to ``root``."""
    data = settings(provenance(reference_dir)["data"])
    return simulate(root, data["identities"], seed=data["seed"], size=(data["height"], data["width"]),
                    progress=progress, train_cameras=data["train_cameras"], style=data["style"],
                    people_seed=data["people_seed"], train_share=data["train_share"])


def half(state: dict) -> dict:
    """A state dict with floating-point tensors in fp16 (integer buffers such as BN counters untouched)."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def _install_one(src: Path, dst_dir: Path, edit) -> dict:
    snap = load_checkpoint(src)
    edit(snap["config"])
    dst_dir.mkdir(parents=True, exist_ok=True)
    atomic_save(snap, dst_dir / "snapshot.pt")
    return snap


def _sha256_of(prov: dict) -> dict[str, str]:
    return {n: prov["files"][n]["sha256"] for n in FILES.values()}


def checkpoint_sha256(reference_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """The sha256 of each verified reference checkpoint (file name -> hex digest): what names a generator in the
    provenance of what it made."""
    return _sha256_of(provenance(reference_dir))


def check_installed_from(outs, reference_dir: str | os.PathLike | None = None) -> None:
    """Refuse (UserError) when one of the folders ``outs`` holds run directories installed from other reference
    checkpoints than ``reference_dir``'s (its ``reference.json``): what was generated with them came from another
    generator. The checkpoints are hashed once, and only when a folder holds a stamp."""
    ref = Path(reference_dir) if reference_dir else default_dir()
    now = None
    for out in outs:
        stamp = Path(out) / "reference.json"
        if not stamp.is_file():
            continue
        then = read_json_object(stamp, f"delete {out} (the runs installed there are made again)").get("sha256", {})
        now = now or checkpoint_sha256(ref)
        name = next((n for n in FILES.values() if then.get(n) != now[n]), None)
        if name is None:
            continue
        raise UserError(f"{out}: installed from other reference checkpoints than {ref} holds ({name} sha256 "
                        f"{str(then.get(name))[:12]} there, {now[name][:12]} here), so what was generated beside it "
                        f"came from another generator; give a new out folder to rerun with these checkpoints, or "
                        f"set reference to the folder of the ones it was made with")


def install(reference_dir: str | os.PathLike | None, out: str | os.PathLike, data_root: str | os.PathLike,
            progress: bool = True, provisional_ok: bool = False) -> dict:
    """Write ``out/{stage1,pose,stage2}`` run directories from the verified reference checkpoints, with their data
    paths pointing at ``data_root``, and stage II's real embedding banks computed on that data. Returns the provenance.
    ``provisional_ok``: as for ``provenance`` (the packaging job evaluates what it is packaging).

    Skipped when ``out`` already holds them from the same checkpoints (``out/reference.json``)."""
    ref = Path(reference_dir) if reference_dir else default_dir()
    prov = provenance(ref, provisional_ok)
    out, data_root = Path(out), Path(data_root)
    stamp = out / "reference.json"
    marker = {"reference": str(ref), "sha256": _sha256_of(prov), "data_root": str(data_root)}
    installed = read_json_object(stamp, f"delete {out} (the runs installed there are made again)") \
        if stamp.is_file() else None
    if installed == marker and (out / "stage2" / "embeddings.pt").is_file():
        return prov
    s1_run, pose_run, s2_run = out / "stage1", out / "pose", out / "stage2"

    def data_here(c):
        c["data"]["root"] = str(data_root)
        c["data"]["simulate_ids"] = 0
        c["data"]["unlabelled_roots"] = []  # the other people it trained on stay with the training run

    def runs_here(c):
        c.update(stage1_run=str(s1_run), pose_run=str(pose_run), data_root=str(data_root), unlabelled_roots=[])

    for name, run, edit, cls in (("stage1", s1_run, data_here, Stage1Config), ("pose", pose_run, data_here, PoseConfig),
                                 ("stage2", s2_run, runs_here, Stage2Config)):
        snap = _install_one(ref / FILES[name], run, edit)
        save_config(from_dict(cls, snap["config"], str(ref / FILES[name])), run / "config.yaml")
    emb = real_embeddings(s1_run, pose_run, data_root, progress=progress)
    atomic_save(emb, s2_run / "embeddings.pt")
    atomic_write_json(stamp, marker)
    return prov


def fp16_error(G32: torch.nn.Module, batch: dict) -> dict:
    """How far fp16 weights move stage I's reconstructions: max and mean |difference| in grey levels (0..255)."""
    G16 = copy.deepcopy(G32)
    G16.load_state_dict({k: v.float() for k, v in half(G32.state_dict()).items()})
    args = (batch["image"], batch["pose_mask"], batch["roi_boxes"], batch["roi_visible"], batch["pose_maps"])
    with torch.no_grad():
        a, b = G32.eval()(*args)[0].clamp(-1, 1), G16.eval()(*args)[0].clamp(-1, 1)
    d = (a - b).abs() * 127.5
    return {"max_grey_levels": round(float(d.max()), 4), "mean_grey_levels": round(float(d.mean()), 5)}
