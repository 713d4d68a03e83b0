"""Stage-I evaluation: reconstruction SSIM / mask-SSIM, and on SimMarket the counterfactual swap score.

Whole-image SSIM rewards blur (a person-free average image scores well on small
people over flat backgrounds), so each swap is scored by region against
SimMarket's true render of the swapped combination, beside the copy-the-source
baseline (return the source image unchanged):

| swap | generated | truth | region |
| pose | fg A, bg A, pose B | render(A, pose B, bg A) | union of the true person masks of source and truth |
| background | fg A, bg B, pose A | render(A, pose A, bg B) | outside the person |
| foreground | fg B, bg A, pose A | render(B, pose A, bg A) | inside the person |
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from generator.api import DisentangledModel
from generator.data.dataset import load_image, person_dataset
from generator.data.keypoints import read_keypoints_csv, yx_to_rcv
from generator.data.layouts import keypoint_file
from generator.errors import UserError
from generator.eval.grids import save_grid, swap_grid
from generator.eval.image_metrics import edge_energy, mask_ssim, nan_mean, region_scores, ssim, to01
from generator.io import atomic_write_json, atomic_write_text
from generator.simmarket.simulate import SimMarket

METRIC_DEFINITIONS = {
    1: "SSIM averaged over the whole map, its 5-pixel border reflect-padded; images without a person scored "
       "(mask-SSIM 1, person-region SSIM 0)",
    2: "SSIM over the valid part of the map, border cropped (scikit-image / torchmetrics, Gaussian window 11, "
       "sigma 1.5); images without a person left out of mask-SSIM and person-region SSIM, and counted",
}
METRICS_VERSION = 2  # metrics.json files without a version are version 1


def reconstruction_metrics(model: DisentangledModel, root, limit: int = 512, batch: int = 32,
                           splits: tuple[str, ...] = ("query", "gallery")) -> dict:
    """SSIM of reconstructions of ``limit`` images of ``splits`` (default: held-out), whole, inside the pose mask
    (person) and outside it (background), and mask-SSIM. Images without a person (an empty pose mask: distractors,
    or keypoints all undetected) are left out of mask-SSIM and person SSIM; ``without_person`` counts them.
    ``person_sharpness``: the reconstructions' edge energy inside the pose mask over the real images' (1: as
    sharp as the truth; blur lowers it)."""
    ds = person_dataset(root, splits, size=model.size, heatmap_radius=model.heatmap_radius,
                        mask_radius=model.mask_radius)
    idx = np.random.default_rng(0).permutation(len(ds))[:limit]
    acc: dict[str, list] = {"ssim": [], "mask_ssim": [], "person_ssim": [], "background_ssim": []}
    energy = []  # (generated, true) edge energy inside the person, per batch
    for s in range(0, len(idx), batch):
        b = torch.utils.data.default_collate([ds.item(int(i)) for i in idx[s:s + batch]])
        f = model.encode(b["image"], b["keypoints"])
        rec = to01(model.render(f))
        real = to01(b["image"])
        person = b["pose_mask"][:, 0] > 0.5
        acc["ssim"].append(ssim(rec, real))
        acc["mask_ssim"].append(mask_ssim(rec, real, b["pose_mask"]))
        acc["person_ssim"].append(region_scores(rec, real, person)["ssim"])
        acc["background_ssim"].append(region_scores(rec, real, ~person)["ssim"])
        energy.append(torch.stack([edge_energy(rec, person), edge_energy(real, person)]))
    out = {"images": int(len(idx)), "metrics_version": METRICS_VERSION}
    for k, v in acc.items():
        out[k], left_out = nan_mean(torch.cat(v))
        if k == "mask_ssim":
            out["without_person"] = left_out
    generated, truth = torch.cat(energy, 1).sum(1).tolist()
    out["person_sharpness"] = generated / truth if truth > 0 else float("nan")
    return out


def swap_pairs(sim, n_pairs: int, seed: int = 0) -> list[tuple[str, str]]:
    """Held-out (A, B) pairs of different people, whole-bodied and unoccluded, so that the truth is well defined."""
    m = sim.manifest
    ok = m[(m.split != "train") & (m.pid > 0) & (~m.occluded) & (~m.truncated) & (m.visible_joints >= 14)]
    names = [p.split("/")[-1] for p in ok.path]
    pids = ok.pid.to_numpy()
    rng = np.random.default_rng(seed)
    pairs = []
    if len(set(pids.tolist())) < 2:  # no pair of different people to draw
        return pairs
    for _ in range(n_pairs * 20):
        if len(pairs) >= n_pairs:
            break
        i, j = rng.integers(len(names), size=2)
        if pids[i] != pids[j]:
            pairs.append((names[i], names[j]))
    return pairs


def counterfactual_metrics(model: DisentangledModel, root, n_pairs: int = 200, batch: int = 32,
                           grid_path: Path | None = None) -> dict:
    sim = SimMarket(root)
    if (sim.meta["height"], sim.meta["width"]) != tuple(model.size):
        raise ValueError(f"SimMarket at {root} is {sim.meta['height']}x{sim.meta['width']}, the model {model.size}")
    # rows by file name: SimMarket's names are unique in every layout it writes (an MSMT17 row names a sub-path)
    kp = {Path(k).name: v for k, v in read_keypoints_csv(keypoint_file(root, "query")).items()}
    pairs = swap_pairs(sim, n_pairs)

    def t(a):
        return torch.from_numpy(np.stack(a))

    def load(names):
        images = t([load_image(str(Path(root) / sim.manifest.path[sim.row(n)])) for n in names])
        return images.permute(0, 3, 1, 2).float() / 127.5 - 1

    acc: dict[str, list] = {}
    grid_rows = None
    for s in range(0, len(pairs), batch):
        chunk = pairs[s:s + batch]
        A, B = [a for a, _ in chunk], [b for _, b in chunk]
        img_a, img_b = load(A), load(B)
        kp_a = t([yx_to_rcv(kp[n]) for n in A]).float()
        kp_b = t([yx_to_rcv(kp[n]) for n in B]).float()
        fa, fb = model.encode(img_a, kp_a), model.encode(img_b, kp_b)
        gen = {
            "pose": model.decode(fa.fg, fa.bg, fb.keypoints),
            "background": model.decode(fa.fg, fb.bg, fa.keypoints),
            "foreground": model.decode(fb.fg, fa.bg, fa.keypoints),
        }
        renders = {k: [] for k in ("source", "pose", "background", "foreground")}
        for a, b in chunk:
            renders["source"].append(sim.render(a, a, a))
            renders["pose"].append(sim.render(a, b, a))
            renders["background"].append(sim.render(a, a, b))
            renders["foreground"].append(sim.render(b, a, a))
        truth = {k: t([r.image for r in v]).permute(0, 3, 1, 2).float() / 255 for k, v in renders.items()}
        pmask = {k: t([r.person_mask for r in v]) for k, v in renders.items()}
        person_a = torch.from_numpy(np.stack([ndimage.binary_dilation(m, iterations=1)
                                              for m in pmask["source"].numpy()]))
        regions = {
            "pose": pmask["source"] | pmask["pose"],
            "background": ~(person_a | pmask["background"]),
            "foreground": pmask["foreground"],
        }
        src = to01(img_a)
        for k in ("pose", "background", "foreground"):
            g, tr, reg = to01(gen[k]), truth[k], regions[k]
            for who, img in (("model", g), ("copy_source", src)):
                sc = region_scores(img, tr, reg)
                sc["whole_ssim"] = ssim(img, tr)
                sc["mask_ssim"] = (mask_ssim(img, tr, reg[:, None].float()) if k != "background"
                                   else mask_ssim(img, tr, (~reg)[:, None].float()))
                for name, v in sc.items():
                    acc.setdefault(f"{k}/{who}/{name}", []).append(v)
        if grid_rows is None:
            n = min(8, len(chunk))
            grid_rows = [src[:n], to01(img_b)[:n]] + [x for k in ("pose", "background", "foreground")
                                                      for x in (to01(gen[k])[:n], truth[k][:n])]
    metrics = {k: nan_mean(torch.cat(v))[0] for k, v in acc.items()}
    metrics["pairs"] = len(pairs)
    metrics["metrics_version"] = METRICS_VERSION
    if grid_path is not None and grid_rows is not None:
        save_grid(torch.cat(grid_rows) * 2 - 1, len(grid_rows[0]), grid_path)
    return metrics


REGION = {"pose": "inside the true person masks", "background": "outside the person", "foreground": "inside the person"}


def _left_out(recon: dict) -> str:
    n = recon.get("without_person", 0)
    return f" ({n} images without a person left out of the person scores)" if n else ""


def metrics_table(recon: dict, swaps: dict | None) -> str:
    lines = ["| metric | model |", "| --- | --- |",
             f"| reconstruction SSIM ({recon['images']} held-out images) | {recon['ssim']:.3f} |",
             f"| reconstruction mask-SSIM{_left_out(recon)} | {recon['mask_ssim']:.3f} |"]
    lines += [f"| reconstruction SSIM inside the person / outside{_left_out(recon)} | {recon['person_ssim']:.3f} / "
              f"{recon['background_ssim']:.3f} |"]
    if "person_sharpness" in recon:
        lines.append(f"| person sharpness (edge energy inside the person over the truth's; 1: as sharp) | "
                     f"{recon['person_sharpness']:.3f} |")
    lines.append("")
    if swaps:
        lines += [f"Counterfactual swaps on {swaps['pairs']} held-out SimMarket pairs, scored against the true render "
                  "(L1 and colour error in grey levels, lower is better; SSIM higher is better):", "",
                  "| swap | scored | metric | model | copy the source |", "| --- | --- | --- | --- | --- |"]
        for k in ("pose", "background", "foreground"):
            for name in ("l1", "colour", "ssim", "mask_ssim", "whole_ssim"):
                if k == "background" and name == "colour":
                    continue
                mv, bv = swaps[f"{k}/model/{name}"], swaps[f"{k}/copy_source/{name}"]
                better = (mv < bv) if name in ("l1", "colour") else (mv > bv)
                where = (REGION[k] if name in ("l1", "colour", "ssim")
                         else ("whole image" if name == "whole_ssim" else "masked image"))
                lines.append(f"| {k} | {where} | {name} | {mv:.3f}{' *' if better else ''} | {bv:.3f} |")
        lines += ["", "`*`: the model beats copying the source."]
    return "\n".join(lines) + "\n"


def held_out_people(model: DisentangledModel, root, n: int = 8) -> dict:
    """``n`` held-out query images of different people (names sort by identity) as one batch, with the pose
    inputs of stage I computed from their keypoints."""
    ds = person_dataset(root, ("query",), size=model.size, heatmap_radius=model.heatmap_radius,
                        mask_radius=model.mask_radius)
    idx = np.linspace(0, len(ds) - 1, min(n, len(ds))).astype(int)
    b = torch.utils.data.default_collate([ds.item(int(i)) for i in idx])
    maps, mask, boxes, vis = model.pose_inputs(b["keypoints"])
    return {"image": b["image"].to(model.device), "pose_maps": maps, "pose_mask": mask, "roi_boxes": boxes,
            "roi_visible": vis}


def held_out_batch(root: Path, size, heatmap_radius: int, mask_radius: int, n: int, fmt: str = "auto",
                   fmt_key: str | None = None) -> dict:
    """A fixed batch of ``n`` held-out (query + gallery) images for the periodic SSIM check during training; a
    UserError says why there is none. ``fmt``: the dataset layout (generator.data.layouts)."""
    ds = person_dataset(root, ("query", "gallery"), size=size, heatmap_radius=heatmap_radius,
                        mask_radius=mask_radius, fmt=fmt, fmt_key=fmt_key)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n].tolist()
    return torch.utils.data.default_collate([ds.item(i) for i in idx])


def held_out_ssim(G, batch: dict, chunk: int = 32) -> dict:
    """Reconstruction SSIM and mask-SSIM of ``batch`` (the measure of the stage-I evaluation; images without a
    person are left out of mask-SSIM and counted in ``eval_without_person``)."""
    ssims, mssims = [], []
    with torch.no_grad():
        for s in range(0, len(batch["image"]), chunk):
            b = {k: v[s:s + chunk] for k, v in batch.items() if torch.is_tensor(v)}
            rec = (G(b["image"], b["pose_mask"], b["roi_boxes"], b["roi_visible"], b["pose_maps"])[0].float().cpu()
                   .clamp(-1, 1) + 1) / 2
            real = (b["image"].float().cpu() + 1) / 2
            ssims.append(ssim(rec, real))
            mssims.append(mask_ssim(rec, real, b["pose_mask"].float().cpu()))
    mask_mean, left_out = nan_mean(torch.cat(mssims))
    return {"eval_ssim": round(float(torch.cat(ssims).mean()), 5), "eval_mask_ssim": round(mask_mean, 5),
            "eval_without_person": left_out, "metrics_version": METRICS_VERSION}


# what `evaluate` writes to its folder
EVAL_FILES = ("grid.png", "swaps.png", "metrics.json", "metrics.md")


def evaluate(stage1_run, data_root, out_dir: Path, pairs: int = 200, limit: int = 512) -> dict:
    """Write ``metrics.json``, ``metrics.md``, ``grid.png`` (held-out input | reconstruction | fg / bg / pose swap)
    and ``swaps.png`` (swaps beside the true renders) to ``out_dir``; returns the metrics."""
    model = DisentangledModel.load(stage1_run)
    simmarket = (Path(data_root) / "simmarket.json").exists()
    if simmarket and not swap_pairs(SimMarket(data_root), 1):
        raise UserError(f"{data_root}: its held-out split has fewer than 2 different whole, unoccluded people, and "
                        "the swap scores compare pairs of them; evaluate on a SimMarket with more test identities "
                        "(vmarket simulate --ids)")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").unlink(missing_ok=True)  # an earlier run's marker: until this one ends, unfinished
    people = held_out_people(model, data_root)
    save_grid(swap_grid(model.G, people), len(people["image"]), out_dir / "grid.png")
    recon = reconstruction_metrics(model, data_root, limit)
    swaps = None
    if simmarket:
        swaps = counterfactual_metrics(model, data_root, pairs, grid_path=out_dir / "swaps.png")
    result = {"reconstruction": recon, "swaps": swaps}
    atomic_write_text(out_dir / "metrics.md", metrics_table(recon, swaps))
    atomic_write_json(out_dir / "metrics.json", result)  # last: a rerun takes it as the finished evaluation
    return result
