"""The reference re-ID ablation (``make reference-reid``): does the generator make re-ID better, and does it beat
the recipes that need no generator?

For each data regime (full camera coverage, and every training identity limited to k cameras) it simulates
SimMarket, installs the shipped reference generator on that data (rendered once more at the generator's size
when re-ID trains at another), makes the generated sources the recipes use
(generator remixes of the real identities, new identities, the cut-and-paste baseline and the hybrid of real
people over generated background plates, each optionally passed through the identity-consistency filter), and
trains every recipe over the same seeds at the same real-sample budget (iteration-matched: generated images are
appended to the real-only run's batches, ``reid.mixed``). Runs go seed by seed, so a partial ablation already
holds complete paired comparisons; every run resumes after a kill and finished ones are reused.

Outputs: ``out/ablation.csv`` (one row per recipe x regime x seed), ``out/ablation.md`` (mean ± std, and the
paired difference to ``real`` and to ``cutpaste`` with its standard error), ``out/cmc.png`` and ``out/curve.png``
(real-only's learning curve: where it plateaus), ``out/provenance.json``; ``--package`` copies them to
``reid/reference/`` and the figures to ``docs/``.
"""
from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import platform
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from augment.builder import BuildConfig, build, is_complete
from augment.cutpaste import SOURCE_PLATES, cut_paste
from augment.pipeline import simulate_data
from augment.reference import git_commit, repo_relative
from generator.config import ConfigValueError, save_config, to_dict
from generator.errors import UserError
from generator.io import atomic_path, atomic_write_text, check_output_folder
from generator.shipped import install, model_size
from generator.simmarket.dataset import simulate
from reid.ablation import AblationConfig, finished_result, paired, run_ablation, save_figure, stage_dir
from reid.consistency import filter_generated
from reid.torchreid_adapter import market_records, train_batches_per_epoch
from reid.train import ReidTrainConfig, train_sampler

SOURCES = ("", *SOURCE_PLATES, "remix", "new", "hybrid+new")  # a recipe's generated images ('': real-only)
REPO = Path(__file__).resolve().parent.parent
COMMAND = "vmarket reference-reid configs/reference/reid.yaml (make reference-reid)"  # the provenance's default


@dataclass
class Regime:
    name: str = "full"
    train_cameras: int = 0  # SimMarket --train-cameras: 0 keeps every camera, k limits each training identity to k


@dataclass
class Recipe:
    name: str = "real"  # the row's setting in ablation.csv
    setting: str = "real"  # the ablation setting (reid.ablation): real, real+remix, real+new, real+remix+new, A->B
    source: str = ""  # cutpaste | hybrid | inpaint | mixed | remix | new | hybrid+new ('' for real-only)
    share: float = 0.25  # generated share of every batch
    label: Literal["onehot", "smooth", "lsro"] = "smooth"
    epsilon: float = 0.1
    filter: bool = False  # the identity-consistency filter (reid.consistency) on the generated images
    transforms: list[str] | None = None  # None: train.transforms

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ConfigValueError("recipes", f"{self.name}: source {self.source!r} is not one of "
                                              f"{', '.join(repr(s) for s in SOURCES)}")


@dataclass
class ReidReferenceConfig:
    out: str = "outputs/reference/reid"
    sim_ids: int = 200  # SimMarket identities (half train, half test), the data the reference generator trained on
    sim_seed: int = 0
    regimes: list[Regime] = field(default_factory=lambda: [Regime("full", 0), Regime("cameras2", 2)])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    train: ReidTrainConfig = field(default_factory=ReidTrainConfig)
    finetune_epochs: int = 0  # virtual->real: epochs of the fine-tuning stage (0: train.epochs)
    curve_every: int = 2  # the real-only recipe evaluates every that many epochs (its plateau)
    remix_images_per_id: int = 12  # generator remixes per real training identity
    new_identities: int = 300  # new identities (Phi_fg samples) and their images each
    new_images_per_id: int = 16
    filter_new_tau: float = 0.9  # the filter drops a new-identity image this near (cosine) a real identity
    recipes: list[Recipe] = field(default_factory=lambda: [Recipe()])
    # the real-only recipe that runs first in every seed: it records the learning curve (the plateau), and its model
    # of the same seed scores the identity-consistency filter
    anchor: str = "real"
    reference: str = ""  # generator checkpoints ('' = those shipped with the package)
    package: str = "reid/reference"  # where --package copies the table, rows and provenance (in the repository)
    figures: str = "docs/reid_reference"  # and the figures: <figures>_cmc.png, <figures>_curve.png

    def __post_init__(self):
        names = [r.name for r in self.recipes]
        if len(set(names)) != len(names):
            raise ConfigValueError("recipes", f"recipe names repeat: {names}")
        for need in ("real", "cutpaste"):
            if need not in names:
                raise ConfigValueError("recipes", f"no recipe named {need!r}: the table compares every recipe "
                                                  f"with it")
        anchor = next((r for r in self.recipes if r.name == self.anchor), None)
        if anchor is None or anchor.source or anchor.setting != "real":
            raise ConfigValueError("anchor", f"{self.anchor!r} is not a real-only recipe of the config")
        if len({r.name for r in self.regimes}) != len(self.regimes):
            raise ConfigValueError("regimes", "regime names repeat")


class Sources:
    """The data of one regime, made on first use: SimMarket, the installed generator and each generated source."""

    def __init__(self, cfg: ReidReferenceConfig, regime: Regime, progress: bool, log):
        self.cfg, self.regime, self.progress, self.log = cfg, regime, progress, log
        self.dir = Path(cfg.out) / regime.name
        self.sim = self.dir / "sim"
        self.gen = self.dir / "generator"
        self.made: set[str] = set()  # what this process has made or verified: checked once, not once per run
        self._steps: int | None = None

    def real(self) -> Path:
        if "real" not in self.made and not (self.sim / "simmarket.json").exists():
            s = simulate(self.sim, self.cfg.sim_ids, seed=self.cfg.sim_seed, size=tuple(self.cfg.train.size),
                         overwrite=True, progress=self.progress, train_cameras=self.regime.train_cameras)
            self.log(f"[{self.regime.name}] SimMarket: {s['images']} images, {s['train_ids']} train ids")
        self.made.add("real")
        return self.sim

    def gen_data(self) -> Path:
        """What the generator encodes and remixes: the re-ID data itself when it is at the generator's size, else the
        same people, cameras and poses rendered again at that size (``sim-gen``; the pids agree)."""
        size = model_size(self.cfg.reference or None)
        if size == tuple(self.cfg.train.size):
            return self.real()
        root = self.dir / "sim-gen"
        if "gen_data" not in self.made:
            simulate_data(((root, size),), self.cfg.sim_ids, self.cfg.sim_seed, self.progress, self.log,
                          self.regime.train_cameras)
            self.made.add("gen_data")
        return root

    def generator(self) -> Path:
        if "generator" not in self.made:
            install(self.cfg.reference or None, self.gen, self.gen_data(), self.progress)
            self.made.add("generator")
        return self.gen

    def generated(self, source: str) -> Path:
        """The generated source, made unless ``out`` already holds it from the same settings. A complete source is
        recognised without the generator (paths as given), so a copy of ``out`` verifies on another machine."""
        out = self.dir / "sources" / source
        if source in self.made:
            return out
        if source in SOURCE_PLATES:
            generated = source != "cutpaste"
            if generated and not (out / "cutpaste.json").is_file():
                self.generator()
            cut_paste(self.real(), out, size=tuple(self.cfg.train.size), plates=SOURCE_PLATES[source],
                      stage1_run=self.gen / "stage1" if generated else None, progress=self.progress)
        elif source in ("remix", "new"):
            real = source == "remix"
            bcfg = BuildConfig(stage2_run=str(self.gen / "stage2"), out=str(out),
                               identities=0 if real else self.cfg.new_identities,
                               images_per_id=self.cfg.remix_images_per_id if real else self.cfg.new_images_per_id,
                               fg_mode="real" if real else "sample", bg_sample_share=0.0 if real else 0.5,
                               quality_keep=1.0, seed=self.cfg.sim_seed)
            if not is_complete(bcfg):
                self.generator()
                build(bcfg, progress=self.progress)
        else:
            raise UserError(f"source {source!r}: not one of {', '.join(s for s in SOURCES if s and '+' not in s)}")
        self.made.add(source)
        return out

    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch of every run of this regime (iteration-matched: one pass over the real data)."""
        if self._steps is None:
            real = market_records(self.real(), ("train",))["train"]
            self._steps = train_batches_per_epoch(real, self.cfg.train.batch, train_sampler(self.cfg.train.loss))
        return self._steps

    def prepare(self, recipes: list[Recipe]) -> None:
        """SimMarket and every unfiltered source that ``recipes`` read, made now (before runs in parallel)."""
        self.real()
        for recipe in recipes:
            for part in recipe.source.split("+") if recipe.source else []:
                self.generated(part)

    def filtered(self, source: str, model_state: Path, seed: int) -> Path:
        """``source`` through the identity-consistency filter of the real-only model of ``seed``."""
        out = self.dir / "sources" / f"{source}-filtered-seed{seed}"
        summary = out / "filter_summary.json"
        if summary.is_file():
            scored_by = json.loads(summary.read_text())["model_state"]
            tail = model_state.parts[-5:]  # <anchor>/real/seed<k>/stage0-real/state.pt, wherever ``out`` lies
            if Path(scored_by).parts[-5:] != tail:
                raise UserError(f"{out}: filtered with {scored_by}, not the anchor's model {model_state}; delete "
                                f"{out} and the finished filtered runs of seed {seed}")
        if not out.exists():
            s = filter_generated(model_state, self.real(), self.generated(source), out, self.cfg.train.model,
                                 tuple(self.cfg.train.size), new_tau=self.cfg.filter_new_tau, progress=self.progress)
            self.log(f"[{self.regime.name}] filter on {source}: {s}")
        return out


def _runs(cfg: ReidReferenceConfig, regime: Regime, recipe: str) -> Path:
    """The ablation ``out`` of ``recipe`` in ``regime``."""
    return Path(cfg.out) / regime.name / "runs" / recipe


def _ablation_config(cfg: ReidReferenceConfig, recipe: Recipe, src: Sources, seed: int,
                     data: bool = True) -> AblationConfig:
    """The run's ablation config; ``data=False`` leaves its data paths out (reading finished results only)."""
    train = replace(cfg.train, transforms=list(recipe.transforms or cfg.train.transforms),
                    eval_every=cfg.curve_every if recipe.name == cfg.anchor else 0)
    roots = {"real_root": str(src.real())} if data else {}
    parts = recipe.source.split("+") if recipe.source and data else []
    for part in parts:
        if recipe.filter:
            state = stage_dir(_runs(cfg, src.regime, cfg.anchor), "real", seed) / "state.pt"
            path = src.filtered(part, state, seed)
        else:
            path = src.generated(part)
        roots["virtual_root" if part == "new" else "remix_root"] = str(path)
    return AblationConfig(**roots, settings=[recipe.setting], seeds=[seed], train=train,
                          finetune_epochs=cfg.finetune_epochs, matched_steps=True, virtual_share=recipe.share,
                          virtual_label=recipe.label, virtual_epsilon=recipe.epsilon,
                          out=str(_runs(cfg, src.regime, recipe.name)))


def _row(recipe: Recipe, regime: Regime, seed: int, acfg: AblationConfig, res: dict) -> dict:
    return {"setting": recipe.name, "regime": regime.name, "seed": seed, "recipe": recipe.setting,
            "source": recipe.source, "share": recipe.share if recipe.source else 0.0,
            "label": recipe.label if recipe.source else "", "filter": recipe.filter,
            "transforms": "+".join(acfg.train.transforms), "steps": res["steps"],
            **{k: res[k] for k in ("rank1", "rank5", "mAP", "mINP")}, "device": res.get("device", ""),
            "cmc": res["cmc"], "curve": res.get("curve")}


def _one_run(cfg: ReidReferenceConfig, regime: Regime, recipe: Recipe, seed: int,
             src: Sources) -> tuple[dict, float | None]:
    """The run's row, and the seconds it trained (None: finished before, read from its results, its generated data
    not needed and maybe not on this machine)."""
    t = time.perf_counter()
    acfg = _ablation_config(cfg, recipe, src, seed, data=False)
    res = finished_result(acfg, recipe.setting, seed, steps_per_epoch=src.steps_per_epoch())
    if res is not None:
        return _row(recipe, regime, seed, acfg, res), None
    acfg = _ablation_config(cfg, recipe, src, seed)
    (res,) = run_ablation(acfg, progress=False)
    return _row(recipe, regime, seed, acfg, res), time.perf_counter() - t


def _worker_run(cfg: ReidReferenceConfig, regime: Regime, recipe: Recipe, seed: int, made: set[str],
                threads: int) -> tuple[dict, float]:
    """One run in a worker process; the regime's sources were made by the parent (``made``)."""
    torch.set_num_threads(threads)
    src = Sources(cfg, regime, False, lambda msg: print(msg, flush=True))
    src.made = set(made)
    return _one_run(cfg, regime, recipe, seed, src)


def collect(cfg: ReidReferenceConfig, log=print, command: str = COMMAND) -> pd.DataFrame:
    """The table of the runs finished so far, read from their results (nothing trained, no data read); writes the
    outputs, as ``run`` does (``command``: how the runs are made, for the provenance)."""
    out = Path(cfg.out)
    times_path = out / "times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    recipes = sorted(cfg.recipes, key=lambda r: r.name != cfg.anchor)
    rows = []
    for seed in cfg.seeds:
        for regime in cfg.regimes:
            src = Sources(cfg, regime, False, log)
            for recipe in recipes:
                acfg = _ablation_config(cfg, recipe, src, seed, data=False)
                res = finished_result(acfg, recipe.setting, seed)
                if res is not None:
                    rows.append(_row(recipe, regime, seed, acfg, res))
    if not rows:
        raise UserError(f"{out}: no finished run yet; run `vmarket reference-reid` first")
    write_outputs(cfg, rows, times, command)
    log(f"collected {len(rows)} finished runs of {len(cfg.seeds) * len(cfg.regimes) * len(recipes)}")
    return pd.DataFrame(rows)


def run(cfg: ReidReferenceConfig, progress: bool = True, log=print, only: list[str] | None = None,
        jobs: int = 1, command: str = COMMAND) -> pd.DataFrame:
    """Every recipe x regime x seed (resumable); returns the rows and writes the outputs.
    ``only``: these recipes alone this time (the anchor always runs too: the filter and the plateau need it).
    ``jobs`` = 1 runs seed by seed, so a partial ablation holds complete paired comparisons. ``jobs`` > 1 makes every
    source first, then keeps that many runs going in worker processes (one GPU can hold them all), recipe by recipe
    in the config's order, every seed of one recipe before the next."""
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: use 1 or more")
    out = Path(cfg.out)
    check_output_folder(out, "out")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    times_path = out / "times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    sources = {r.name: Sources(cfg, r, progress, log) for r in cfg.regimes}
    if only:
        unknown = sorted(set(only) - {r.name for r in cfg.recipes})
        if unknown:
            raise UserError(f"--only {','.join(only)}: no recipe named {unknown[0]!r}; the config's recipes are "
                            f"{', '.join(r.name for r in cfg.recipes)}")
    # the filter scores with the anchor's model of the same seed, so the anchor runs first within each seed
    recipes = [r for r in cfg.recipes if not only or r.name in only or r.name == cfg.anchor]
    recipes = sorted(recipes, key=lambda r: r.name != cfg.anchor)
    results: dict[tuple[int, int, int], dict] = {}  # (seed, regime, recipe) index -> row: the sequential order

    def record(key: tuple[int, int, int], row: dict, seconds: float | None) -> None:
        name = f"{row['regime']}/{row['setting']}/seed{row['seed']}"
        if seconds is not None:  # trained now (a reused run keeps the time it took)
            times[name] = round(seconds, 1)
            atomic_write_text(times_path, json.dumps(times, indent=1))
        results[key] = row
        log(f"[{row['regime']}] {row['setting']} seed {row['seed']}: rank-1 {100 * row['rank1']:.1f}, "
            f"mAP {100 * row['mAP']:.1f}")

    def rows() -> list[dict]:
        return [results[k] for k in sorted(results)]

    if jobs == 1:
        for i, seed in enumerate(cfg.seeds):
            for j, regime in enumerate(cfg.regimes):
                for k, recipe in enumerate(recipes):
                    record((i, j, k), *_one_run(cfg, regime, recipe, seed, sources[regime.name]))
                write_outputs(cfg, rows(), times, command)
        return pd.DataFrame(rows())

    for regime in cfg.regimes:
        sources[regime.name].prepare(recipes)
    made = {name: set(src.made) for name, src in sources.items()}
    todo = [(i, j, k) for k in range(len(recipes)) for i in range(len(cfg.seeds)) for j in range(len(cfg.regimes))]
    threads = max(1, torch.get_num_threads() // jobs)  # the cores this process may use, shared out

    def ready(key: tuple[int, int, int]) -> bool:
        """A filtered recipe waits for its seed's anchor model, and for any other filtered run of the same seed
        and regime (two would write one filtered source at once)."""
        if not recipes[key[2]].filter:
            return True
        return (key[0], key[1], 0) in results and not any(
            recipes[k].filter and (i, j) == key[:2] for i, j, k in running.values())

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold CUDA
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        running: dict[concurrent.futures.Future, tuple[int, int, int]] = {}
        while todo or running:
            while len(running) < jobs and (key := next((t for t in todo if ready(t)), None)) is not None:
                todo.remove(key)
                i, j, k = key
                regime = cfg.regimes[j]
                running[pool.submit(_worker_run, cfg, regime, recipes[k], cfg.seeds[i], made[regime.name],
                                    threads)] = key
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            failed = None
            for future in done:
                key = running.pop(future)
                if future.exception() is not None:
                    failed = failed or future.exception()
                else:
                    record(key, *future.result())
            write_outputs(cfg, rows(), times, command)
            if failed is not None:  # the finished runs are kept; the queued ones never start
                pool.shutdown(wait=True, cancel_futures=True)
                raise failed
    return pd.DataFrame(rows())


def best_real_only(df: pd.DataFrame, regime: str) -> str:
    """The real-only setting (no generated source) with the highest mean rank-1 in ``regime``: the anchor
    every recipe is compared with is real-only training with the best standard transforms, whichever set wins."""
    g = df[df.regime == regime]
    if "source" in g:
        g = g[g.source.fillna("") == ""]
    means = g.groupby("setting", sort=False).rank1.mean()
    return str(means.idxmax()) if len(means) else "real"


def summary_table(df: pd.DataFrame) -> str:
    """Mean ± std of every setting, and its paired differences to `real` and `cutpaste`; also to the best real-only
    setting (by mean rank-1) where that is not `real` in some regime: `real` is meant to be real-only with the best
    standard transforms, and the table shows it when the data say otherwise."""
    regimes = list(dict.fromkeys(df.regime))
    best = {regime: best_real_only(df, regime) for regime in regimes}
    extra = any(b != "real" for b in best.values())
    lines = ["| regime | setting | seeds | rank-1 | mAP | mINP | rank-1 vs real | mAP vs real | rank-1 vs cutpaste "
             "| mAP vs cutpaste |" + (" rank-1 vs best real-only | mAP vs best real-only |" if extra else ""),
             "| --- " * (12 if extra else 10) + "|"]

    def cell(g, m):
        return f"{100 * g[m].mean():.1f} ± {100 * g[m].std(ddof=0):.1f}" if len(g) > 1 else f"{100 * g[m].mean():.1f}"

    def diff(regime, setting, against, m):
        if setting == against:
            return ""
        mean, se, n = paired(df, regime, setting, against, m)
        if n == 0:
            return ""
        return f"{100 * mean:+.1f} ± {100 * se:.1f}" if n > 1 else f"{100 * mean:+.1f} (1 seed)"

    for regime in regimes:
        for setting, g in df[df.regime == regime].groupby("setting", sort=False):
            against = ["real", "cutpaste"] + ([best[regime]] if extra else [])
            cells = [diff(regime, setting, a, m) for a in against for m in ("rank1", "mAP")]
            lines.append(f"| {regime} | {setting} | {len(g)} | {cell(g, 'rank1')} | {cell(g, 'mAP')} | "
                         f"{cell(g, 'mINP')} | " + " | ".join(cells) + " |")
    bests = ", ".join(f"{regime}: `{name}`" for regime, name in best.items())
    return ("\n".join(lines) + "\n\n(percent; mean ± std over seeds; differences are paired by seed, mean ± standard "
            f"error; evaluated on the real query / gallery of each regime; best real-only (highest mean rank-1 of the "
            f"settings without generated images): {bests})\n")


def plateau(df: pd.DataFrame, regime: str, setting: str) -> dict:
    """The mean learning curve of real-only ``setting`` over seeds in ``regime``, and the first epoch whose rank-1 is
    within one standard error (at least 1 point) of the curve's best: where rank-1 stops rising."""
    curves = [c for c in df[(df.regime == regime) & (df.setting == setting)]["curve"] if c]
    if not curves:
        return {}
    epochs = [p["epoch"] for p in curves[0]]
    r1 = np.array([[p["rank1"] for p in c] for c in curves if [p["epoch"] for p in c] == epochs])
    mean = r1.mean(0)
    se = r1.std(0, ddof=1) / np.sqrt(len(r1)) if len(r1) > 1 else np.zeros_like(mean)
    best = int(mean.argmax())
    stop = next(i for i in range(len(mean)) if mean[i] >= mean[best] - max(se[best], 0.01))
    return {"setting": setting, "epochs": epochs, "rank1_mean": [round(float(v), 4) for v in mean], "seeds": len(r1),
            "best_epoch": epochs[best], "plateau_epoch": epochs[stop]}


def _figures(df: pd.DataFrame, plateaus: dict[str, dict], anchor: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = list(dict.fromkeys(df.regime))
    fig, axes = plt.subplots(1, len(regimes), figsize=(5 * len(regimes), 3.8), dpi=120, squeeze=False)
    for ax, regime in zip(axes[0], regimes, strict=True):
        for setting, g in df[df.regime == regime].groupby("setting", sort=False):
            cmc = 100 * np.array(list(g["cmc"])).mean(0)
            ax.plot(np.arange(1, len(cmc) + 1), cmc, marker="o", markersize=2.5, label=f"{setting} ({len(g)})")
        ax.set(xlabel="rank", ylabel="matching rate (%)", title=f"CMC, {regime}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, out / "cmc.png")
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for regime, p in plateaus.items():
        if p:
            ax.plot(p["epochs"], [100 * v for v in p["rank1_mean"]], marker="o", markersize=3,
                    label=f"{regime} (plateau at epoch {p['plateau_epoch']})")
    ax.set(xlabel="epoch", ylabel="rank-1 (%)", title=f"real only ({anchor}): learning curve, mean over seeds")
    ax.grid(alpha=0.3)
    if any(plateaus.values()):
        ax.legend(fontsize=8)
    save_figure(fig, out / "curve.png")


def write_outputs(cfg: ReidReferenceConfig, rows: list[dict], times: dict, command: str) -> None:
    out = Path(cfg.out)
    df = pd.DataFrame(rows)
    with atomic_path(out / "ablation.csv") as tmp:
        df.drop(columns=["cmc", "curve"]).to_csv(tmp, index=False, float_format="%.6f")
    atomic_write_text(out / "ablation.md", summary_table(df))
    plateaus = {r.name: plateau(df, r.name, cfg.anchor) for r in cfg.regimes}
    _figures(df, plateaus, cfg.anchor, out)
    filters = {}
    for p in sorted(out.glob("*/sources/*-filtered-seed*/filter_summary.json")):
        filters[f"{p.parent.parent.parent.name}/{p.parent.name}"] = json.loads(p.read_text())
    prov = {"command": command,
            "config": repo_relative(to_dict(cfg)), "commit": git_commit(), "torch": torch.__version__,
            "machine": {"platform": platform.platform(), "processor": platform.machine(),
                        "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
            "run_devices": df.device.value_counts().to_dict() if len(df) else {},
            "date": time.strftime("%Y-%m-%d"), "runs": len(df),
            # seconds each run trained, where it trained; under --jobs runs overlap, so the sum is not elapsed time
            "run_seconds_sum": round(sum(times.values()), 1), "run_seconds": times, "plateau": plateaus,
            "filters": filters}
    atomic_write_text(out / "provenance.json", json.dumps(prov, indent=1, default=str))


def package(cfg: ReidReferenceConfig, log=print) -> None:
    """Copy the ablation's table, rows and provenance to ``package`` (``reid/reference/``) and its figures beside
    ``figures`` (``docs/reid_reference_{cmc,curve}.png``), both in the repository."""
    out = Path(cfg.out)
    if not (out / "ablation.csv").exists():
        raise UserError(f"{out}: no ablation.csv yet; run `vmarket reference-reid` first")
    dest, figs = REPO / cfg.package, REPO / cfg.figures
    dest.mkdir(parents=True, exist_ok=True)
    figs.parent.mkdir(parents=True, exist_ok=True)
    for name in ("ablation.csv", "ablation.md", "provenance.json"):
        shutil.copyfile(out / name, dest / name)
    for name in ("cmc", "curve"):
        shutil.copyfile(out / f"{name}.png", figs.with_name(f"{figs.name}_{name}.png"))
    log(f"packaged {out} -> {dest} and {figs.parent}/")
