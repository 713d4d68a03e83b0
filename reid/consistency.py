"""The identity-consistency filter: a re-ID model trained on the real data vets the generated training images.

A generated image only helps re-ID training when it shows the identity it is labelled with. A remix that drifted
towards another person, or a "new" identity that is really a copy of a real one, teaches the model a wrong label.
So every generated image is scored by a re-ID model trained on the real training split (the ``state.pt`` of a
``vmarket reid ablate`` run, e.g. its ``real`` setting), against the identity centroids of the real training
images (the L2-normalised mean of their L2-normalised features):

- an image of a *real* identity (a remix: ``fg_mode: real`` builds, cut-and-paste) is kept iff the cosine-nearest
  real centroid is its own identity's;
- an image of a *new* identity (a Virtual Market identity) is dropped when it falls too near a real identity:
  its cosine similarity to some real centroid is ``new_tau`` or more.

Which images are remixes: the generated folder's ``manifest.csv`` says so per image (``origin`` ``virtual`` is a
new identity; ``remix``, ``cutpaste`` and ``hybrid`` carry a real pid). Without a manifest an image is a remix iff
its pid is a real training pid (new-identity builds number their pids 1..N, so they need their manifest).

The output is a folder of the kept images (hard links where possible) in the generated folder's layout (Market-1501,
or MSMT17's for the outputs made from MSMT17 data: ``MSMT17_V1/train/`` and ``list_train.txt``), usable wherever the
generated folder was (``reid.ablation``'s ``virtual_root`` / ``remix_root``), with the manifest and keypoint rows of the
kept images, ``filter_report.csv`` (the rejection rate per generated identity), ``filter_rejected.csv`` (each
dropped image and why) and ``filter_summary.json``. It is written in ``.OUT.partial`` beside ``OUT`` and renamed
when complete, so a killed or refused run leaves nothing under ``OUT``.

``consistency_keep`` is plain torch and numpy; torchreid is reached through ``reid.torchreid_adapter`` only.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from generator.data.keypoints import read_keypoints_csv, write_keypoints_csv
from generator.data.layouts import (
    KEYPOINT_FILES,
    MSMT17_OUT,
    Msmt17Writer,
    keypoint_dirs,
    manifest_file,
    msmt17_image_dirs,
    msmt17_out_path,
    resolve_layout,
)
from generator.data.manifest import read_manifest, write_manifest
from generator.data.market import SPLIT_DIRS
from generator.device import resolve_device
from generator.errors import UserError
from generator.io import (
    atomic_write_json,
    check_output_folder,
    fresh_work_folder,
    link_or_copy,
    load_checkpoint,
    progress_bar,
    removed_on_failure,
)
from reid.torchreid_adapter import build_model, market_records
from reid.train import ReidTrainConfig

BATCH = 128  # images per forward pass (torchreid's test batch)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # torchreid's default normalisation
REAL_ORIGINS = ("remix", "cutpaste", "hybrid", "inpaint")  # manifest origins of generated images that carry a real pid
NEW_ORIGIN = "virtual"  # manifest origin of a new (Virtual Market) identity
_PARTIAL_MARKER = ".vmarket-filter"  # marks a .OUT.partial folder as an unfinished filter run (ours to clear)


def identity_centroids(features: torch.Tensor, pids: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """(sorted unique pids (K,), (K, D) centroids): per pid, the L2-normalised mean of the L2-normalised features."""
    pids = np.asarray(pids)
    if len(features) != len(pids):
        raise ValueError(f"{len(features)} features but {len(pids)} pids")
    if len(pids) == 0:
        raise ValueError("no features to make centroids of")
    unique, inverse = np.unique(pids, return_inverse=True)
    f = F.normalize(features.float(), dim=1)
    sums = torch.zeros(len(unique), f.shape[1], dtype=f.dtype).index_add_(0, torch.from_numpy(inverse).long(), f)
    return unique, F.normalize(sums, dim=1)


def consistency_keep(gen_feats: torch.Tensor, gen_pids: np.ndarray, real_feats: torch.Tensor, real_pids: np.ndarray,
                     new_tau: float, is_new: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N,) bool keep and (N,) str reasons ('' where kept) for N generated images.

    An image of a real pid is kept iff the cosine-nearest real centroid is its own (a tie with another keeps it);
    else its reason is ``nearer pid X (cos a vs own b)``. An image of a new identity is dropped iff its largest
    cosine similarity to a real centroid is ``new_tau`` or more: ``near real pid X (cos a)``. ``is_new``: which
    images are new identities (default: those whose pid is no real pid).
    """
    gen_pids = np.asarray(gen_pids)
    if len(gen_feats) != len(gen_pids):
        raise ValueError(f"{len(gen_feats)} generated features but {len(gen_pids)} pids")
    n = len(gen_pids)
    keep, reasons = np.ones(n, bool), np.full(n, "", dtype=object)
    if n == 0:
        return keep, reasons.astype(str)
    ids, centroids = identity_centroids(real_feats, real_pids)
    column = {int(p): k for k, p in enumerate(ids)}
    if is_new is None:
        is_new = np.array([int(p) not in column for p in gen_pids], bool)
    is_new = np.asarray(is_new, bool)
    missing = sorted({int(p) for p, new in zip(gen_pids, is_new, strict=True) if not new and int(p) not in column})
    if missing:
        raise ValueError(f"pids {missing[:5]} are marked real identities but have no real features")
    sim = F.normalize(gen_feats.float(), dim=1) @ centroids.T  # (N, K) cosine similarities
    rows = torch.arange(n)
    best_sim, best = sim.max(1)  # the nearest real centroid
    own = torch.tensor([column.get(int(p), 0) for p in gen_pids], dtype=torch.long)
    own_sim = sim[rows, own]
    others = sim.clone()
    others[rows, own] = -float("inf")
    other_sim, other = others.max(1)  # the nearest real centroid of another identity
    new_t = torch.from_numpy(is_new)
    drop = torch.where(new_t, best_sim >= new_tau, other_sim > own_sim).numpy()
    for i in np.flatnonzero(drop):
        keep[i] = False
        if is_new[i]:
            reasons[i] = f"near real pid {int(ids[best[i]])} (cos {float(best_sim[i]):.3f})"
        else:
            reasons[i] = (f"nearer pid {int(ids[other[i]])} "
                          f"(cos {float(other_sim[i]):.3f} vs own {float(own_sim[i]):.3f})")
    return keep, reasons.astype(str)


def eval_transform(size: tuple[int, int]) -> T.Compose:
    """torchreid's test transform (``build_transforms``' ``transform_te``): resize to ``size`` (H, W), to a tensor
    in [0, 1], ImageNet normalisation."""
    return T.Compose([T.Resize(tuple(size)), T.ToTensor(), T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)])


def load_reid_model(state_path: str | os.PathLike, model: str = "osnet_x0_25") -> torch.nn.Module:
    """The re-ID model of a training run's ``state.pt`` (``reid.train``), in eval mode on the CPU; its class count
    is read from the classifier's weights."""
    state = load_checkpoint(state_path)
    weights = state.get("model") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise UserError(f"{state_path}: holds no re-ID model state; pass the state.pt of a `vmarket reid` training run")
    weights = {k.removeprefix("module."): v for k, v in weights.items()}
    if "classifier.weight" not in weights:
        raise UserError(f"{state_path}: the model state has no classifier.weight; pass the state.pt of a "
                        f"`vmarket reid` training run")
    net = build_model(model, int(weights["classifier.weight"].shape[0]), "softmax")
    try:
        net.load_state_dict(weights)
    except RuntimeError:
        raise UserError(f"{state_path}: does not fit model {model!r}; pass the model the run trained "
                        f"(train.model of its config.yaml) with --model-name") from None
    return net.eval()


@torch.no_grad()
def extract_image_features(model: torch.nn.Module, paths: list[str], size: tuple[int, int], device="cpu",
                           progress: bool = True, desc: str = "features") -> torch.Tensor:
    """(N, D) float features of the images at ``paths`` in eval mode, batches of ``BATCH``, torchreid's test
    preprocessing (``eval_transform``)."""
    model.eval()
    transform = eval_transform(size)
    feats = []
    starts = range(0, len(paths), BATCH)
    for start in progress_bar(starts, total=len(starts), desc=desc, unit="batch", enabled=progress, leave=False):
        batch = []
        for p in paths[start:start + BATCH]:
            with Image.open(p) as im:
                batch.append(transform(im.convert("RGB")))
        feats.append(model(torch.stack(batch).to(device)).float().cpu())
    return torch.cat(feats) if feats else torch.empty(0, 0)


# what to do about a generated folder's unreadable manifest.csv
MANIFEST_FIX = "restore it, or remove it (its images are then told apart by pid: a real training pid is a remix)"


def generated_is_new(records: list, generated_root: str | os.PathLike, real_pids: set[int]) -> np.ndarray:
    """(N,) bool: which generated training records ``(path, pid, camid)`` are new identities, from the folder's
    ``manifest.csv`` where it names the image (``origin``), else by the pid (a pid of no real identity)."""
    manifest = manifest_file(generated_root)
    origin: dict[str, str] = {}
    if manifest is not None:
        df = read_manifest(manifest, MANIFEST_FIX)
        if {"path", "origin"} <= set(df.columns):
            origin = {Path(p).name: str(o) for p, o in zip(df["path"], df["origin"], strict=True)}
    out = np.zeros(len(records), bool)
    for i, (path, pid, _) in enumerate(records):
        o = origin.get(Path(path).name)
        if o == NEW_ORIGIN:
            out[i] = True
        elif o in REAL_ORIGINS and pid not in real_pids:
            raise UserError(f"{path}: a {o} of pid {pid}, which is no real training identity of the re-ID data; "
                            f"pass the --real-root the generated images were made from")
        else:
            out[i] = pid not in real_pids
    return out


def filter_generated(state_path: str | os.PathLike, real_root: str | os.PathLike,
                     generated_root: str | os.PathLike, out: str | os.PathLike, model: str | None = None,
                     size: tuple[int, int] | None = None, new_tau: float = 0.9, progress: bool = True,
                     device: str = "auto") -> dict:
    """Score ``generated_root``'s training images with the re-ID model of ``state_path`` (trained on
    ``real_root``'s training split) and write the consistent ones to ``out`` (in ``generated_root``'s layout);
    the summary. ``model`` and ``size`` (None: the run's own, from its ``result.json``; else osnet_x0_25 at
    128x64) must be those the run trained with. Every check runs before anything is written."""
    out = Path(out)
    made, state_path = _check_filter_args(out, Path(state_path), new_tau, size, {
        "--generated": generated_root, "--real-root": real_root, "--model": state_path})
    model, size = _run_settings(state_path, model, size)
    real = market_records(real_root, ("train",), progress=progress)["train"]
    gen = market_records(generated_root, ("train",), progress=progress)["train"]
    real_pids = np.array([p for _, p, _ in real])
    gen_pids = np.array([p for _, p, _ in gen])
    is_new = generated_is_new(gen, generated_root, set(real_pids.tolist()))
    dev = resolve_device(device)
    net = load_reid_model(state_path, model).to(dev)
    real_feats = extract_image_features(net, [r[0] for r in real], size, dev, progress, "real features")
    gen_feats = extract_image_features(net, [r[0] for r in gen], size, dev, progress, "generated features")
    keep, reasons = consistency_keep(gen_feats, gen_pids, real_feats, real_pids, new_tau, is_new)

    decisions, report = filter_decisions(gen, gen_pids, is_new, keep, reasons)
    n, kept = len(gen), int(keep.sum())
    summary = {
        "images": n, "kept": kept, "rejected": n - kept, "rejection_rate": (n - kept) / n,
        "identities": len(report), "identities_emptied": int((report["kept"] == 0).sum()),
        "remix_images": int((~is_new).sum()), "remix_kept": int(keep[~is_new].sum()),
        "new_images": int(is_new.sum()), "new_kept": int(keep[is_new].sum()),
        "new_tau": new_tau, "model_state": str(state_path.resolve()), "model": model, "size": list(size),
        "real_root": str(Path(real_root).resolve()), "real_images": len(real),
        "real_identities": int(len(np.unique(real_pids))), "generated_root": str(Path(generated_root).resolve()),
        "out": str(out), "layout": "msmt17" if resolve_layout(generated_root).format == "msmt17" else "market1501",
    }

    with removed_on_failure(None, out, made):  # a refusal here leaves none of the folders made on the way
        out.parent.mkdir(parents=True, exist_ok=True)
        work = fresh_work_folder(out, _PARTIAL_MARKER, "vmarket filter output")
    with removed_on_failure(work, out, made):
        _write_filtered(work, gen, keep, generated_root, decisions, report, summary)
        (work / _PARTIAL_MARKER).unlink()
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(work, out)
    return summary


def _check_filter_args(out: Path, state_path: Path, new_tau: float, size: tuple[int, int],
                       inputs: dict) -> tuple[Path | None, Path]:
    """(what ``check_output_folder`` made, the state file): the refusals of ``filter_generated`` that need no data
    read (``inputs``: the folders ``out`` must be apart from); a run directory given as ``state_path`` stands for
    its ``state.pt``."""
    # written beside it, then renamed
    made = check_output_folder(out, "--out", beside=True, inputs=inputs, datasets=["--generated", "--real-root"])
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not empty; choose another --out or delete it")
    work = out.parent / f".{out.name}.partial"  # refused now, not after the scoring, when it is no leftover of ours
    if work.exists() and not (work / _PARTIAL_MARKER).is_file():
        raise UserError(f"{work}: exists and is not an unfinished vmarket filter output; delete it")
    if state_path.is_dir():
        state_path = state_path / "state.pt"
    if not state_path.is_file():
        raise UserError(f"{state_path}: re-ID model state missing; pass the state.pt of a `vmarket reid` training run "
                        f"on the real data (e.g. <out>/real/seed0/stage0-real/state.pt)")
    if not -1 <= new_tau <= 1:
        raise UserError(f"--new-tau {new_tau}: a cosine similarity, use a value in [-1, 1]")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise UserError(f"--size {size}: expected (height, width) in pixels")
    return made, state_path


def _run_settings(state_path: Path, model: str | None, size: tuple[int, int] | None) -> tuple[str, tuple[int, int]]:
    """The re-ID model name and input size to score with: those given, checked against the ones the run trained
    with (its ``result.json`` beside ``state_path``, when the run finished), else the run's, else the defaults. A
    model scored at another size than it trained at still runs (global pooling) and silently ranks worse."""
    result = state_path.parent / "result.json"
    size = tuple(size) if size is not None else None
    trained = {}
    if result.is_file():
        try:
            r = json.loads(result.read_text())
            if "model" in r:
                trained["model"] = str(r["model"])
            if "size" in r:
                trained["size"] = tuple(int(v) for v in r["size"])
        except (OSError, ValueError, TypeError, AttributeError):
            raise UserError(f"{result}: not a readable re-ID result (the run's model and size are read from it); "
                            f"rerun or finish the re-ID run, or remove the file and pass --model-name and "
                            f"--size") from None
    show = {"model": str, "size": lambda hw: f"{hw[0]}x{hw[1]}"}
    for key, given, flag in (("model", model, "--model-name"), ("size", size, "--size")):
        if given is None or key not in trained:
            continue
        if given != trained[key]:
            raise UserError(f"{flag} {show[key](given)}: the re-ID run of {state_path} trained with {key} "
                            f"{show[key](trained[key])} ({result}); pass {flag} {show[key](trained[key])} or leave it "
                            f"out")
    default = ReidTrainConfig()  # a run without a result.json: `vmarket reid`'s defaults
    return model or trained.get("model", default.model), size or trained.get("size", tuple(default.size))


def filter_decisions(gen: list, gen_pids: np.ndarray, is_new: np.ndarray, keep: np.ndarray, reasons: np.ndarray
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(decisions, report): one row per generated record ``(path, pid, camid)`` (name, pid, kind new or remix,
    kept, reason), and one per (kind, pid) with its generated, kept and rejected counts and rejection rate."""
    kinds = np.where(is_new, "new", "remix")
    decisions = pd.DataFrame({"name": [Path(r[0]).name for r in gen], "pid": gen_pids, "kind": kinds, "kept": keep,
                              "reason": reasons})
    report = (decisions.groupby(["kind", "pid"], sort=True)
              .agg(generated=("kept", "size"), kept=("kept", "sum")).reset_index())
    report["rejected"] = report["generated"] - report["kept"]
    report["rejection_rate"] = report["rejected"] / report["generated"]
    report = report[["pid", "kind", "generated", "kept", "rejected", "rejection_rate"]]
    return decisions, report


def _write_filtered(work: Path, gen: list, keep: np.ndarray, generated_root: str | os.PathLike,
                    decisions: pd.DataFrame, report: pd.DataFrame, summary: dict) -> None:
    """The filtered folder in ``work``: the split folders with the kept images (hard links where possible), the
    generated folder's manifest and keypoint rows of the kept images, the report, the rejected images, the
    summary and a README."""
    layout = resolve_layout(generated_root)
    kp_file = next((f / KEYPOINT_FILES["train"] for f in keypoint_dirs(layout)
                    if (f / KEYPOINT_FILES["train"]).is_file()), None)

    def kept_keypoints(keys: set) -> dict | None:  # the keypoint rows of the kept images, when the input has any
        return None if kp_file is None else {k: v for k, v in read_keypoints_csv(kp_file).items() if k in keys}

    manifest = manifest_file(generated_root)
    df = read_manifest(manifest, MANIFEST_FIX) if manifest is not None else None
    if df is not None and "path" not in df.columns:
        df = None
    if layout.format == "msmt17":  # as the builder and cut-and-paste write MSMT17 data: entries PPPP/NAME.jpg
        train_dir = msmt17_image_dirs(layout.base)[0].resolve()
        writer = Msmt17Writer(work)
        kept = [(os.path.relpath(path, train_dir), pid) for (path, pid, _), k in zip(gen, keep, strict=True) if k]
        for entry, _ in kept:
            writer.path_for("train", entry).parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(train_dir / entry, writer.path_for("train", entry))
        writer.path_for("train", "").mkdir(parents=True, exist_ok=True)  # there when every image was rejected
        keys = {e for e, _ in kept}  # keypoint rows are keyed by list entry
        writer.write_list([e for e, _ in kept], [p for _, p in kept], kept_keypoints(keys))
        if df is not None:  # the kept rows, their paths now under this folder's MSMT17_V1/train/
            entries = df["path"].map(lambda p: os.path.relpath((manifest.parent / str(p)).resolve(), train_dir))
            df = df[entries.isin(keys)].assign(path=entries[entries.isin(keys)].map(msmt17_out_path))
    else:
        for d in SPLIT_DIRS.values():  # train-only, as the builder and cut-and-paste write it
            (work / d).mkdir()
        train_dir = work / SPLIT_DIRS["train"]
        for (path, _, _), k in zip(gen, keep, strict=True):
            if k:
                link_or_copy(path, train_dir / Path(path).name)
        keys = set(decisions.loc[decisions.kept, "name"])  # keypoint rows are keyed by file name
        if kp_file is not None:
            write_keypoints_csv(work / KEYPOINT_FILES["train"], kept_keypoints(keys))
        if df is not None:
            df = df[df["path"].map(lambda p: str(p).startswith(SPLIT_DIRS["train"] + "/") and Path(p).name in keys)]
    if df is not None:
        write_manifest(df.reset_index(drop=True), work / "manifest.csv")
    report.to_csv(work / "filter_report.csv", index=False)
    decisions.loc[~decisions.kept, ["name", "pid", "kind", "reason"]].to_csv(work / "filter_rejected.csv",
                                                                             index=False)
    atomic_write_json(work / "filter_summary.json", summary)
    (work / "README.txt").write_text(_readme(summary))


FILTERED_IMAGES = {"market1501": "bounding_box_train/",
                   "msmt17": f"{MSMT17_OUT}/train/ and {MSMT17_OUT}/list_train.txt (MSMT17's layout, as generated)"}


def _readme(s: dict) -> str:
    """The filtered folder's README.txt, from its summary ``s``."""
    size = s["size"]
    return "\n".join([
        "Identity-consistency filter of a generated training set, written by virtual-market (vmarket filter).",
        "",
        f"generated: {s['generated_root']} ({s['images']} training images; {s['remix_images']} of real "
        f"identities, {s['new_images']} of new ones)",
        f"re-ID model: {s['model_state']} ({s['model']} at {size[0]}x{size[1]}), centroids of {s['real_images']} real "
        f"training images of {s['real_root']}",
        f"kept: {s['kept']} ({1 - s['rejection_rate']:.1%}); a real identity's image is kept iff its nearest real "
        f"centroid is its own, a new identity's iff its cosine to every real centroid is below {s['new_tau']}",
        "",
        f"files: {FILTERED_IMAGES[s.get('layout', 'market1501')]} (kept images, same names), manifest.csv and "
        "market-annotation-train.csv (their rows, where the generated folder has them), filter_report.csv "
        "(per identity), filter_rejected.csv (per dropped image, with the reason), filter_summary.json.",
    ]) + "\n"
