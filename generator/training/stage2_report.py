"""Stage-II report: embedding quality per factor against held-out real embeddings, and the sample grids.

Uses generator (mappings, decoding, Frechet distance, pose plausibility) and
generator.eval.neighbours (faiss k-NN precision / recall), hence its place in augment.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from generator.api import interpolate
from generator.data.dataset import person_dataset
from generator.eval.embedding_metrics import GaussianBaseline, frechet_distance, plausible_share
from generator.eval.grids import save_grid
from generator.eval.neighbours import knn_precision_recall
from generator.io import atomic_write_text
from generator.models.stage2 import FACTORS
from generator.training.stage2 import load_embeddings, load_stage2, split_holdout


def embedding_quality(run: Path, n: int = 2000, seed: int = 0) -> dict:
    cfg, sampler, model = load_stage2(run)
    emb = load_embeddings(cfg, Path(run), progress=False)  # made again when missing (a run packed without it)
    train_idx, hold_idx = split_holdout(len(emb["fg"]), cfg.train.holdout, cfg.train.seed)
    out = {}
    for f in FACTORS:
        real_train, real_hold = emb[f][train_idx], emb[f][hold_idx]
        m = min(n, max(len(real_hold), 200))
        # the training embeddings themselves (drawn with replacement only where there are fewer than m): what a
        # perfect sampler of the training distribution scores against these held-out embeddings
        g = torch.Generator().manual_seed(seed)
        draw = (torch.randperm(len(real_train), generator=g)[:m] if m <= len(real_train)
                else torch.randint(len(real_train), (m,), generator=g))
        samples = {"mapping": sampler.sample(f, m, seed).cpu(),
                   "gaussian": GaussianBaseline(real_train).sample(m, seed), "real_train": real_train[draw]}
        for who, x in samples.items():
            p, r = knn_precision_recall(real_hold.numpy(), x.numpy(), k=3)
            rec = {"frechet": frechet_distance(real_hold.numpy(), x.numpy()), "precision": p, "recall": r}
            if f == "pose":
                kps = model.keypoints_from_pose(x).cpu().numpy()
                rec["plausible"] = plausible_share(kps, emb["keypoints"][train_idx].numpy())
            out[f"{f}/{who}"] = rec
    real_kps = emb["keypoints"][hold_idx].numpy()
    out["pose/real_heldout"] = {"plausible": plausible_share(real_kps, emb["keypoints"][train_idx].numpy())}
    out["heldout"] = int(len(hold_idx))
    return out


def quality_table(q: dict) -> str:
    lines = [f"Embedding quality against {q['heldout']} held-out real embeddings per factor "
             "(Frechet distance lower is better; k-NN precision / recall, k=3, higher is better). The training "
             "embeddings themselves (resampled) score what a perfect sampler would. A Gaussian fitted to them takes "
             "their mean and covariance, all that the Frechet distance compares, so it scores about as well as they "
             "do on it, or better: compare a mapping with them on precision and recall:", "",
             "| factor | sampler | Frechet | precision | recall | plausible poses |",
             "| --- | --- | --- | --- | --- | --- |"]
    names = {"mapping": "mapping", "gaussian": "gaussian", "real_train": "training embeddings"}
    for f in FACTORS:
        for who in (w for w in names if f"{f}/{w}" in q):  # a report of an older run may lack real_train
            r = q[f"{f}/{who}"]
            lines.append(f"| {f} | {names[who]} | {r['frechet']:.4f} | {r['precision']:.3f} | {r['recall']:.3f} | "
                         + (f"{r['plausible']:.3f} |" if "plausible" in r else "|"))
    lines.append(f"| pose | real held-out | | | | {q['pose/real_heldout']['plausible']:.3f} |")
    return "\n".join(lines) + "\n"


def _save(images: list[torch.Tensor], nrow: int, path: Path) -> None:
    save_grid(torch.cat([i.float().cpu() for i in images]), nrow, path)


# what `sample_grids` and `report` write to their folders
SAMPLE_FILES = ("a_sampled_people.png", "b_identities.png", "c_resampled_factors.png", "d_interpolation.png")
REPORT_FILES = ("metrics.json", "metrics.md")


@torch.no_grad()
def sample_grids(run: Path, out_dir: Path, seed: int = 0, cols: int = 8, rows: int = 4) -> list[Path]:
    """(a) sampled people, (b) identities: one fg under sampled bg and pose, (c) a real image with each factor
    resampled, (d) interpolation strips per factor."""
    cfg, sampler, model = load_stage2(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = cols * rows
    fg, bg, pose = (sampler.sample(f, n, seed + i) for i, f in enumerate(FACTORS))
    _save([model.decode(fg, bg, pose)], cols, out_dir / "a_sampled_people.png")
    ids = sampler.sample("fg", rows, seed + 10).repeat_interleave(cols, 0)
    _save([model.decode(ids, sampler.sample("bg", n, seed + 11), sampler.sample("pose", n, seed + 12))], cols,
          out_dir / "b_identities.png")

    root = cfg.data_root or model.data.root  # stage I's snapshot's own (stage1_run may be a snapshot file)
    ds = person_dataset(root, ("query",), size=model.size, heatmap_radius=model.heatmap_radius,
                        mask_radius=model.mask_radius)
    b = torch.utils.data.default_collate([ds.item(i)
                                          for i in np.linspace(0, len(ds) - 1, min(rows, len(ds))).astype(int)])
    f = model.encode(b["image"], b["keypoints"])
    recon = model.render(f)
    rows_c = []  # per real person, one row per factor: real | reconstruction | that factor resampled
    for i in range(len(f)):
        k = cols - 2
        for j, factor in enumerate(FACTORS):
            e = {"fg": f.fg[i:i + 1].repeat(k, 1), "bg": f.bg[i:i + 1].repeat(k, 1),
                 "pose": f.keypoints[i:i + 1].repeat(k, 1, 1)}
            e[factor] = sampler.sample(factor, k, seed + 100 + 10 * i + j)
            rows_c.append(torch.cat([b["image"][i:i + 1], recon[i:i + 1], model.decode(e["fg"], e["bg"], e["pose"])]))
    _save(rows_c, cols, out_dir / "c_resampled_factors.png")

    base_fg, base_bg, base_pose = (sampler.sample(x, 1, seed + 200 + i) for i, x in enumerate(FACTORS))
    strips = []
    for i, factor in enumerate(FACTORS):
        a, z = sampler.sample(factor, 2, seed + 300 + i)
        path = interpolate(a, z, cols)
        e = {"fg": base_fg.repeat(cols, 1), "bg": base_bg.repeat(cols, 1), "pose": base_pose.repeat(cols, 1)}
        e[factor] = path
        strips.append(model.decode(e["fg"], e["bg"], e["pose"]))
    _save(strips, cols, out_dir / "d_interpolation.png")
    return sorted(out_dir.glob("[abcd]_*.png"))


def report(run: Path, out_dir: Path | None = None, seed: int = 0) -> dict:
    out_dir = out_dir or Path(run) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").unlink(missing_ok=True)  # an earlier run's marker: until this one ends, unfinished
    q = embedding_quality(run, seed=seed)
    atomic_write_text(out_dir / "metrics.md", quality_table(q))
    atomic_write_text(out_dir / "metrics.json", json.dumps(q, indent=1))  # last: the pipeline's finished marker
    return q
