"""The reference re-ID ablation (``make reference-reid``): does the generator make re-ID better, and does it beat
the recipes that need no generator?

For each SimMarket world (a seed and drawing style: the reference world the generator was trained on, and others
drawn from other seeds) and each data regime (full camera coverage, and every training identity limited to k cameras) it
simulates SimMarket, installs the shipped reference generator on that data (rendered once more at the generator's
size when re-ID trains at another), makes the generated data the recipes train with, under
``out/<world>/<regime>/generated/`` (generator remixes of the real identities, new identities, the cut-and-paste
baseline and the hybrid of real people over generated background plates, each optionally passed through the
identity-consistency filter; a combined recipe appends several of them to every batch, each at its own share and
label treatment), and trains every recipe over the same seeds at the same real-sample budget (iteration-matched:
generated images are appended to the real-only run's batches, ``reid.mixed``). Runs go seed by seed, so a partial
ablation already holds complete paired comparisons; every run resumes after a kill and finished ones are reused,
and so are the shipped ablation's rows of runs trained the same way (``reid_recipes.Shipped``).

Outputs: ``out/ablation.csv`` (one row per recipe x world x regime x seed), ``out/ablation.md`` (mean ± std, and the
paired difference to ``real`` and to ``cutpaste`` with its standard error), ``out/cmc.png``, ``out/curve.png``
(real-only's learning curve: where it plateaus), ``out/pairs.png`` (every recipe's paired difference to ``cutpaste``,
seed by seed), ``out/cmc.csv`` (each run's CMC), ``out/provenance.json``; ``--package`` copies them to
``reid/reference/`` and the figures to ``docs/``, and renders the tables of ``docs/results.md`` anew.
"""
from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import statistics
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from augment.jobs.ablation_tables import write_outputs
from augment.jobs.reid_recipes import (
    FRESH,
    KINDS,
    Recipe,
    Regime,
    ReidReferenceConfig,
    Shipped,
    World,
    read_fresh,
    shipped_seconds,
    shipped_tables,
)
from augment.jobs.steps import simulate_data
from augment.makers.build_config import BuildConfig
from augment.makers.builder import build, is_complete
from augment.makers.cutpaste import cut_paste
from augment.makers.plates import PLATES_OF
from generator.config import save_config
from generator.errors import UserError
from generator.io import atomic_write_text, check_output_folder, read_json_object
from generator.shipped import FILES, check_installed_from, checkpoint_sha256, install, model_size
from generator.simmarket.simulate import simulate
from reid.ablation import AblationConfig, MoreGenerated, finished_result, run_ablation, stage_dir
from reid.consistency import filter_generated
from reid.torchreid_adapter import market_records, train_batches_per_epoch
from reid.train import train_sampler

CONFIG = "configs/reference/reid-48.yaml"  # the shipped generator's ablation: the CLI's default config
COMMAND = f"vmarket reference-reid {CONFIG} (make reference-reid)"  # the provenance's default


class GeneratedData:
    """The data of one world and regime, made on first use: SimMarket, the installed generator and each generated
    data set (``<out>/<world>/<regime>/generated/<name>``)."""

    def __init__(self, cfg: ReidReferenceConfig, world: World, regime: Regime, progress: bool, log):
        self.cfg, self.world, self.regime, self.progress, self.log = cfg, world, regime, progress, log
        self.dir = Path(cfg.out) / world.name / regime.name
        self.tag = f"{world.name}/{regime.name}"
        self.sim = self.dir / "sim"
        self.gen = self.dir / "generator"
        self.made: set[str] = set()  # what this process has made or verified: checked once, not once per run
        self._steps: int | None = None

    def real(self) -> Path:
        if "real" not in self.made and not (self.sim / "simmarket.json").exists():
            s = simulate(self.sim, self.cfg.sim_ids, seed=self.world.sim_seed, size=tuple(self.cfg.train.size),
                         overwrite=True, progress=self.progress, train_cameras=self.regime.train_cameras,
                         style=self.world.style)
            self.log(f"[{self.tag}] SimMarket: {s['images']} images, {s['train_ids']} train ids")
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
            simulate_data(((root, size),), self.cfg.sim_ids, self.world.sim_seed, self.progress, self.log,
                          self.regime.train_cameras, style=self.world.style)
            self.made.add("gen_data")
        return root

    def generator(self) -> Path:
        if "generator" not in self.made:
            install(self.cfg.reference or None, self.gen, self.gen_data(), self.progress)
            self.made.add("generator")
        return self.gen

    def path(self, name: str, filter_seed: int | None = None) -> Path:
        """Where the generated data ``name`` lies (``filter_seed``: its filtered copy for that seed's anchor model);
        nothing is made."""
        return self.dir / "generated" / (name if filter_seed is None else f"{name}-filtered-seed{filter_seed}")

    def generated(self, name: str) -> Path:
        """The generated data ``name``, made unless ``out`` already holds it from the same settings. A complete one is
        recognised without running the generator (paths as given), so a copy of ``out`` verifies on another machine
        (``check_generators`` has checked, by sha256, that it came from the config's reference checkpoints)."""
        out = self.path(name)
        if name in self.made:
            return out
        if name in PLATES_OF:
            plates = name != "cutpaste"  # the generator's plates, not the donor images alone
            if plates and not (out / "cutpaste.json").is_file():
                self.generator()
            cut_paste(self.real(), out, size=tuple(self.cfg.train.size), plates=PLATES_OF[name],
                      stage1_run=self.gen / "stage1" if plates else None, progress=self.progress)
        elif name in ("remix", "remix-newpose", "new"):
            real = name != "new"
            bcfg = BuildConfig(stage2_run=str(self.gen / "stage2"), out=str(out),
                               identities=0 if real else self.cfg.new_identities,
                               images_per_id=self.cfg.remix_images_per_id if real else self.cfg.new_images_per_id,
                               fg_mode="real" if real else "sample", bg_sample_share=0.0 if real else 0.5,
                               pose_from="others" if name == "remix-newpose" else "any",
                               quality_keep=1.0, seed=self.world.sim_seed)
            if not is_complete(bcfg):
                self.generator()
                build(bcfg, progress=self.progress)
        else:
            raise UserError(f"generated {name!r}: not one of {', '.join(KINDS)}")
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
            for part in recipe.kinds:
                self.generated(part)

    def filtered(self, name: str, model_state: Path, seed: int) -> Path:
        """The generated data ``name`` through the identity-consistency filter of the real-only model of ``seed``."""
        out = self.path(name, seed)
        summary = out / "filter_summary.json"
        if summary.is_file():
            scored_by = read_json_object(summary, f"delete {out} to filter again").get("model_state", "")
            tail = model_state.parts[-5:]  # <anchor>/real/seed<k>/stage0-real/state.pt, wherever ``out`` lies
            if Path(scored_by).parts[-5:] != tail:
                raise UserError(f"{out}: filtered with {scored_by}, not the anchor's model {model_state}; delete "
                                f"{out} and the finished filtered runs of seed {seed}")
        if not out.exists():
            s = filter_generated(model_state, self.real(), self.generated(name), out, self.cfg.train.model,
                                 tuple(self.cfg.train.size), new_tau=self.cfg.filter_new_tau, progress=self.progress)
            self.log(f"[{self.tag}] filter on {name}: {s}")
        return out


def _runs(cfg: ReidReferenceConfig, world: World, regime: Regime, recipe: str) -> Path:
    """The ablation ``out`` of ``recipe`` in ``world`` and ``regime``."""
    return Path(cfg.out) / world.name / regime.name / "runs" / recipe


def _ablation_config(cfg: ReidReferenceConfig, recipe: Recipe, regime_data: GeneratedData, seed: int,
                     data: bool = True) -> AblationConfig:
    """The run's ablation config; ``data=False`` makes and reads no data (reading finished results only): its roots
    are left out, and its further kinds (``more_generated``) name the folders they would be read from."""
    train = replace(cfg.train, transforms=list(recipe.transforms or cfg.train.transforms),
                    eval_every=cfg.curve_every if recipe.name == cfg.anchor else 0)
    roots = {"real_root": str(regime_data.real())} if data else {}
    paths = {}
    for part in recipe.kinds:
        if not data:  # where it lies: a finished run records its further kinds by their folders' names
            paths[part] = str(regime_data.path(part, seed if recipe.filter else None))
        elif recipe.filter:
            state = stage_dir(_runs(cfg, regime_data.world, regime_data.regime, cfg.anchor), "real", seed) / "state.pt"
            paths[part] = str(regime_data.filtered(part, state, seed))
        else:
            paths[part] = str(regime_data.generated(part))
    kinds = recipe.kinds[:1] if recipe.combined else recipe.kinds  # a combined recipe: the others are more_generated
    for part in kinds if data else []:
        roots["virtual_root" if part == "new" else "remix_root"] = paths[part]
    more = [MoreGenerated(paths.get(part, ""), "new" if part == "new" else "remix", share, label, recipe.epsilon)
            for part, share, label in zip(recipe.kinds[1:], recipe.shares[1:], recipe.labels[1:], strict=True)
            ] if recipe.combined else []
    return AblationConfig(**roots, settings=[recipe.setting], seeds=[seed], train=train,
                          finetune_epochs=cfg.finetune_epochs, matched_steps=True, virtual_share=recipe.shares[0],
                          virtual_label=recipe.labels[0], virtual_epsilon=recipe.epsilon, more_generated=more,
                          out=str(_runs(cfg, regime_data.world, regime_data.regime, recipe.name)))


def _row(recipe: Recipe, world: World, regime: Regime, seed: int, acfg: AblationConfig, res: dict) -> dict:
    share = "+".join(f"{s:g}" for s in recipe.shares) if recipe.combined else recipe.share
    label = "+".join(recipe.labels) if recipe.combined else recipe.label  # one per kind
    return {"recipe": recipe.name, "world": world.name, "regime": regime.name, "seed": seed,
            "setting": recipe.setting, "generated": recipe.generated, "share": share if recipe.generated else 0.0,
            "label": label if recipe.generated else "", "filter": recipe.filter,
            "transforms": "+".join(acfg.train.transforms), "steps": res["steps"],
            **{k: res[k] for k in ("rank1", "rank5", "mAP", "mINP")}, "device": res.get("device", ""),
            "date": res.get("date", ""), "cmc": res["cmc"], "curve": res.get("curve")}


SHIPPED, HERE = "shipped", "here"


def _found_row(cfg: ReidReferenceConfig, recipe: Recipe, seed: int, regime_data: GeneratedData,
               shipped: Shipped | None, fresh: dict | None = None, check_steps: bool = False,
               need_row: bool = True) -> tuple[str, dict | None]:
    """Where a run's row is found, in the one order that training, the table and ``--status`` all take, and the row:
    a row the reused table pins (``Shipped.pinned``) before all; then ``fresh`` (this process's rows, by (world,
    regime, recipe, seed)); then the run's finished results here; then the shipped table. (``SHIPPED`` or ``HERE``,
    the row), or (``""``, None) where the run is missing. Reads no generated data; ``check_steps``: a result here
    must also match the regime's steps per epoch (which reads the real data); ``need_row=False``: a run finished here
    is found without making its row (None)."""
    world, regime = regime_data.world, regime_data.regime
    if shipped is not None and (row := shipped.pinned_row(world, regime, recipe, seed)) is not None:
        return SHIPPED, row
    if fresh and (row := fresh.get((world.name, regime.name, recipe.name, seed))) is not None:
        return HERE, row
    acfg = _ablation_config(cfg, recipe, regime_data, seed, data=False)
    # the steps per epoch read the real data: only where a run was started here, to check it
    if not check_steps or stage_dir(acfg.out, recipe.setting, seed).exists():
        steps = {"steps_per_epoch": regime_data.steps_per_epoch()} if check_steps else {}
        if (res := finished_result(acfg, recipe.setting, seed, **steps)) is not None:
            return HERE, _row(recipe, world, regime, seed, acfg, res) if need_row else None
    if shipped is not None and (row := shipped.row(world, regime, recipe, seed)) is not None:
        return SHIPPED, row
    return "", None


def _one_run(cfg: ReidReferenceConfig, recipe: Recipe, seed: int, regime_data: GeneratedData,
             shipped: Shipped | None = None) -> tuple[dict, float | None, bool]:
    """The run's row, the seconds it trained (None: finished before, read from its results or from the shipped
    ablation, its generated data not needed and maybe not on this machine), and whether the row is the shipped
    ablation's."""
    t = time.perf_counter()
    world, regime = regime_data.world, regime_data.regime
    source, row = _found_row(cfg, recipe, seed, regime_data, shipped, check_steps=True)
    if source:
        return row, None, source == SHIPPED
    if recipe.filter:
        state = stage_dir(_runs(cfg, world, regime, cfg.anchor), "real", seed) / "state.pt"
        if not state.is_file():  # the anchor's row is the shipped table's: its run is trained here for the model
            anchor = next(r for r in cfg.recipes if r.name == cfg.anchor)
            regime_data.log(f"[{regime_data.tag}] {cfg.anchor} seed {seed}: its row is shipped, its model is not "
                            f"here: trained here for {recipe.name}'s filter")
            run_ablation(_ablation_config(cfg, anchor, regime_data, seed), progress=False)
    acfg = _ablation_config(cfg, recipe, regime_data, seed)
    (res,) = run_ablation(acfg, progress=False)
    return _row(recipe, world, regime, seed, acfg, res), time.perf_counter() - t, False


def _worker_run(cfg: ReidReferenceConfig, world: World, regime: Regime, recipe: Recipe, seed: int, made: set[str],
                threads: int, shipped: Shipped | None) -> tuple[dict, float | None, bool]:
    """One run in a worker process; the regime's generated data were made by the parent (``made``)."""
    torch.set_num_threads(threads)
    regime_data = GeneratedData(cfg, world, regime, False, lambda msg: print(msg, flush=True))
    regime_data.made = set(made)
    return _one_run(cfg, recipe, seed, regime_data, shipped)


def check_generators(cfg: ReidReferenceConfig) -> None:
    """Refuse an ``out`` whose generator was installed, in any world and regime, from other reference checkpoints
    than ``cfg.reference``: its generated data and runs came from another generator, and one table holds one; and
    refuse checkpoints other than those ``cfg.generator_sha256`` names."""
    check_installed_from([Path(cfg.out) / w.name / r.name / "generator" for w, r in _scopes(cfg)],
                         cfg.reference or None)
    if cfg.generator_sha256:  # the config names the generator its table is of
        now = checkpoint_sha256(cfg.reference or None)
        for file, pinned in zip(FILES.values(), cfg.generator_sha256, strict=True):
            if now[file] != pinned:
                where = cfg.reference or "generator/reference"
                fix = ("restore those checkpoints (`git log -- generator/reference` finds their commit) or set "
                       "reference to their folder" if not cfg.reference else "set reference to their folder")
                raise UserError(f"generator_sha256: the table of this config is of the generator whose {file} has "
                                f"sha256 {pinned[:12]}, and {where} holds {now[file][:12]}; {fix}")


def _scopes(cfg: ReidReferenceConfig, worlds: list[str] | None = None) -> list[tuple[World, Regime]]:
    """Every (world, regime) of the config, in its order; ``worlds``: those worlds only."""
    if worlds:
        unknown = sorted(set(worlds) - {w.name for w in cfg.worlds})
        if unknown:
            raise UserError(f"--world {','.join(worlds)}: no world named {unknown[0]!r}; the config's worlds are "
                            f"{', '.join(w.name for w in cfg.worlds)}")
    return [(w, r) for w in cfg.worlds if not worlds or w.name in worlds for r in cfg.regimes]


def _table_rows(cfg: ReidReferenceConfig, shipped: Shipped | None, fresh: dict | None = None) -> list[dict]:
    """Every row the table has so far, in its order (seed, world and regime, recipe, the anchor first): a run's row
    from ``fresh`` (this process's, by (world, regime, recipe, seed)), else from its finished results here, else from
    the shipped table (nothing trained, no data read); a row the reused table pins (``Shipped.pinned``) before all
    (``_found_row``)."""
    recipes = sorted(cfg.recipes, key=lambda r: r.name != cfg.anchor)
    rows = []
    data = [GeneratedData(cfg, world, regime, False, print) for world, regime in _scopes(cfg)]
    for seed in cfg.seeds:
        for regime_data in data:
            for recipe in recipes:
                _, row = _found_row(cfg, recipe, seed, regime_data, shipped, fresh)
                if row is not None:
                    rows.append(row)
    return rows


def _write(cfg: ReidReferenceConfig, rows: list[dict], times: dict, command: str, shipped: Shipped | None) -> None:
    """The outputs of ``rows``, with the shipped table's plateaus and filter summaries where its rows are reused,
    and the seconds each reused row's run trained (its table's provenance: a row pinned over a run here, or one
    not timed here)."""
    if shipped is not None:
        times = dict(times)
        for r in rows:
            key = (r["world"], r["regime"], r["recipe"], int(r["seed"]))
            name = f"{key[0]}/{key[1]}/{key[2]}/seed{key[3]}"
            if key in shipped.seconds and (key in shipped.pinned or name not in times):
                times[name] = shipped.seconds[key]
    write_outputs(cfg, rows, times, command, *((shipped.plateaus, shipped.filters, shipped.generator)
                                               if shipped else ()))


def collect(cfg: ReidReferenceConfig, log=print, command: str = COMMAND, reuse: bool = True,
            runs_here: bool = False) -> pd.DataFrame:
    """The table of the runs finished so far, read from their results (nothing trained, no data read), and of the
    shipped ablation's rows of runs not here (``reuse``); writes the outputs, as ``run`` does (``command``: how the
    runs are made, for the provenance). ``runs_here``: refuse an ``out`` that holds none of the config's runs (the
    table to package would be the shipped one's rows alone)."""
    out = Path(cfg.out)
    check_output_folder(out, "out")  # a file, or a folder under one: said as such, before anything is read
    times_path = out / "times.json"
    times = read_json_object(times_path, TIMES_FIX) if times_path.exists() else {}
    check_generators(cfg)
    shipped = Shipped(cfg) if reuse else None
    if shipped is not None:
        log(shipped.summary)
    rows = _table_rows(cfg, shipped)
    if runs_here and all(shipped is not None and any(
            d.get((r["world"], r["regime"], r["recipe"], r["seed"])) is r for d in (shipped.rows, shipped.pinned))
            for r in rows):  # the shipped rows alone
        raise UserError(f"{out}: no finished run of this config here; run `vmarket reference-reid` first, or give the "
                        "out that holds its runs (--set out=...)")
    if not rows:
        raise UserError(f"{out}: no finished run yet; run `vmarket reference-reid` first")
    out.mkdir(parents=True, exist_ok=True)  # every row may be the shipped table's
    _write(cfg, rows, times, command, shipped)
    log(f"collected {len(rows)} finished runs of {len(cfg.seeds) * len(_scopes(cfg)) * len(cfg.recipes)}")
    return pd.DataFrame(rows)


def _check_layout(cfg: ReidReferenceConfig) -> None:
    """Refuse runs in the layout before worlds were a key (``<out>/<regime>/runs``)."""
    out = Path(cfg.out)
    old = next((out / r.name for r in cfg.regimes if (out / r.name / "runs").is_dir()), None)
    if old is not None:
        raise UserError(f"{old}: runs in the layout before worlds were a key; move that folder to "
                        f"{out / cfg.worlds[0].name / old.name} if its SimMarket is world {cfg.worlds[0].name!r} "
                        f"(seed {cfg.worlds[0].sim_seed}), else delete it")


def _seeds_text(seeds: list[int]) -> str:
    """``[0, 1, 2, 4]`` as ``0-2, 4``."""
    runs, out = [], []
    for s in sorted(seeds):
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    for a, b in runs:
        out.append(f"{a}" if a == b else f"{a}-{b}")
    return ", ".join(out)


def status(cfg: ReidReferenceConfig, reuse: bool = True, worlds: list[str] | None = None) -> str:
    """What the ablation holds and lacks, in words; trains, reads no data and writes nothing. Per world and regime:
    the runs finished here, those a shipped table gives (``Shipped``, as ``run`` takes them), the runs started but
    not finished, and the recipes short of a seed, with the seeds they lack (a filtered recipe whose anchor of that
    seed is shipped, its model not here, needs ``--no-shipped``); then the training time the missing runs take at
    this machine's pace, and the anchor runs ``--no-shipped`` trains again: per run, the median seconds of the same
    recipe's runs here in that regime (``times.json``), else of its shipped runs (the shipped tables'
    ``run_seconds``) scaled by this machine's pace against theirs (the median ratio over the recipes run in both
    places, in that regime), else of any recipe's runs here in that regime; with no run here to scale by, at the
    shipped runs' own pace, said apart (another machine or day). An ``out``
    of another generator's runs, or in the layout before worlds, is refused, as ``run`` refuses it; an ``out`` it
    may not write to is read."""
    if Path(cfg.out).is_file():
        raise UserError(f"{cfg.out}: is a file, not the ablation's out folder; set out to that folder (--set out=...)")
    scopes = _scopes(cfg, worlds)  # an unknown world refused first
    _check_layout(cfg)
    check_generators(cfg)
    shipped = Shipped(cfg) if reuse else None
    times_path = Path(cfg.out) / "times.json"
    times = read_json_object(times_path, TIMES_FIX) if times_path.exists() else {}
    pace = _pace(times)
    theirs = _pace(shipped_seconds(cfg))

    scale = {}  # regime -> this machine's seconds over the shipped runs', per run of the same recipe (median)
    for regime in cfg.regimes:
        ratios = [pace[k] / theirs[k] for k in pace if k[0] == regime.name and k[1] and theirs.get(k)]
        if ratios:
            scale[regime.name] = statistics.median(ratios)

    def seconds(regime: Regime, name: str) -> tuple[float | None, bool]:
        """A missing run's seconds, and whether at this machine's pace (else the shipped runs')."""
        key = (regime.name, name)
        if key in pace:
            return pace[key], True
        if key in theirs and regime.name in scale:
            return theirs[key] * scale[regime.name], True
        if (regime.name, None) in pace:
            return pace[regime.name, None], True
        return theirs.get(key, theirs.get((regime.name, None))), False

    anchor = next(r for r in cfg.recipes if r.name == cfg.anchor)
    lines = ["| world | regime | finished here | shipped | started | missing |", "| --- " * 6 + "|"]
    gaps, left, unknown, total, done = [], {True: 0.0, False: 0.0}, 0, 0, 0
    counted = {True: 0, False: 0}
    for world, regime in scopes:
        data = GeneratedData(cfg, world, regime, False, lambda *a: None)
        here = from_shipped = started = 0
        lacking: dict[str, list[int]] = {}
        needs_anchor: set[str] = set()
        retrain: set[int] = set()  # the seeds whose anchor is trained again here for a filter's model
        for recipe in sorted(cfg.recipes, key=lambda r: r.name != cfg.anchor):
            for seed in cfg.seeds:
                total += 1
                source, _ = _found_row(cfg, recipe, seed, data, shipped, need_row=False)
                here += source == HERE
                from_shipped += source == SHIPPED
                if source:
                    continue
                acfg = _ablation_config(cfg, recipe, data, seed, data=False)
                started += stage_dir(acfg.out, recipe.setting, seed).exists()
                lacking.setdefault(recipe.name, []).append(seed)
                model = stage_dir(_runs(cfg, world, regime, cfg.anchor), "real", seed) / "state.pt"
                if recipe.filter and shipped is not None and not model.is_file() and (
                        shipped.pinned_row(world, regime, anchor, seed) or shipped.row(world, regime, anchor, seed)):
                    needs_anchor.add(recipe.name)  # the anchor's row is shipped: the filtered run trains it first
                    retrain.add(seed)
                s, ours = seconds(regime, recipe.name)
                if s is None:
                    unknown += 1
                else:
                    left[ours] += s
                    counted[ours] += 1
        s, ours = seconds(regime, cfg.anchor)
        if retrain and s is None:
            unknown += len(retrain)
        elif retrain:
            left[ours] += len(retrain) * s
            counted[ours] += len(retrain)
        missing = sum(len(s) for s in lacking.values())
        done += here + from_shipped
        lines.append(f"| {world.name} | {regime.name} | {here} | {from_shipped} | {started} | {missing} |")
        if lacking:
            gaps.append(f"- {world.name}/{regime.name}: " + "; ".join(
                f"{name} (seed{'s' if len(seeds) > 1 else ''} {_seeds_text(seeds)}"
                + (f", and {cfg.anchor} again first: the filter's model is not here" if name in needs_anchor
                   else "")
                + ")" for name, seeds in lacking.items()))
    head = f"{cfg.out}: {done} of {total} runs finished ({'here or shipped' if reuse else 'here'})"
    if not gaps:
        return head + "; nothing left to train\n\n" + "\n".join(lines) + "\n"
    left_text = (f"about {left[True] / 3600:.1f} h of training left at this machine's pace (the median seconds of each "
                 f"recipe's runs here, {times_path}, or of its shipped runs scaled to this machine)"
                 if counted[True] else "")
    if counted[False]:
        left_text += ("; " if left_text else "") + (
            f"{'and ' if counted[True] else ''}about {left[False] / 3600:.1f} h for {counted[False]} runs at the pace "
            f"of the shipped runs (their median seconds in provenance.json of {', '.join(shipped_tables(cfg))}: "
            "another machine or day), with no run of their regime here to time")
    if unknown:
        left_text += ("; " if left_text else "") + f"{unknown} runs of recipes and regimes with no run here to time"
    return (head + "\n\n" + "\n".join(lines) + "\n\nmissing:\n" + "\n".join(gaps) + "\n\n" + left_text + "\n")


def _pace(times: dict) -> dict[tuple[str, str | None], float]:
    """Median seconds per run from ``times`` ("world/regime/recipe/seedN" -> seconds): by (regime, recipe), and by
    (regime, None) over every recipe of the regime."""
    by: dict[tuple[str, str | None], list[float]] = {}
    for name, seconds in times.items():
        parts = name.split("/")
        if len(parts) == 4 and isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
            by.setdefault((parts[1], parts[2]), []).append(float(seconds))
            by.setdefault((parts[1], None), []).append(float(seconds))
    return {key: statistics.median(v) for key, v in by.items()}


class _Results:
    """The rows finished so far, in the sequential order (seed, world and regime, recipe), and the seconds each run
    trained (``times.json``: a reused run keeps the time it took). The table it writes holds them and every other
    row already finished here or shipped (a run of some recipes or worlds still writes the whole table)."""

    def __init__(self, cfg: ReidReferenceConfig, log, command: str, shipped: Shipped | None = None):
        self.cfg, self.log, self.command, self.shipped = cfg, log, command, shipped
        self.times_path = Path(cfg.out) / "times.json"
        self.times = read_json_object(self.times_path, TIMES_FIX) if self.times_path.exists() else {}
        self.by_key: dict[tuple[int, int, int], dict] = {}  # (seed, scope, recipe) index -> row

    def record(self, key: tuple[int, int, int], row: dict, seconds: float | None, shipped: bool = False) -> None:
        name = f"{row['world']}/{row['regime']}/{row['recipe']}/seed{row['seed']}"
        if seconds is not None:  # trained now
            self.times[name] = round(seconds, 1)
            atomic_write_text(self.times_path, json.dumps(self.times, indent=1))
        self.by_key[key] = row
        self.log(f"[{row['world']}/{row['regime']}] {row['recipe']} seed {row['seed']}: rank-1 "
                 f"{100 * row['rank1']:.1f}, mAP {100 * row['mAP']:.1f}" + (" (shipped)" if shipped else ""))

    def rows(self) -> list[dict]:
        return [self.by_key[k] for k in sorted(self.by_key)]

    def write(self) -> None:
        fresh = {(r["world"], r["regime"], r["recipe"], r["seed"]): r for r in self.rows()}
        _write(self.cfg, _table_rows(self.cfg, self.shipped, fresh), self.times, self.command, self.shipped)


TIMES_FIX = "delete it (it records each run's wall time alone; the runs' results stay)"


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


def _run_in_workers(cfg: ReidReferenceConfig, recipes: list[Recipe], scopes: list, data: list[GeneratedData],
                    results: _Results, jobs: int, shipped: Shipped | None) -> None:
    """Every run in ``jobs`` worker processes, recipe by recipe in the config's order, every seed of one recipe
    before the next; the generated data are made first, in this process."""
    for regime_data in data:  # the recipes with a run to train here: a shipped run needs no data
        regime_data.prepare([r for r in recipes if shipped is None or any(
            shipped.row(regime_data.world, regime_data.regime, r, seed) is None for seed in cfg.seeds)])
    made = [set(regime_data.made) for regime_data in data]
    todo = [(i, j, k) for k in range(len(recipes)) for i in range(len(cfg.seeds)) for j in range(len(scopes))]
    threads = max(1, torch.get_num_threads() // jobs)  # the cores this process may use, shared out
    running: dict[concurrent.futures.Future, tuple[int, int, int]] = {}

    def ready(key: tuple[int, int, int]) -> bool:
        """A filtered recipe waits for its seed's anchor model, and for any other filtered run of the same seed
        and scope (two would write one filtered data set at once)."""
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
                world, regime = scopes[j]
                running[pool.submit(_worker_run, cfg, world, regime, recipes[k], cfg.seeds[i], made[j], threads,
                                    shipped)] = key
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
        jobs: int = 1, command: str = COMMAND, worlds: list[str] | None = None, reuse: bool = True,
        fresh: list[str] | None = None) -> pd.DataFrame:
    """Every recipe x world x regime x seed (resumable); returns the rows and writes the outputs.
    ``only``: these recipes alone this time (the anchor always runs too: the filter and the plateau need it).
    ``worlds``: these worlds alone this time. ``reuse``: a run whose row the shipped ablation holds, trained the
    same way (``Shipped``), is not trained again, unless its recipe is one of ``fresh`` (trained here again: a CPU run
    does not repeat its numbers on another machine or day, so a comparison is cleanest between runs of one machine).
    ``jobs`` = 1 runs seed by seed, so a partial ablation holds complete paired comparisons. ``jobs`` > 1 makes all
    generated data first, then keeps that many runs going in worker processes (one GPU can hold them all), recipe by
    recipe in the config's order, every seed of one recipe before the next."""
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: use 1 or more")
    scopes = _scopes(cfg, worlds)
    recipes = _recipes_to_run(cfg, only)  # unknown names are refused before anything is written
    out = Path(cfg.out)
    check_output_folder(out, "out")
    _check_layout(cfg)
    check_generators(cfg)
    shipped = Shipped(cfg, fresh or []) if reuse else None
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    if fresh:  # kept, so that every later command (a resume, --package-only, --status) takes their runs here too
        atomic_write_text(out / FRESH, json.dumps(sorted(set(fresh) | set(read_fresh(cfg))), indent=1))
    if shipped is not None:
        log(shipped.summary)
    results = _Results(cfg, log, command, shipped)
    data = [GeneratedData(cfg, w, r, progress, log) for w, r in scopes]
    if jobs == 1:
        for i, seed in enumerate(cfg.seeds):
            for j, regime_data in enumerate(data):
                for k, recipe in enumerate(recipes):
                    results.record((i, j, k), *_one_run(cfg, recipe, seed, regime_data, shipped))
                results.write()
    else:
        _run_in_workers(cfg, recipes, scopes, data, results, jobs, shipped)
    return pd.DataFrame(results.rows())
