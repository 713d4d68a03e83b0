"""The steps every job shares: SimMarket on disk, the generator's three trainings (resumable, under a deadline),
its evaluation, and the wall-clock time of each stage."""
from __future__ import annotations

import json
import time
from pathlib import Path

from generator.config import load_config
from generator.errors import UserError
from generator.eval.stage1_report import evaluate
from generator.io import atomic_write_text, load_checkpoint, read_json_object
from generator.simmarket.simulate import DEFAULTS, settings, simulate
from generator.training.pose_ae import PoseConfig
from generator.training.pose_ae import train as train_pose
from generator.training.runtime import TimeLimitReached
from generator.training.stage1 import Stage1Config
from generator.training.stage1 import train as train_stage1
from generator.training.stage2 import Stage2Config
from generator.training.stage2 import train as train_stage2
from generator.training.stage2_report import report as stage2_report
from generator.training.stage2_report import sample_grids


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


def job_config(cls, path: str, fixed: list[str], set_: list[str], job: str):
    """A job config with the pipeline's own overrides (``fixed``) and the user's ``JOB:KEY=VALUE`` entries of
    ``set``; an error names the entry as the user wrote it."""
    return load_config(cls, path, fixed + _overrides(set_, job), set_name=lambda t: f"set {f'{job}:{t}'!r}")


def finished(run: Path, steps: int, key: str = "step", factors: list[str] | None = None) -> bool:
    """Whether the training run ``run`` reached ``steps``: its snapshot (the model alone, also there for a run trained
    elsewhere and copied without its state) says so, and the state beside it, when there is one, is not behind it.
    The snapshot is written first, so a kill between the two at the last step leaves a state behind it: the run
    is then unfinished, and its resume trains that stretch again and writes both."""
    snap = run / "snapshot.pt"
    if not snap.exists():
        return False
    done = _counted(load_checkpoint(snap, mmap=True)[key], factors)
    if min(done.values()) < steps:
        return False
    state = run / "state.pt"
    kept = load_checkpoint(state, mmap=True).get(key) if state.exists() else None
    if kept is None:
        return True
    # behind the snapshot and short of ``steps`` (a state ahead, or past ``steps``, leaves nothing to train again)
    kept = _counted(kept, factors)
    return all(kept.get(f, -1) >= min(s, steps) for f, s in done.items())


def _counted(steps, factors: list[str] | None) -> dict[str, int]:
    """The steps a snapshot or state records, by factor (stage II: those of ``factors``, or all) or as one ``""``."""
    if isinstance(steps, dict):
        return {f: int(v) for f, v in steps.items() if factors is None or f in factors}
    return {"": int(steps)}


class StageTimer:
    """Wall time per stage, accumulated over reruns in ``out/times.json``."""

    def __init__(self, out: Path):
        self.path = out / "times.json"
        self.times: dict[str, float] = (read_json_object(self.path, "delete it (it records the stages' wall time "
                                                         "alone)") if self.path.exists() else {})

    def __call__(self, name: str, fn):
        t = time.perf_counter()
        try:
            return fn()
        finally:  # a stage stopped at a time limit counts its time too
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t
            atomic_write_text(self.path, json.dumps(self.times, indent=1))


def simulate_data(roots_sizes, sim_ids: int, sim_seed: int, progress: bool, log=print, train_cameras: int = 0,
                  people_seed: int | None = None, train_share: float = DEFAULTS["train_share"],
                  style: str = DEFAULTS["style"]) -> None:
    """SimMarket at each (root, size), unless it is already there."""
    people_seed = sim_seed if people_seed is None else people_seed
    for root, size in roots_sizes:
        meta = root / "simmarket.json"
        if meta.exists():
            have = settings(read_json_object(meta, f"delete {root} to simulate it again"))
            asked = {"identities": sim_ids, "seed": sim_seed, "height": size[0], "width": size[1],
                     "train_cameras": train_cameras, "style": style, "layout": DEFAULTS["layout"],
                     "people_seed": people_seed, "train_share": train_share}
            got = {k: have.get(k) for k in asked}
            if got != asked:
                raise UserError(f"{root}: SimMarket {got}, the pipeline asks for {asked}; delete {root} (or set "
                                "another out) to simulate it again")
        else:
            s = simulate(root, sim_ids, seed=sim_seed, size=tuple(size), overwrite=True, progress=progress,
                         train_cameras=train_cameras, people_seed=people_seed, train_share=train_share,
                         style=style)
            log(f"[data] SimMarket {s['height']}x{s['width']}: {s['images']} images, "
                f"{s['train_ids']} train ids -> {root}")


def generator_configs(out: Path, gen_root: Path, size, stage1: str, pose: str, stage2: str, set_: list[str]):
    """The stage-I, pose-AE and stage-II configs of a pipeline, their data and run paths redirected under ``out``."""
    gen = [f"data.root={gen_root}", f"data.size={list(size)}", "data.simulate_ids=0"]
    s1cfg = job_config(Stage1Config, stage1, gen, set_, "stage1")
    pcfg = job_config(PoseConfig, pose, gen, set_, "pose")
    s2cfg = job_config(Stage2Config, stage2, [f"stage1_run={out / 'stage1'}", f"pose_run={out / 'pose'}",
                                               f"data_root={gen_root}"], set_, "stage2")
    return s1cfg, pcfg, s2cfg


def train_generator(out: Path, gen_root: Path, s1cfg, pcfg, s2cfg, eval_pairs: int, stage: StageTimer,
                    progress: bool = True, log=print, deadline: float | None = None) -> None:
    """Pose AE, stage I, its evaluation, stage II, its evaluation and sample grids, under ``out``; each resumes
    after a kill and is skipped when it has finished. At the wall-clock ``deadline`` the stage in training saves
    its state and ``TimeLimitReached`` is raised: running the job again continues from there."""
    s1_run, pose_run, s2_run = out / "stage1", out / "pose", out / "stage2"

    def until_done(name: str, run: Path, steps: int, fit, key: str = "step", factors=None) -> None:
        if finished(run, steps, key, factors):
            log(f"[{name}] reusing {run}")
            return
        fit(run, resume=True, progress=progress, deadline=deadline)
        if deadline is not None and not finished(run, steps, key, factors):
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
        if not (s2_run / "samples" / "d_interpolation.png").exists():  # the last grid sample_grids writes
            sample_grids(s2_run, s2_run / "samples")

    stage("eval_stage1", eval1)
    stage("stage2", stage2)
