"""The generator commands: train, eval, sample."""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

from augment.cli.parser import count, quiet_argument, seed
from generator.api import checked_snapshot
from generator.config import load_config
from generator.errors import UserError
from generator.eval.stage1_report import EVAL_FILES, evaluate
from generator.io import check_output_folder, check_own_files, remove_empty_folders, removed_on_failure
from generator.training import pose_ae, stage1, stage2
from generator.training.runs import latest_run_dir, new_run_dir, not_a_run_of
from generator.training.runtime import launch_rank
from generator.training.stage2_report import REPORT_FILES, SAMPLE_FILES, quality_table, report, sample_grids

# job name -> (config class, train function); a plain dict, the user picks one by name
TRAIN_JOBS = {"stage1": (stage1.Stage1Config, stage1.train), "pose": (pose_ae.PoseConfig, pose_ae.train),
              "stage2": (stage2.Stage2Config, stage2.train)}


def resolve_run(job: str, config: str | None, resume, run_dir: str | None, out: str):
    """(config path, run directory, resuming?) for a training command."""
    desc = Path(config).stem if config else "default"
    if resume not in (None, False):
        if resume is True and not run_dir and config is None:  # which config's newest run: not said
            parent = Path(out) / job
            runs = sorted(p.name for p in parent.iterdir() if (p / "state.pt").exists()) if parent.is_dir() else []
            if not runs:
                raise UserError(f"{parent}: no run with a state.pt to resume; start one with -c CONFIG")
            raise UserError(f"--resume without -c: pass -c CONFIG (its newest run under {parent} is resumed) or "
                            f"--resume RUN_DIR; runs there: {', '.join(str(parent / r) for r in runs[-5:])}")
        if resume is True:
            found = Path(run_dir) if run_dir else latest_run_dir(Path(out) / job, desc)
            if found is None:
                raise UserError(f"{Path(out) / job}: no run of {desc!r} with a state.pt to resume; "
                                f"drop --resume to start one")
        else:
            found = Path(resume)
            if run_dir and Path(run_dir).resolve() != found.resolve():
                raise UserError(f"--resume {resume} and --run-dir {run_dir} name two runs; give the run to continue "
                                f"once (--resume RUN_DIR)")
        if not (found / "state.pt").exists() and not (found / "config.yaml").exists():
            raise UserError(f"{found}: not a run directory (no config.yaml / state.pt); "
                            f"pass the folder of a run to --resume")
        check_output_folder(found, "--resume")
        return (config or str(found / "config.yaml")), found, True
    if config is None:
        raise UserError(f"vmarket train {job}: pass -c CONFIG (e.g. configs/demo/{job}.yaml)")
    if run_dir:
        path = Path(run_dir)
        if path.exists() and any(path.iterdir()):
            raise UserError(f"{path}: run directory exists and is not empty; "
                            f"pass --resume to continue it or choose another")
        path.mkdir(parents=True, exist_ok=True)
        return config, path, False
    if launch_rank()[1] > 1:
        raise UserError("under torchrun pass --run-dir DIR, so that every rank writes to the same run directory")
    return config, new_run_dir(Path(out) / job, desc), False


def _cmd_train(args) -> None:
    cls, fn = TRAIN_JOBS[args.job]
    if args.skip_missing_keypoints:
        if args.job != "stage1":
            raise UserError("--skip-missing-keypoints applies to `vmarket train stage1` (the pose AE reads keypoint "
                            "rows only, and stage II follows its stage I's data config)")
        args.set = [*args.set, "data.skip_missing_keypoints=true"]
    kwargs = {}
    if args.factor is not None:
        if args.job != "stage2":
            raise UserError("--factor applies to `vmarket train stage2` only")
        kwargs["factors"] = ["fg", "bg", "pose"] if args.factor == "all" else [args.factor]
    # a bad config, --set or output folder is refused before resolve_run creates the run directory
    cfg = load_config(cls, args.config, args.set) if args.config else None
    created = None  # the first folder of the run directory's path that this command creates
    if args.resume in (None, False):
        created = check_output_folder(Path(args.run_dir) if args.run_dir else Path(args.out) / args.job,
                                      "--run-dir" if args.run_dir else "--out")
    config, run_dir, resuming = resolve_run(args.job, args.config, args.resume, args.run_dir, args.out)
    try:
        if cfg is None:  # resuming from the run's own config.yaml
            try:
                load_config(cls, config)
            except UserError as e:
                raise not_a_run_of(run_dir, args.job, e) from None
            cfg = load_config(cls, config, args.set)
        result = fn(cfg, run_dir, resume=resuming, progress=not args.quiet, **kwargs)
    except BaseException:
        # refused (bad data, a batch larger than the data) or stopped before its first checkpoint: nothing in the
        # run directory can be resumed, so what this command created goes, and the same command can run again
        if not resuming and not any(Path(run_dir).rglob("*.pt")):
            shutil.rmtree(run_dir, ignore_errors=True)
            if args.run_dir and created is None:  # the user's own empty folder stays
                Path(run_dir).mkdir(exist_ok=True)
            remove_empty_folders(Path(run_dir).parent, created)
        raise
    if launch_rank()[0] == 0:
        print(f"{args.job}: trained to step {result['step']} -> {run_dir}")


@contextmanager
def _out_folder(out: str | None, default: Path, files, job: str, inputs: dict):
    """The output folder of eval or sample: ``--out``, which must be new or hold nothing but the ``files`` that
    ``job`` writes there, else ``default`` (RUN/eval, RUN/samples: the commands' own). A command that fails inside
    the block leaves no folder it made behind (with the files it wrote there). ``inputs``' runs may hold it, their
    datasets (every input but ``--run``) not."""
    path = Path(out) if out else default
    created = check_output_folder(path, "--out", inputs=inputs, datasets=[k for k in inputs if k != "--run"])
    if out:
        check_own_files(out, files, "--out", job)
    with removed_on_failure(path if created is not None else None, path, created):
        yield path


def _stage1_data(run: Path) -> str:
    """The data root a stage-I run trained on (its snapshot's data.root), for ``eval stage1`` without ``--data``."""
    where, snap = checked_snapshot(run, "stage-I")
    data = snap["config"].get("data")
    root = data.get("root") if isinstance(data, dict) else None
    if not isinstance(root, str) or not root:
        raise UserError(f"{where}: its config names no data.root; pass --data with the root of the held-out data")
    return root


def _run_path(run: str, kind: str, any_snapshot: bool = False) -> Path:
    """What ``--run`` names, its snapshot checked to be a trained ``kind`` run's (missing, damaged or of another
    stage: one line naming it): a run directory, or its snapshot.pt (taken as the run directory); ``any_snapshot``:
    also another snapshot file (stage I's ``snapshot-l1.pt``, a shipped checkpoint), taken as it is."""
    path = Path(run)
    if path.is_file() and path.name != "snapshot.pt" and not any_snapshot:
        raise UserError(f"{path}: a file other than a run's snapshot.pt; pass the {kind} run directory (the command "
                        "reads what the run keeps beside its snapshot)")
    checked_snapshot(path, kind)
    return path.parent if path.is_file() and path.name == "snapshot.pt" else path


def _default_out(run: Path, name: str) -> Path:
    """RUN/NAME for a run directory; for a snapshot file, a folder beside it named after it."""
    return run / name if run.is_dir() else run.with_name(f"{run.stem}-{name}")


def _cmd_eval(args) -> None:
    if args.job == "stage2":
        run = _run_path(args.run, "stage-II")
        with _out_folder(args.out, run / "eval", REPORT_FILES, "`vmarket eval stage2`", {"--run": run}) as out:
            q = report(run, out)
        print(quality_table(q), end="")
        print(f"-> {out}/metrics.md")
        return
    run = _run_path(args.run, "stage-I", any_snapshot=True)
    data = args.data or _stage1_data(run)
    if not Path(data).is_dir():
        raise UserError(f"{data}: {'is a file, not a' if Path(data).exists() else 'no such'} dataset folder; pass "
                        f"--data with the root of the held-out data (query + gallery)")
    inputs = {"--run": run, "--data" if args.data else "run's data.root": data}
    with _out_folder(args.out, _default_out(run, "eval"), EVAL_FILES, "`vmarket eval stage1`", inputs) as out:
        result = evaluate(run, data, out, pairs=args.pairs, limit=args.limit)
    r = result["reconstruction"]
    line = f"stage1 eval: reconstruction SSIM {r['ssim']:.3f}, mask-SSIM {r['mask_ssim']:.3f}"
    if result["swaps"]:
        sw = result["swaps"]
        line += "; swap L1 model / copy-source: " + ", ".join(
            f"{k} {sw[f'{k}/model/l1']:.1f} / {sw[f'{k}/copy_source/l1']:.1f}"
            for k in ("pose", "background", "foreground"))
    print(f"{line} -> {out}/metrics.md")


def _cmd_sample(args) -> None:
    run = _run_path(args.run, "stage-II")
    with _out_folder(args.out, run / "samples", SAMPLE_FILES, "`vmarket sample`", {"--run": run}) as out:
        paths = sample_grids(run, out, seed=args.seed, cols=args.cols, rows=args.rows)
    print(f"sample grids: {', '.join(p.name for p in paths)} -> {out}")


def add_train(sub) -> None:
    t = sub.add_parser("train",
                       help="train a stage: stage1 (reconstruction), pose (pose autoencoder), stage2 (mappings)")
    t.add_argument("job", choices=["stage1", "pose", "stage2"], help="what to train")
    t.add_argument("-c", "--config", default=None, help="YAML config (e.g. configs/demo/stage1.yaml)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. train.steps=500")
    t.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue a killed run: the given run directory, or the latest run of this config (its "
                        "model settings stay as the run began; more steps or another schedule may be set)")
    t.add_argument("--run-dir", default=None, help="run directory (default: outputs/JOB/NNNNN-CONFIG)")
    t.add_argument("--out", default="outputs", help="parent of the run directories")
    t.add_argument("--factor", default=None, choices=["fg", "bg", "pose", "all"],
                   help="stage2 only: which mapping to train")
    t.add_argument("--skip-missing-keypoints", action="store_true",
                   help="stage1: leave out training images without a keypoint row (counted in the run log) "
                        "instead of refusing the dataset; same as --set data.skip_missing_keypoints=true")
    quiet_argument(t, "bar")
    t.set_defaults(func=_cmd_train)


def add_eval(sub) -> None:
    e = sub.add_parser("eval", help="evaluate a trained stage: reconstruction SSIM and counterfactual swap scores")
    e.add_argument("job", choices=["stage1", "stage2"], help="what to evaluate")
    e.add_argument("--run", required=True,
                   help="run directory of the trained stage, or its snapshot.pt (stage1: any stage-I snapshot, such "
                        "as snapshot-l1.pt)")
    e.add_argument("--data", default=None,
                   help="dataset root (default: the run's data.root); held-out = query + gallery")
    e.add_argument("--pairs", type=count(1), default=200, help="SimMarket swap pairs to score")
    e.add_argument("--limit", type=count(1), default=512, help="held-out images for the reconstruction metrics")
    e.add_argument("--out", default=None,
                   help="output folder, new or holding only what eval writes there (default: RUN/eval; for a "
                        "snapshot file other than snapshot.pt, SNAPSHOT-eval beside it)")
    e.set_defaults(func=_cmd_eval)


def add_sample(sub) -> None:
    sm = sub.add_parser("sample",
                        help="PNG grids from a stage-II run: sampled people, identities, resampled factors, "
                             "interpolations")
    sm.add_argument("--run", required=True, help="run directory of a trained stage-II run, or its snapshot.pt")
    sm.add_argument("--out", default=None,
                    help="output folder, new or holding only the sample grids (default: RUN/samples)")
    sm.add_argument("--seed", type=seed, default=0, help="sampling seed; the same seed gives the same grids")
    # a grid is one PNG to look at: 64 x 64 images of 128x64 are already 4,096 x 8,192 pixels
    sm.add_argument("--cols", type=count(3, 64), default=8,
                    help="images per row (3 to 64: a row of the resampled-factor grid is a real image, its "
                         "reconstruction and at least one sample)")
    sm.add_argument("--rows", type=count(1, 64), default=4, help="rows (people) per grid (1 to 64)")
    sm.set_defaults(func=_cmd_sample)
