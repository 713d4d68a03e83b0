"""Reference models for SimMarket: train stage I, the pose AE and stage II on the demo's data with a fixed seed,
evaluate them, and ship them as package data (fp16 weights, sha256, provenance) that the demo uses by default.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch

from augment.jobs.provenance import git_commit, repo_relative
from augment.jobs.steps import (
    StageTimer,
    check_deadline,
    evaluate_generator,
    generator_configs,
    simulate_data,
    train_generator,
)
from generator.api import DisentangledModel
from generator.config import MIN_IDS, TOO_FEW_IDS, ConfigValueError, check_size, share_defect, to_dict
from generator.errors import UserError
from generator.eval.stage1_report import METRIC_DEFINITIONS, METRICS_VERSION, evaluate, held_out_people
from generator.io import atomic_copy, atomic_save, atomic_write_text, check_output_folder, load_checkpoint, partial_path
from generator.shipped import (
    FILES,
    PROVENANCE,
    fp16_error,
    half,
    install,
    provenance,
    sha256_file,
    simulate_reference_data,
)

# the provenance's default command
COMMAND = "make reference  (vmarket reference configs/reference/reference-48-unlabelled.yaml)"


@dataclass
class ReferenceConfig:
    out: str = "outputs/reference"  # run directories of the reference training
    sim_ids: int = 200  # SimMarket identities (half train, half test): the demo's data
    sim_seed: int = 0
    # draw the people from another seed than the scenes (SimMarket --people-seed; None: sim_seed), with this share
    # in the training split: a generator trained on other people than the re-ID data of sim_seed
    people_seed: int | None = None
    train_share: float = 0.5
    # > 0: stage I and the pose AE also train on the training split of a SimMarket of this many other people
    # (SimMarket --people-seed) in the same scenes and cameras: unlabelled data, none of it in the re-ID data
    unlabelled_ids: int = 0
    unlabelled_people_seed: int = 1
    unlabelled_train_share: float = 0.8  # the share of them in its training split (the rest is never used)
    gen_size: list[int] = field(default_factory=lambda: [64, 32])  # resolution the generator trains at
    # job configs (in a config file: relative to its folder); data and run paths are redirected under `out`
    stage1: str = "configs/reference/stage1.yaml"
    pose: str = "configs/reference/pose.yaml"
    stage2: str = "configs/reference/stage2.yaml"
    set: list[str] = field(default_factory=list)  # overrides per job, e.g. "stage1:train.steps=300"
    eval_pairs: int = 200  # counterfactual swap pairs scored after stage I
    # which stage-I snapshot ships (and stage II is trained on): the end of the L1 warm-up, or snapshot.pt (the
    # final model); on 512 held-out images the adversarial phase lowered SSIM 0.593 -> 0.471 (provenance.json)
    # and worsened every swap at this budget, so the warm-up's end ships and the final model stays in the run
    ship_stage1: str = "snapshot-l1.pt"
    package: str = "generator/reference"  # where the shipped checkpoints and provenance.json are written
    figures: str = "docs"  # where the figures of the README and docs/ are written ("" for none)
    # a finished stage-I run of the same config trained elsewhere (on a GPU, say), used instead of training one
    # here: its snapshots, logs and grids are copied into out/stage1 (its optimiser state may be left behind)
    stage1_run: str = ""
    CONFIG_FILES: typing.ClassVar = ("stage1", "pose", "stage2")

    def __post_init__(self):
        """Checked when the config loads, before anything trains."""
        check_size(self, "gen_size")
        if self.stage1_run and not Path(self.stage1_run).is_dir():
            raise ConfigValueError("stage1_run", f"{self.stage1_run}: no such run folder; give the folder of a "
                                                 f"finished stage-I run, or '' to train one here")
        if self.sim_ids < MIN_IDS:
            raise ConfigValueError("sim_ids", f"{self.sim_ids}: {TOO_FEW_IDS}")
        if 0 < self.unlabelled_ids < MIN_IDS:
            raise ConfigValueError("unlabelled_ids", f"{self.unlabelled_ids}: {TOO_FEW_IDS}; use 0 for none")
        for key, ids in (("train_share", self.sim_ids), ("unlabelled_train_share", self.unlabelled_ids)):
            if ids and (defect := share_defect(ids, getattr(self, key))):
                raise ConfigValueError(key, f"{getattr(self, key)}: {defect}")
        if self.unlabelled_ids < 0:
            raise ConfigValueError("unlabelled_ids", f"{self.unlabelled_ids}: use 0 (none) or a number of people")
        if self.eval_pairs < 1:
            raise ConfigValueError("eval_pairs", f"{self.eval_pairs}: score at least 1 swap pair")
        if not SNAPSHOT_NAME.fullmatch(self.ship_stage1):
            raise ConfigValueError("ship_stage1", f"{self.ship_stage1!r}: name a snapshot file of the stage-I run: "
                                                  f"snapshot-l1.pt (the end of the L1 warm-up) or snapshot.pt (the "
                                                  f"final model)")


PACKAGING_RESERVE_S = 60  # seconds before a deadline after which packaging waits for the next run

# the stage-I snapshots a reference may ship: the final model, or the end of the L1 warm-up
SNAPSHOT_NAME = re.compile(r"snapshot(-l1)?\.pt")


def train_reference(cfg: ReferenceConfig, progress: bool = True, log=print, deadline: float | None = None) -> Path:
    """Train and evaluate every stage under ``cfg.out``; resumable, finished stages are reused. At the wall-clock
    ``deadline`` the stage in training saves its state and ``TimeLimitReached`` is raised."""
    out = Path(cfg.out)
    gen_root = out / "data" / "sim-gen"
    unl_root = out / "data" / "sim-unlabelled"
    check_output_folder(out, "out")  # before hours of training, as are the package's folders below
    if out.is_dir() and any(out.iterdir()) and not any((out / f).is_file() for f in ("commits.txt", "times.json")):
        raise UserError(f"{out}: holds files but no reference run (no commits.txt or times.json); set out to a "
                        "new folder, or to the folder of the reference run to resume")
    check_package_paths(cfg)
    # the unlabelled people train stage I and the pose AE, and stage II learns their embeddings too
    extra = ([f"{job}:data.unlabelled_roots=[{unl_root}]" for job in ("stage1", "pose")]
             + [f"stage2:unlabelled_roots=[{unl_root}]"]) if cfg.unlabelled_ids else []
    # every job config is loaded (and a bad one refused) before anything is written
    s1cfg, pcfg, s2cfg = generator_configs(out, gen_root, cfg.gen_size, cfg.stage1, cfg.pose, cfg.stage2,
                                           cfg.set + extra)
    out.mkdir(parents=True, exist_ok=True)
    stage = StageTimer(out)
    commits = out / "commits.txt"  # the code each (re)start ran, for the provenance
    with open(commits, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {git_commit()}\n")
    stage("data", lambda: simulate_data(((gen_root, cfg.gen_size),), cfg.sim_ids, cfg.sim_seed, progress, log,
                                        people_seed=cfg.people_seed, train_share=cfg.train_share))
    if cfg.unlabelled_ids:
        stage("data", lambda: simulate_data(((unl_root, cfg.gen_size),), cfg.unlabelled_ids, cfg.sim_seed, progress,
                                            log, people_seed=cfg.unlabelled_people_seed,
                                            train_share=cfg.unlabelled_train_share))
    if cfg.stage1_run:
        import_stage1(Path(cfg.stage1_run), out / "stage1", s1cfg, log)
    s2cfg.stage1_run = str(shipped_stage1(cfg, check=False))  # stage II learns the embeddings of the stage I that ships
    train_generator(out, gen_root, s1cfg, pcfg, s2cfg, cfg.eval_pairs, stage, progress, log, deadline)
    return out


def check_package_paths(cfg: ReferenceConfig) -> None:
    """Refuse a ``package`` or ``figures`` the job could not write (a file, a folder under a file, an unwritable
    one): checked before training, which takes hours, and again before packaging."""
    check_output_folder(cfg.package, "package")
    if cfg.figures:
        check_output_folder(cfg.figures, "figures")


def import_stage1(src: Path, dst: Path, s1cfg, log=print) -> None:
    """Copy the finished stage-I run ``src`` (trained elsewhere with the job config ``s1cfg``) to ``dst``. Refused
    unless it finished and its model and training sections equal the job's (device and logging aside)."""
    if (dst / "imported.json").is_file():
        return
    snap = src / "snapshot.pt"
    if not snap.is_file():
        raise UserError(f"{snap}: missing; stage1_run must name a finished stage-I run directory")
    got = load_checkpoint(snap)
    want = to_dict(s1cfg)
    free = {"device", "log_every", "eval_every", "eval_images", "sample_every", "snapshot_every"}
    default = to_dict(type(s1cfg)())  # a key the run's config lacks (older than the option) has its default
    for section in ("model", "train"):
        a = {k: v for k, v in {**default[section], **got["config"][section]}.items() if k not in free}
        b = {k: v for k, v in want[section].items() if k not in free}
        if a != b:
            diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            raise UserError(f"{snap}: its {section} config differs from the job's in {', '.join(diff)}; train it with "
                            f"the stage-I config of this reference")
    if len(got["config"]["data"].get("unlabelled_roots", [])) != len(s1cfg.data.unlabelled_roots):
        raise UserError(f"{snap}: trained on {len(got['config']['data'].get('unlabelled_roots', []))} unlabelled "
                        f"roots, the job config names {len(s1cfg.data.unlabelled_roots)}")
    if int(got["step"]) < s1cfg.train.steps:
        raise UserError(f"{snap}: step {got['step']} of {s1cfg.train.steps}; finish the run first")
    tmp = partial_path(dst)
    for leftover in (tmp, dst):
        if leftover.exists():
            shutil.rmtree(leftover)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("state.pt"))
    atomic_write_text(tmp / "imported.json", json.dumps({"from": str(src), "step": int(got["step"])}))
    os.replace(tmp, dst)
    log(f"[stage1] imported the finished run {src} ({got['step']} steps) -> {dst}")


def shipped_stage1(cfg: ReferenceConfig, check: bool = True) -> Path:
    path = Path(cfg.out) / "stage1" / cfg.ship_stage1
    if check and not path.is_file():
        raise UserError(f"{path}: missing; ship_stage1 names a snapshot of the stage-I run (snapshot-l1.pt exists only "
                        "when the config trains an L1 warm-up before the adversarial term), e.g. snapshot.pt")
    return path


def reference_checks(stage1_metrics: dict) -> dict[str, bool]:
    """The acceptance checks of the shipped stage I, from its evaluation (``generator.eval.stage1_report.evaluate``)."""
    sw = stage1_metrics["swaps"]
    checks = {"reconstruction_ssim_at_least_0.70": stage1_metrics["reconstruction"]["ssim"] >= 0.70}
    for k in ("pose", "background", "foreground"):
        checks[f"{k}_swap_l1_below_copy_source"] = sw[f"{k}/model/l1"] < sw[f"{k}/copy_source/l1"]
    return checks


def rescore(package_dir: str | Path, work: str | Path, progress: bool = True, log=print) -> dict:
    """Score the shipped stage I again under the current metric definitions (``METRICS_VERSION``), on the
    SimMarket its provenance names (rebuilt from its seed), and record the result in ``provenance.json``: the
    new metrics and checks replace ``metrics.stage1`` and ``checks``, and the ones they replace are kept under
    ``superseded_metrics``. The checkpoints, and so their sha256, do not change."""
    pkg = Path(package_dir)
    if not (pkg / PROVENANCE).is_file():
        raise UserError(f"{pkg / PROVENANCE}: nothing shipped here to rescore; train and ship a reference first "
                        f"(`vmarket reference CONFIG`), or set package to the folder that holds one")
    prov = provenance(pkg)
    old = prov["metrics"]["stage1"]
    if old["reconstruction"].get("metrics_version") == METRICS_VERSION:
        log(f"[rescore] {pkg / PROVENANCE} already holds metrics version {METRICS_VERSION}; nothing to do")
        return prov
    root = Path(work) / "data" / "sim-gen"
    if not (root / "simmarket.json").exists():
        simulate_reference_data(root, pkg, progress)
    new = evaluate(pkg / FILES["stage1"], root, Path(work) / "eval", pairs=prov["reference_config"]["eval_pairs"],
                   limit=old["reconstruction"]["images"])
    superseded = prov.get("superseded_metrics", [])
    superseded.append({"metrics_version": old["reconstruction"].get("metrics_version", 1),
                       "definition": METRIC_DEFINITIONS[old["reconstruction"].get("metrics_version", 1)],
                       "stage1": old, "checks": prov["checks"]})
    prov["superseded_metrics"] = superseded
    prov["metrics"]["stage1"] = new
    prov["checks"] = reference_checks(new)
    prov["rescored"] = {"command": "vmarket reference --rescore", "metrics_version": METRICS_VERSION,
                        "definition": METRIC_DEFINITIONS[METRICS_VERSION], "at_commit": git_commit(),
                        "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine()}
    atomic_write_text(pkg / PROVENANCE, json.dumps(prov, indent=1))
    r = new["reconstruction"]
    log(f"[rescore] SSIM {old['reconstruction']['ssim']:.3f} -> {r['ssim']:.3f}, mask-SSIM "
        f"{old['reconstruction']['mask_ssim']:.3f} -> {r['mask_ssim']:.3f}; checks {prov['checks']} -> {pkg}")
    return prov


def run_reference(cfg: ReferenceConfig, progress: bool = True, log=print, command: str = COMMAND,
                  deadline: float | None = None) -> dict:
    """``make reference``: train (or resume), evaluate, then ship; ``deadline`` as in ``train_reference``, and
    packaging starts only before it."""
    train_reference(cfg, progress, log, deadline)
    # packaging evaluates the shipped checkpoints (a minute or two): it starts only with that much time left
    check_deadline(None if deadline is None else deadline - PACKAGING_RESERVE_S, "packaging")
    return package(cfg, progress, log, command)


def package(cfg: ReferenceConfig, progress: bool = True, log=print, command: str = COMMAND) -> dict:
    """Ship the trained reference: fp16 checkpoints in ``cfg.package``, evaluated as shipped, ``provenance.json``,
    and the README figures in ``cfg.figures``."""
    out, pkg = Path(cfg.out), Path(cfg.package)
    gen_root = out / "data" / "sim-gen"
    check_package_paths(cfg)
    s1 = load_checkpoint(shipped_stage1(cfg))
    pose, s2 = (load_checkpoint(out / r / "snapshot.pt") for r in ("pose", "stage2"))
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / PROVENANCE).unlink(missing_ok=True)  # no provenance until every file it describes is in place
    shipped1 = {"kind": "stage1", "config": s1["config"], "step": s1["step"], "G": half(s1["G"])}
    t1 = s1["config"]["train"]
    state_path = out / "stage1" / "state.pt"  # absent for a run imported without its optimiser state: G alone ships
    if t1["adv_weight"] > 0 and t1["l1_only_steps"] < int(s1["step"]) and state_path.is_file():
        state = load_checkpoint(state_path)
        if int(state["step"]) == int(s1["step"]):
            shipped1["D"] = half(state["D"])  # the discriminator trained with this G, for the builder's quality filter
    atomic_save(shipped1, pkg / FILES["stage1"])
    atomic_save({"kind": "pose", "config": pose["config"], "step": pose["step"], "model": half(pose["model"])},
                pkg / FILES["pose"])
    atomic_save({"kind": "stage2", "config": s2["config"], "steps": s2["steps"], "dims": s2["dims"],
                 "nets": {f: half(n) for f, n in s2["nets"].items()}}, pkg / FILES["stage2"])
    files = {name: {"sha256": sha256_file(pkg / name), "bytes": (pkg / name).stat().st_size, "dtype": "float16"}
             for name in FILES.values()}
    # a provisional provenance (files only), so that install() can verify them; the full one is written last, and
    # nothing but this job takes the provisional one
    atomic_write_text(pkg / PROVENANCE, json.dumps({"files": files, "provisional": True}, indent=1))

    # evaluate the checkpoints as shipped (fp16 weights, computed in fp32), in run directories of their own
    shipped = out / "shipped"
    if shipped.exists():
        shutil.rmtree(shipped)
    install(pkg, shipped, gen_root, progress=progress, provisional_ok=True)
    evaluate_generator(shipped, gen_root, cfg.eval_pairs, StageTimer(shipped), progress, log)
    model32 = DisentangledModel.load(shipped_stage1(cfg))
    fp16 = fp16_error(model32.G, held_out_people(model32, gen_root))

    stage1_metrics = json.loads((shipped / "stage1" / "eval" / "metrics.json").read_text())
    stage2_metrics = json.loads((shipped / "stage2" / "eval" / "metrics.json").read_text())
    checks = reference_checks(stage1_metrics)
    log_lines = (out / "stage1" / "metrics.jsonl").read_text().splitlines()
    curve = [json.loads(line) for line in log_lines if "eval_ssim" in line]
    times = json.loads((out / "times.json").read_text())
    prov = {
        "command": command,
        "stage1_imported_from": (json.loads((out / "stage1" / "imported.json").read_text())
                                 if (out / "stage1" / "imported.json").is_file() else None),
        "reference_config": repo_relative(dict(vars(cfg))),
        "configs": repo_relative({"stage1": s1["config"], "pose": pose["config"], "stage2": s2["config"]}),
        "git_commits": (out / "commits.txt").read_text().split("\n")[:-1],
        "packaged_at_commit": git_commit(),
        "data": json.loads((gen_root / "simmarket.json").read_text()),
        "unlabelled_data": (json.loads((out / "data" / "sim-unlabelled" / "simmarket.json").read_text())
                            if cfg.unlabelled_ids else None),
        "stage1_shipped": {"snapshot": cfg.ship_stage1, "with_discriminator": "D" in shipped1},
        "training_run_final_stage1_metrics": json.loads((out / "stage1" / "eval" / "metrics.json").read_text()),
        "steps": {"stage1": int(s1["step"]), "pose": int(pose["step"]),
                  "stage2": {k: int(v) for k, v in s2["steps"].items()}},
        "wall_time_s": {k: round(v, 1) for k, v in times.items()},
        "machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
        "files": files,
        "fp16_reconstruction_difference": fp16,
        "metrics": {"stage1": stage1_metrics, "stage2": stage2_metrics},
        "held_out_ssim_during_training": curve,
        "checks": checks,
    }
    if cfg.figures:
        figs = Path(cfg.figures)
        figs.mkdir(parents=True, exist_ok=True)
        for src, name in ((shipped / "stage1" / "eval" / "grid.png", "stage1_grid.png"),
                          (shipped / "stage1" / "eval" / "swaps.png", "swaps_vs_truth.png"),
                          (shipped / "stage2" / "samples" / "b_identities.png", "sampled_identities.png"),
                          (shipped / "stage2" / "samples" / "d_interpolation.png", "interpolation.png")):
            atomic_copy(src, figs / name)
    atomic_write_text(pkg / PROVENANCE, json.dumps(prov, indent=1))
    total = sum(f["bytes"] for f in files.values())
    log(f"[package] {len(files)} checkpoints, {total / 2 ** 20:.1f} MiB, "
        f"fp16 max difference {fp16['max_grey_levels']:.2f} grey levels; "
        f"SSIM {stage1_metrics['reconstruction']['ssim']:.3f}; checks {checks} -> {pkg}")
    return prov
