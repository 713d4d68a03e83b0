"""The reference re-ID ablation (``make reference-reid``): does the generator make re-ID better, and does it beat
the recipes that need no generator?

For each data regime (full camera coverage, and every training identity limited to k cameras) it simulates
SimMarket, installs the shipped reference generator on that data (rendered once more at the generator's size
when re-ID trains at another), makes the generated data the recipes train with, under ``out/<regime>/generated/``
(generator remixes of the real identities, new identities, the cut-and-paste baseline and the hybrid of real
people over generated background plates, each optionally passed through the identity-consistency filter), and
trains every recipe over the same seeds at the same real-sample budget (iteration-matched: generated images are
appended to the real-only run's batches, ``reid.mixed``). Runs go seed by seed, so a partial ablation already
holds complete paired comparisons; every run resumes after a kill and finished ones are reused.

Outputs: ``out/ablation.csv`` (one row per recipe x regime x seed), ``out/ablation.md`` (mean ± std, and the
paired difference to ``real`` and to ``cutpaste`` with its standard error), ``out/cmc.png`` and ``out/curve.png``
(real-only's learning curve: where it plateaus), ``out/provenance.json``; ``--package`` copies them to
``reid/reference/`` and the figures to ``docs/``, and renders the tables of ``docs/results.md`` anew.
"""
from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal

import pandas as pd
import torch

from augment.jobs.ablation_tables import write_outputs
from augment.jobs.steps import simulate_data
from augment.makers.build_config import BuildConfig
from augment.makers.builder import build, is_complete
from augment.makers.cutpaste import cut_paste
from augment.makers.plates import PLATES_OF
from generator.config import ConfigValueError, save_config
from generator.errors import UserError
from generator.io import atomic_write_text, check_output_folder
from generator.shipped import install, model_size
from generator.simmarket.simulate import simulate
from reid.ablation import AblationConfig, finished_result, run_ablation, stage_dir
from reid.consistency import filter_generated
from reid.torchreid_adapter import market_records, train_batches_per_epoch
from reid.train import ReidTrainConfig, train_sampler

GENERATED = ("", *PLATES_OF, "remix", "new", "hybrid+new")  # a recipe's generated data ('': real-only)
COMMAND = "vmarket reference-reid configs/reference/reid.yaml (make reference-reid)"  # the provenance's default


@dataclass
class Regime:
    name: str = "full"
    train_cameras: int = 0  # SimMarket --train-cameras: 0 keeps every camera, k limits each training identity to k


@dataclass
class Recipe:
    name: str = "real"  # the recipe: its row's `recipe` in ablation.csv
    setting: str = "real"  # what reid.ablation trains on: real, real+remix, real+new, real+remix+new, A->B
    generated: str = ""  # cutpaste | hybrid | inpaint | mixed | remix | new | hybrid+new ('' for real-only)
    share: float = 0.25  # generated share of every batch
    label: Literal["onehot", "smooth", "lsro"] = "smooth"
    epsilon: float = 0.1
    filter: bool = False  # the identity-consistency filter (reid.consistency) on the generated images
    transforms: list[str] | None = None  # None: train.transforms
    RENAMED: ClassVar[dict[str, str]] = {"source": "generated"}  # a config's old key -> its key now (refused)

    def __post_init__(self):
        if self.generated not in GENERATED:
            raise ConfigValueError("recipes", f"{self.name}: generated {self.generated!r} is not one of "
                                              f"{', '.join(repr(s) for s in GENERATED)}")


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
        if anchor is None or anchor.generated or anchor.setting != "real":
            raise ConfigValueError("anchor", f"{self.anchor!r} is not a real-only recipe of the config")
        if len({r.name for r in self.regimes}) != len(self.regimes):
            raise ConfigValueError("regimes", "regime names repeat")


class GeneratedData:
    """The data of one regime, made on first use: SimMarket, the installed generator and each generated data set
    (``<out>/<regime>/generated/<name>``)."""

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

    def generated(self, name: str) -> Path:
        """The generated data ``name``, made unless ``out`` already holds it from the same settings. A complete one is
        recognised without the generator (paths as given), so a copy of ``out`` verifies on another machine."""
        out = self.dir / "generated" / name
        if name in self.made:
            return out
        if name in PLATES_OF:
            plates = name != "cutpaste"  # the generator's plates, not the donor images alone
            if plates and not (out / "cutpaste.json").is_file():
                self.generator()
            cut_paste(self.real(), out, size=tuple(self.cfg.train.size), plates=PLATES_OF[name],
                      stage1_run=self.gen / "stage1" if plates else None, progress=self.progress)
        elif name in ("remix", "new"):
            real = name == "remix"
            bcfg = BuildConfig(stage2_run=str(self.gen / "stage2"), out=str(out),
                               identities=0 if real else self.cfg.new_identities,
                               images_per_id=self.cfg.remix_images_per_id if real else self.cfg.new_images_per_id,
                               fg_mode="real" if real else "sample", bg_sample_share=0.0 if real else 0.5,
                               quality_keep=1.0, seed=self.cfg.sim_seed)
            if not is_complete(bcfg):
                self.generator()
                build(bcfg, progress=self.progress)
        else:
            raise UserError(f"generated {name!r}: not one of "
                            f"{', '.join(s for s in GENERATED if s and '+' not in s)}")
        self.made.add(name)
        return out

    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch of every run of this regime (iteration-matched: one pass over the real data)."""
        if self._steps is None:
            real = market_records(self.real(), ("train",))["train"]
            self._steps = train_batches_per_epoch(real, self.cfg.train.batch, train_sampler(self.cfg.train.loss))
        return self._steps

    def prepare(self, recipes: list[Recipe]) -> None:
        """SimMarket and all unfiltered generated data that ``recipes`` read, made now (before runs in parallel)."""
        self.real()
        for recipe in recipes:
            for part in recipe.generated.split("+") if recipe.generated else []:
                self.generated(part)

    def filtered(self, name: str, model_state: Path, seed: int) -> Path:
        """The generated data ``name`` through the identity-consistency filter of the real-only model of ``seed``."""
        out = self.dir / "generated" / f"{name}-filtered-seed{seed}"
        summary = out / "filter_summary.json"
        if summary.is_file():
            scored_by = json.loads(summary.read_text())["model_state"]
            tail = model_state.parts[-5:]  # <anchor>/real/seed<k>/stage0-real/state.pt, wherever ``out`` lies
            if Path(scored_by).parts[-5:] != tail:
                raise UserError(f"{out}: filtered with {scored_by}, not the anchor's model {model_state}; delete "
                                f"{out} and the finished filtered runs of seed {seed}")
        if not out.exists():
            s = filter_generated(model_state, self.real(), self.generated(name), out, self.cfg.train.model,
                                 tuple(self.cfg.train.size), new_tau=self.cfg.filter_new_tau, progress=self.progress)
            self.log(f"[{self.regime.name}] filter on {name}: {s}")
        return out


def _runs(cfg: ReidReferenceConfig, regime: Regime, recipe: str) -> Path:
    """The ablation ``out`` of ``recipe`` in ``regime``."""
    return Path(cfg.out) / regime.name / "runs" / recipe


def _ablation_config(cfg: ReidReferenceConfig, recipe: Recipe, regime_data: GeneratedData, seed: int,
                     data: bool = True) -> AblationConfig:
    """The run's ablation config; ``data=False`` leaves its data paths out (reading finished results only)."""
    train = replace(cfg.train, transforms=list(recipe.transforms or cfg.train.transforms),
                    eval_every=cfg.curve_every if recipe.name == cfg.anchor else 0)
    roots = {"real_root": str(regime_data.real())} if data else {}
    parts = recipe.generated.split("+") if recipe.generated and data else []
    for part in parts:
        if recipe.filter:
            state = stage_dir(_runs(cfg, regime_data.regime, cfg.anchor), "real", seed) / "state.pt"
            path = regime_data.filtered(part, state, seed)
        else:
            path = regime_data.generated(part)
        roots["virtual_root" if part == "new" else "remix_root"] = str(path)
    return AblationConfig(**roots, settings=[recipe.setting], seeds=[seed], train=train,
                          finetune_epochs=cfg.finetune_epochs, matched_steps=True, virtual_share=recipe.share,
                          virtual_label=recipe.label, virtual_epsilon=recipe.epsilon,
                          out=str(_runs(cfg, regime_data.regime, recipe.name)))


def _row(recipe: Recipe, regime: Regime, seed: int, acfg: AblationConfig, res: dict) -> dict:
    return {"recipe": recipe.name, "regime": regime.name, "seed": seed, "setting": recipe.setting,
            "generated": recipe.generated, "share": recipe.share if recipe.generated else 0.0,
            "label": recipe.label if recipe.generated else "", "filter": recipe.filter,
            "transforms": "+".join(acfg.train.transforms), "steps": res["steps"],
            **{k: res[k] for k in ("rank1", "rank5", "mAP", "mINP")}, "device": res.get("device", ""),
            "cmc": res["cmc"], "curve": res.get("curve")}


def _one_run(cfg: ReidReferenceConfig, regime: Regime, recipe: Recipe, seed: int,
             regime_data: GeneratedData) -> tuple[dict, float | None]:
    """The run's row, and the seconds it trained (None: finished before, read from its results, its generated data
    not needed and maybe not on this machine)."""
    t = time.perf_counter()
    acfg = _ablation_config(cfg, recipe, regime_data, seed, data=False)
    res = finished_result(acfg, recipe.setting, seed, steps_per_epoch=regime_data.steps_per_epoch())
    if res is not None:
        return _row(recipe, regime, seed, acfg, res), None
    acfg = _ablation_config(cfg, recipe, regime_data, seed)
    (res,) = run_ablation(acfg, progress=False)
    return _row(recipe, regime, seed, acfg, res), time.perf_counter() - t


def _worker_run(cfg: ReidReferenceConfig, regime: Regime, recipe: Recipe, seed: int, made: set[str],
                threads: int) -> tuple[dict, float]:
    """One run in a worker process; the regime's generated data were made by the parent (``made``)."""
    torch.set_num_threads(threads)
    regime_data = GeneratedData(cfg, regime, False, lambda msg: print(msg, flush=True))
    regime_data.made = set(made)
    return _one_run(cfg, regime, recipe, seed, regime_data)


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
            regime_data = GeneratedData(cfg, regime, False, log)
            for recipe in recipes:
                acfg = _ablation_config(cfg, recipe, regime_data, seed, data=False)
                res = finished_result(acfg, recipe.setting, seed)
                if res is not None:
                    rows.append(_row(recipe, regime, seed, acfg, res))
    if not rows:
        raise UserError(f"{out}: no finished run yet; run `vmarket reference-reid` first")
    write_outputs(cfg, rows, times, command)
    log(f"collected {len(rows)} finished runs of {len(cfg.seeds) * len(cfg.regimes) * len(recipes)}")
    return pd.DataFrame(rows)


class _Results:
    """The rows finished so far, in the sequential order (seed, regime, recipe), and the seconds each run trained
    (``times.json``: a reused run keeps the time it took)."""

    def __init__(self, cfg: ReidReferenceConfig, log, command: str):
        self.cfg, self.log, self.command = cfg, log, command
        self.times_path = Path(cfg.out) / "times.json"
        self.times = json.loads(self.times_path.read_text()) if self.times_path.exists() else {}
        self.by_key: dict[tuple[int, int, int], dict] = {}  # (seed, regime, recipe) index -> row

    def record(self, key: tuple[int, int, int], row: dict, seconds: float | None) -> None:
        name = f"{row['regime']}/{row['recipe']}/seed{row['seed']}"
        if seconds is not None:  # trained now
            self.times[name] = round(seconds, 1)
            atomic_write_text(self.times_path, json.dumps(self.times, indent=1))
        self.by_key[key] = row
        self.log(f"[{row['regime']}] {row['recipe']} seed {row['seed']}: rank-1 {100 * row['rank1']:.1f}, "
                 f"mAP {100 * row['mAP']:.1f}")

    def rows(self) -> list[dict]:
        return [self.by_key[k] for k in sorted(self.by_key)]

    def write(self) -> None:
        write_outputs(self.cfg, self.rows(), self.times, self.command)


def _recipes_to_run(cfg: ReidReferenceConfig, only: list[str] | None) -> list[Recipe]:
    """``only`` (else every recipe) and the anchor, the anchor first: the filter scores with the anchor's model of
    the same seed."""
    if only:
        unknown = sorted(set(only) - {r.name for r in cfg.recipes})
        if unknown:
            raise UserError(f"--only {','.join(only)}: no recipe named {unknown[0]!r}; the config's recipes are "
                            f"{', '.join(r.name for r in cfg.recipes)}")
    recipes = [r for r in cfg.recipes if not only or r.name in only or r.name == cfg.anchor]
    return sorted(recipes, key=lambda r: r.name != cfg.anchor)


def _run_in_workers(cfg: ReidReferenceConfig, recipes: list[Recipe], data: dict, results: _Results,
                    jobs: int) -> None:
    """Every run in ``jobs`` worker processes, recipe by recipe in the config's order, every seed of one recipe
    before the next; the generated data are made first, in this process."""
    for regime in cfg.regimes:
        data[regime.name].prepare(recipes)
    made = {name: set(regime_data.made) for name, regime_data in data.items()}
    todo = [(i, j, k) for k in range(len(recipes)) for i in range(len(cfg.seeds)) for j in range(len(cfg.regimes))]
    threads = max(1, torch.get_num_threads() // jobs)  # the cores this process may use, shared out
    running: dict[concurrent.futures.Future, tuple[int, int, int]] = {}

    def ready(key: tuple[int, int, int]) -> bool:
        """A filtered recipe waits for its seed's anchor model, and for any other filtered run of the same seed
        and regime (two would write one filtered data set at once)."""
        if not recipes[key[2]].filter:
            return True
        return (key[0], key[1], 0) in results.by_key and not any(
            recipes[k].filter and (i, j) == key[:2] for i, j, k in running.values())

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold CUDA
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
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
                    results.record(key, *future.result())
            results.write()
            if failed is not None:  # the finished runs are kept; the queued ones never start
                pool.shutdown(wait=True, cancel_futures=True)
                raise failed


def run(cfg: ReidReferenceConfig, progress: bool = True, log=print, only: list[str] | None = None,
        jobs: int = 1, command: str = COMMAND) -> pd.DataFrame:
    """Every recipe x regime x seed (resumable); returns the rows and writes the outputs.
    ``only``: these recipes alone this time (the anchor always runs too: the filter and the plateau need it).
    ``jobs`` = 1 runs seed by seed, so a partial ablation holds complete paired comparisons. ``jobs`` > 1 makes all
    generated data first, then keeps that many runs going in worker processes (one GPU can hold them all), recipe by
    recipe in the config's order, every seed of one recipe before the next."""
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: use 1 or more")
    out = Path(cfg.out)
    check_output_folder(out, "out")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    results = _Results(cfg, log, command)
    data = {r.name: GeneratedData(cfg, r, progress, log) for r in cfg.regimes}
    recipes = _recipes_to_run(cfg, only)
    if jobs == 1:
        for i, seed in enumerate(cfg.seeds):
            for j, regime in enumerate(cfg.regimes):
                for k, recipe in enumerate(recipes):
                    results.record((i, j, k), *_one_run(cfg, regime, recipe, seed, data[regime.name]))
                results.write()
    else:
        _run_in_workers(cfg, recipes, data, results, jobs)
    return pd.DataFrame(results.rows())


