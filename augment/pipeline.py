"""The whole pipeline on SimMarket: data, stage I, pose AE, stage II, a Virtual Market, the re-ID ablation
and ``report.md``. Each stage is resumable, and a rerun reuses the stages that finished.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from augment.builder import BuildConfig, build
from augment.cutpaste import SOURCE_PLATES, cut_paste
from augment.report import write_report
from augment.stage2_report import report as stage2_report
from augment.stage2_report import sample_grids
from generator.config import ConfigValueError, load_config
from generator.errors import UserError
from generator.eval.stage1_report import evaluate
from generator.io import atomic_write_text, check_output_folder, load_checkpoint
from generator.shipped import install
from generator.simmarket.dataset import DEFAULTS, settings, simulate
from generator.training.pose_ae import PoseConfig
from generator.training.pose_ae import train as train_pose
from generator.training.runtime import TimeLimitReached
from generator.training.stage1 import Stage1Config
from generator.training.stage1 import train as train_stage1
from generator.training.stage2 import Stage2Config
from generator.training.stage2 import train as train_stage2
from reid.ablation import AblationConfig, run_ablation


@dataclass
class PipelineConfig:
    out: str = "outputs/demo"  # everything the pipeline writes goes under this folder
    sim_ids: int = 200  # SimMarket identities (half train, half test)
    sim_seed: int = 0
    sim_train_cameras: int = 0  # each training identity seen by this many cameras (0: all); the test split keeps all
    gen_size: tuple[int, int] = (64, 32)  # resolution the generator trains at
    reid_size: tuple[int, int] = (128, 64)  # resolution of the real re-ID data
    stage1: str = "configs/demo/stage1.yaml"  # job configs; their data and run paths are redirected under `out`
    pose: str = "configs/demo/pose.yaml"
    stage2: str = "configs/demo/stage2.yaml"
    build: str = "configs/demo/build.yaml"
    reid: str = "configs/demo/reid.yaml"
    set: list[str] = field(default_factory=list)  # overrides per job, e.g. "stage1:train.steps=300"
    eval_pairs: int = 200  # counterfactual swap pairs scored after stage I
    from_scratch: bool = False  # train every generator stage in this run instead of using the reference checkpoints
    reference: str = ""  # folder of reference checkpoints ('' = those shipped with the package)
    # the generated training images: remix (generator remixes of the real identities, written by the build config),
    # hybrid (each real person pasted over a person-free plate stage I decodes for another camera) or inpaint (over
    # another camera's image with its own person filled in by such a plate); augment.cutpaste writes the last two
    generated: str = "remix"

    def __post_init__(self):
        if self.generated not in GENERATED:
            raise ConfigValueError("generated", f"{self.generated!r}: use one of {', '.join(GENERATED)}")


GENERATED = ("remix", "hybrid", "inpaint")


def _overrides(set_: list[str], job: str) -> list[str]:
    out = []
    for s in set_:
        if ":" not in s:
            raise UserError(f"set {s!r}: expected JOB:KEY=VALUE such as stage1:train.steps=300")
        j, kv = s.split(":", 1)
        if j not in ("stage1", "pose", "stage2", "build", "reid"):
            raise UserError(f"set {s!r}: job {j!r} is not one of stage1, pose, stage2, build, reid")
        if j == job:
            out.append(kv)
    return out


def _job_config(cls, path: str, fixed: list[str], set_: list[str], job: str):
    """A job config with the pipeline's own overrides (``fixed``) and the user's ``JOB:KEY=VALUE`` entries of
    ``set``; an error names the entry as the user wrote it."""
    return load_config(cls, path, fixed + _overrides(set_, job), set_name=lambda t: f"set {f'{job}:{t}'!r}")


def _finished(run: Path, steps: int, key: str = "step", factors: list[str] | None = None) -> bool:
    # the snapshot (the model alone) is written with every training state and first, so it tells the step without
    # loading the optimiser state, and also for a run trained elsewhere and copied without it
    snap = run / "snapshot.pt"
    if not snap.exists():
        return False
    st = load_checkpoint(snap)
    done = st[key] if key == "step" else min(v for f, v in st[key].items() if factors is None or f in factors)
    return int(done) >= steps


class StageTimer:
    """Wall time per stage, accumulated over reruns in ``out/times.json``."""

    def __init__(self, out: Path):
        self.path = out / "times.json"
        self.times: dict[str, float] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def __call__(self, name: str, fn):
        t = time.perf_counter()
        try:
            return fn()
        finally:  # a stage stopped at a time limit counts its time too
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t
            atomic_write_text(self.path, json.dumps(self.times, indent=1))


def simulate_data(roots_sizes, sim_ids: int, sim_seed: int, progress: bool, log=print, train_cameras: int = 0,
                  people_seed: int | None = None, train_share: float = DEFAULTS["train_share"]) -> None:
    """SimMarket at each (root, size), unless it is already there."""
    people_seed = sim_seed if people_seed is None else people_seed
    for root, size in roots_sizes:
        meta = root / "simmarket.json"
        if meta.exists():
            have = settings(json.loads(meta.read_text()))
            asked = {"identities": sim_ids, "seed": sim_seed, "height": size[0], "width": size[1],
                     "train_cameras": train_cameras, "style": DEFAULTS["style"], "layout": DEFAULTS["layout"],
                     "people_seed": people_seed, "train_share": train_share}
            got = {k: have.get(k) for k in asked}
            if got != asked:
                raise UserError(f"{root}: SimMarket {got}, the pipeline asks for {asked}; delete {root} (or set "
                                "another out) to simulate it again")
        else:
            s = simulate(root, sim_ids, seed=sim_seed, size=tuple(size), overwrite=True, progress=progress,
                         train_cameras=train_cameras, people_seed=people_seed, train_share=train_share)
            log(f"[data] SimMarket {s['height']}x{s['width']}: {s['images']} images, "
                f"{s['train_ids']} train ids -> {root}")


def generator_configs(out: Path, gen_root: Path, size, stage1: str, pose: str, stage2: str, set_: list[str]):
    """The stage-I, pose-AE and stage-II configs of a pipeline, their data and run paths redirected under ``out``."""
    gen = [f"data.root={gen_root}", f"data.size={list(size)}", "data.simulate_ids=0"]
    s1cfg = _job_config(Stage1Config, stage1, gen, set_, "stage1")
    pcfg = _job_config(PoseConfig, pose, gen, set_, "pose")
    s2cfg = _job_config(Stage2Config, stage2, [f"stage1_run={out / 'stage1'}", f"pose_run={out / 'pose'}",
                                               f"data_root={gen_root}"], set_, "stage2")
    return s1cfg, pcfg, s2cfg


def train_generator(out: Path, gen_root: Path, s1cfg, pcfg, s2cfg, eval_pairs: int, stage: StageTimer,
                    progress: bool = True, log=print, deadline: float | None = None) -> None:
    """Pose AE, stage I, its evaluation, stage II, its evaluation and sample grids, under ``out``; each resumes
    after a kill and is skipped when it has finished. At the wall-clock ``deadline`` the stage in training saves
    its state and ``TimeLimitReached`` is raised: running the job again continues from there."""
    s1_run, pose_run, s2_run = out / "stage1", out / "pose", out / "stage2"

    def until_done(name: str, run: Path, steps: int, fit, key: str = "step", factors=None) -> None:
        if _finished(run, steps, key, factors):
            log(f"[{name}] reusing {run}")
            return
        fit(run, resume=True, progress=progress, deadline=deadline)
        if deadline is not None and not _finished(run, steps, key, factors):
            raise TimeLimitReached(f"{name} stopped at its time limit; its state is in {run}")
        log(f"[{name}] trained {steps} steps -> {run}")

    def pose():
        until_done("pose", pose_run, pcfg.train.steps, lambda *a, **k: train_pose(pcfg, *a, **k))

    def stage1():
        until_done("stage1", s1_run, s1cfg.train.steps, lambda *a, **k: train_stage1(s1cfg, *a, **k))

    def stage2():
        until_done("stage2", s2_run, s2cfg.train.steps, lambda *a, **k: train_stage2(s2cfg, *a, **k), "steps",
                   s2cfg.factors)

    stage("pose", pose)
    stage("stage1", stage1)
    evaluate_generator(out, gen_root, eval_pairs, stage, progress, log, train_stage2=stage2, deadline=deadline)


def check_deadline(deadline: float | None, what: str) -> None:
    """Raise ``TimeLimitReached`` before ``what`` (work that is not a training loop) once ``deadline`` has passed."""
    if deadline is not None and time.time() >= deadline:
        raise TimeLimitReached(f"the time limit came before {what}")


def evaluate_generator(out: Path, gen_root: Path, eval_pairs: int, stage: StageTimer, progress: bool = True,
                       log=print, train_stage2=None, deadline: float | None = None) -> None:
    """Stage-I evaluation, then (after ``train_stage2`` when given) the stage-II evaluation and sample grids; each
    starts only before ``deadline``."""
    s1_run, s2_run = out / "stage1", out / "stage2"

    def eval1():
        if not (s1_run / "eval" / "metrics.json").exists():
            check_deadline(deadline, "the stage-I evaluation")
            evaluate(s1_run, gen_root, s1_run / "eval", pairs=eval_pairs)

    def stage2():
        if train_stage2 is not None:
            train_stage2()
        if not (s2_run / "eval" / "metrics.json").exists():
            check_deadline(deadline, "the stage-II evaluation")
            stage2_report(s2_run)
        if not (s2_run / "samples" / "b_identities.png").exists():
            sample_grids(s2_run, s2_run / "samples")

    stage("eval_stage1", eval1)
    stage("stage2", stage2)


def run_pipeline(cfg: PipelineConfig, progress: bool = True, log=print) -> Path:
    out = Path(cfg.out)
    gen_root, reid_root = out / "data" / "sim-gen", out / "data" / "sim-reid"
    s2_run, vm = out / "stage2", out / "virtual_market"
    # every job config (and every JOB:KEY=VALUE in `set`) is loaded before anything is written: a bad key fails now,
    # not after an hour of training
    s1cfg, pcfg, s2cfg = generator_configs(out, gen_root, cfg.gen_size, cfg.stage1, cfg.pose, cfg.stage2, cfg.set)
    bcfg = _job_config(BuildConfig, cfg.build, [f"stage2_run={s2_run}", f"out={vm}"], cfg.set, "build")
    generated = "remix_root" if bcfg.fg_mode == "real" else "virtual_root"  # remixes keep the real pids
    rcfg = _job_config(AblationConfig, cfg.reid, [f"real_root={reid_root}", f"{generated}={vm}",
                                                  f"out={out / 'reid'}"], cfg.set, "reid")
    check_output_folder(out, "out")
    out.mkdir(parents=True, exist_ok=True)
    stage = StageTimer(out)
    stage("data", lambda: simulate_data(((gen_root, cfg.gen_size), (reid_root, cfg.reid_size)), cfg.sim_ids,
                                        cfg.sim_seed, progress, log, cfg.sim_train_cameras))
    prov = None
    if cfg.from_scratch:
        if (out / "reference.json").exists():
            raise UserError(f"{out}: holds a run made with the reference checkpoints; give --from-scratch another "
                            "out (--set out=...) or delete the folder")
        train_generator(out, gen_root, s1cfg, pcfg, s2cfg, cfg.eval_pairs, stage, progress, log)
    else:
        if (out / "stage1" / "state.pt").exists():
            raise UserError(f"{out}: holds stages trained from scratch; rerun with --from-scratch, or give the "
                            "reference run another out (--set out=...)")
        prov = stage("reference", lambda: install(cfg.reference or None, out, gen_root, progress))
        log(f"[reference] using the reference checkpoints from {cfg.reference or 'the package'} "
            f"(stage I {prov['steps']['stage1']} steps)")
        evaluate_generator(out, gen_root, cfg.eval_pairs, stage, progress, log)

    def virtual():
        if cfg.generated != "remix":  # the real people, pasted at the re-ID size over the generator's plates
            s = cut_paste(reid_root, vm, size=tuple(cfg.reid_size), plates=SOURCE_PLATES[cfg.generated],
                          stage1_run=out / "stage1", progress=progress)
            verb = "reusing" if s.get("already_complete") else "wrote"
            log(f"[build] {verb} {s['images']} {cfg.generated} images of {s['identities']} identities -> {vm}")
            return
        # always through build(): it skips the identities already written and refuses a folder built
        # from another config, so a rerun never reuses a stale Virtual Market
        s = build(bcfg, progress=progress)
        verb = "reusing" if s["rendered_now"] == 0 else "built"
        log(f"[build] {verb} {s.get('images', 0)} images of {bcfg.identities} identities -> {vm}")

    stage("build", virtual)

    stage("reid", lambda: run_ablation(rcfg, progress=progress))
    report_path = write_report(out, cfg, prov, stage.times, rcfg)
    log(f"[report] {report_path}")
    return report_path
