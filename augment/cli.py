"""`vmarket`: the one console script. Subcommands parse arguments and call the library.

Errors a user can fix (``UserError``) print as one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

from augment import reference_reid
from augment.builder import BuildConfig, build, parse_shard
from augment.builder import skipped_line as build_skipped_line
from augment.cutpaste import PLATES, WHAT, cut_paste, skipped_line
from augment.pipeline import PipelineConfig, run_pipeline
from augment.reference import ReferenceConfig, rescore, run_reference
from augment.reference_reid import ReidReferenceConfig
from augment.stage2_report import quality_table, report, sample_grids
from generator.config import load_config
from generator.data.dataset import check_images, market_dataset
from generator.data.estimate import ESTIMATORS, make_estimator, plan_keypoints, write_keypoints
from generator.data.layouts import DATASET_NAMES, FORMATS, detect_format, scan_dataset
from generator.errors import UserError
from generator.eval.stage1_report import evaluate
from generator.io import check_output_folder, remove_empty_folders
from generator.pose import NO_PERSON
from generator.simmarket.dataset import LAYOUTS, parse_size, simulate
from generator.simmarket.world import STYLES
from generator.training import pose_ae, stage1, stage2
from generator.training.runs import latest_run_dir, new_run_dir
from generator.training.runtime import TimeLimitReached
from reid.ablation import AblationConfig, run_ablation
from reid.consistency import filter_generated


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the problem and where to look, no usage dump."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def _cmd_simulate(args) -> None:
    size = parse_size(args.size)
    s = simulate(args.out, args.ids, seed=args.seed, size=size, overwrite=args.overwrite, progress=not args.quiet,
                 train_cameras=args.train_cameras, layout=args.layout, style=args.style, people_seed=args.people_seed,
                 train_share=args.train_share)
    print(
        f"SimMarket: {s['identities']} identities ({s['train_ids']} train / {s['test_ids']} test), "
        f"{s['images']} images "
        f"(train {s['train']}, query {s['query']}, gallery {s['gallery']} incl. {s['distractors']} distractors and "
        f"{s['junk']} junk) at {s['height']}x{s['width']} in {s['seconds']:.1f} s "
        f"({s['images'] / s['seconds']:.0f} img/s)"
        + (f" in the {args.layout} layout" if args.layout != "market1501" else "") + f" -> {args.out}"
    )


NAMES_SHOWN = 5  # `vmarket check`: images named per class of problem


def _cmd_check(args) -> None:
    size = parse_size(args.size)
    splits = ("train", "query", "gallery")
    # names, then image contents, then keypoints: the first error named is the file's own defect, not the
    # keypoint row a broken or stray file never had
    fmt = args.format if args.format != "auto" else detect_format(args.root)
    check_images(scan_dataset(args.root, splits, keep_junk=True, fmt=fmt, fmt_key="--format"), size,
                 progress=not args.quiet)
    ds = market_dataset(args.root, splits, size=size, keypoints_csv=args.keypoints, keep_junk=True,
                        skip_missing_keypoints=args.skip_missing_keypoints, fmt=fmt, fmt_key="--format")
    by_split = Counter(r.split for r in ds.records)
    ids = {s: len({r.pid for r in ds.records if r.split == s and r.is_person}) for s in splits}
    cams = sorted({r.camid for r in ds.records})
    missing = sum(int((rcv[:, 2] == 0).sum()) for rcv in ds.rcv)
    print(
        f"ok: {len(ds)} images at {size[0]}x{size[1]} (train {by_split['train']} / {ids['train']} ids, "
        f"query {by_split['query']} / {ids['query']} ids, gallery {by_split['gallery']}), cameras {cams}, "
        f"{missing / (18 * len(ds)):.1%} joints missing"
        + (f"; without a keypoint row: {ds.skipped_unlabelled} junk / distractor images (never trained on)"
           if ds.skipped_unlabelled else "")
        + (f", {ds.skipped_missing} person images (left out: --skip-missing-keypoints)" if ds.skipped_missing else "")
        + f" -> {args.root} ({DATASET_NAMES[fmt]})"
    )
    nobody = ds.without_person()
    if nobody:
        names = ", ".join(f"{r.split}/{r.keypoint_name}" for r in nobody[:NAMES_SHOWN])
        print(f"no visible person: {len(nobody)} of {sum(r.is_person for r in ds.records)} person images "
              f"({NO_PERSON}); cut-and-paste and the builder never use them as a person, stage I trains on them "
              f"(it reads no label): {names}" + (f" and {len(nobody) - NAMES_SHOWN} more" if len(nobody) > NAMES_SHOWN
                                                 else ""))


# job name -> (config class, train function); a plain dict, the user picks one by name
TRAIN_JOBS = {"stage1": (stage1.Stage1Config, stage1.train), "pose": (pose_ae.PoseConfig, pose_ae.train),
              "stage2": (stage2.Stage2Config, stage2.train)}


def resolve_run(job: str, config: str | None, resume, run_dir: str | None, out: str):
    """(config path, run directory, resuming?) for a training command."""
    desc = Path(config).stem if config else "default"
    if resume not in (None, False):
        if resume is True:
            found = Path(run_dir) if run_dir else latest_run_dir(Path(out) / job, desc)
            if found is None:
                raise UserError(f"{Path(out) / job}: no run of {desc!r} with a state.pt to resume; "
                                f"drop --resume to start one")
        else:
            found = Path(resume)
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
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
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
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{args.job}: trained to step {result['step']} -> {run_dir}")


def _cmd_eval(args) -> None:
    run = Path(args.run)
    if args.job == "stage2":
        if not (run / "snapshot.pt").is_file():
            raise UserError(f"{run}: no snapshot.pt; pass the run directory of a trained stage-II run")
        out = Path(args.out) if args.out else run / "eval"
        q = report(run, out)
        print(quality_table(q), end="")
        print(f"-> {out}/metrics.md")
        return
    if not (run / "snapshot.pt").is_file():
        raise UserError(f"{run}: no snapshot.pt; pass the run directory of a trained stage-I run")
    data = args.data or yaml.safe_load((run / "config.yaml").read_text())["data"]["root"]
    out = Path(args.out) if args.out else run / "eval"
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
    run = Path(args.run)
    if not (run / "snapshot.pt").is_file():
        raise UserError(f"{run}: no snapshot.pt; pass the run directory of a trained stage-II run")
    out = Path(args.out) if args.out else run / "samples"
    paths = sample_grids(run, out, seed=args.seed, cols=args.cols, rows=args.rows)
    print(f"sample grids: {', '.join(p.name for p in paths)} -> {out}")


def _cmd_build(args) -> None:
    cfg = load_config(BuildConfig, args.config, args.set)
    s = build(cfg, parse_shard(args.shard), progress=not args.quiet)
    line = (f"build shard {s['shard']}: {s['identities']} identities ({s['rendered_now']} rendered now, "
            f"{s['images_now']} images at {s['images_per_s']:.1f} img/s); "
            + (f"backgrounds from cameras the identity was never seen in {s['bg_unseen_camera_share']:.1%}"
               if "bg_unseen_camera_share" in s else f"novelty rejection rate {s['novelty_rejection_rate']:.1%}"))
    if s.get("finalized"):
        line += (f"; dataset complete: {s['images']} images (train {s['n_train']}, query {s['n_query']}, "
                 f"gallery {s['n_gallery']})")
    else:
        line += "; waiting for the other shards before writing the manifest"
    print(f"{line} -> {cfg.out}")
    if build_skipped_line(s):
        print(build_skipped_line(s))


def _cmd_cutpaste(args) -> None:
    s = cut_paste(args.root, args.out, per_image=args.per_image, seed=args.seed, size=parse_size(args.size),
                  mask_radius=args.mask_radius, blur=args.blur, plates=args.plates, stage1_run=args.stage1_run,
                  keypoints_csv=args.keypoints, skip_missing_keypoints=args.skip_missing_keypoints,
                  jpeg_quality=args.jpeg_quality, device=args.device, progress=not args.quiet)
    what = f"cutpaste {WHAT[s['plates']]}"
    if s.get("already_complete"):
        print(f"{what}: already complete, {s['images']} images -> {args.out}")
    else:
        print(f"{what}: {s['images']} images ({s['sources']} source images, {s['identities']} identities; "
              f"{s['written_now']} written now at {s['images_per_s']:.0f} img/s); donor from a camera the identity "
              f"never appears in: {s['donor_camera_unseen']:.1%} -> {args.out}")
    if skipped_line(s, args.out):
        print(skipped_line(s, args.out))


def _cmd_filter(args) -> None:
    s = filter_generated(args.model, args.real_root, args.generated, args.out, model=args.model_name,
                         size=parse_size(args.size), new_tau=args.new_tau, progress=not args.quiet, device=args.device)
    print(f"filter: {s['images']} images ({s['remix_images']} of real identities, {s['new_images']} new), kept "
          f"{s['kept']}, rejection rate {s['rejection_rate']:.1%} over {s['identities']} identities -> {args.out}")


def _cmd_reference_reid(args) -> None:
    cfg = load_config(ReidReferenceConfig, args.config, args.set)
    command = f"vmarket reference-reid {args.config}"  # how the runs are made (not --package-only, --only, --set)
    if args.package_only:
        reference_reid.collect(cfg, command=command)
    else:
        reference_reid.run(cfg, progress=not args.quiet, only=[n for n in args.only.split(",") if n], jobs=args.jobs,
                           command=command)
    print((Path(cfg.out) / "ablation.md").read_text(), end="")
    print(f"-> {cfg.out}/ablation.csv, ablation.md, cmc.png, curve.png, provenance.json")
    if args.package or args.package_only:
        reference_reid.package(cfg)


def _cmd_reid(args) -> None:
    cfg = load_config(AblationConfig, args.config, args.set)
    run_ablation(cfg, progress=not args.quiet)
    print((Path(cfg.out) / "results.md").read_text(), end="")
    print(f"-> {cfg.out}/results.csv, results.md, cmc.png")


def _cmd_reference(args) -> None:
    cfg = load_config(ReferenceConfig, args.config, args.set)
    if args.rescore and args.time_limit is not None:
        raise UserError("--time-limit applies to training; --rescore trains nothing, so give one or the other")
    if args.rescore:
        with tempfile.TemporaryDirectory() as work:
            rescore(cfg.package, work, progress=not args.quiet)
        return
    if args.time_limit is not None and args.time_limit < 0:
        raise UserError(f"--time-limit {args.time_limit}: give seconds >= 0")
    deadline = None if args.time_limit is None else time.time() + args.time_limit
    prov = run_reference(cfg, progress=not args.quiet, command=" ".join(["vmarket", "reference", args.config]
                                                                        + [f"--set {v}" for v in args.set]),
                         deadline=deadline)
    s1 = prov["metrics"]["stage1"]["reconstruction"]
    print(f"reference models shipped -> {cfg.package} (held-out SSIM {s1['ssim']:.3f}; checks: "
          + ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in prov["checks"].items()) + ")")


def _cmd_pipeline(args) -> None:
    cfg = load_config(PipelineConfig, args.config, args.set + (["from_scratch=true"] if args.from_scratch else []))
    path = run_pipeline(cfg, progress=not args.quiet)
    print(f"pipeline finished -> {path}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vmarket",
                description="Virtual Market: disentangled person generation for re-ID data augmentation.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    s = sub.add_parser("simulate", help="write a SimMarket dataset (Market-1501 layout, keypoints, manifest)")
    s.add_argument("--out", required=True, help="output folder (created; must be empty unless --overwrite)")
    s.add_argument("--ids", type=int, required=True,
                   help="number of identities, split between train and test by --train-share")
    s.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same dataset")
    s.add_argument("--size", default="128x64", help="image size HEIGHTxWIDTH (default 128x64)")
    s.add_argument("--train-cameras", type=int, default=0, metavar="K",
                   help="limit every training identity to exactly K of the 6 cameras (test identities keep 2-6); "
                        "default 0: no limit")
    s.add_argument("--layout", choices=LAYOUTS, default="market1501",
                   help="write the dataset in this dataset's layout: market1501 (default), duke (DukeMTMC-reID), "
                        "msmt17 (list files), cuhk03 (CUHK03's new protocol with its images already extracted: "
                        "cuhk03_new_protocol_config_*.mat, images_detected/, images_labeled/; no raw "
                        "cuhk03_release/cuhk-03.mat, so torchreid's CUHK03 class does not read it: load it with "
                        "reid.torchreid_adapter.register_market); the same images and identities")
    s.add_argument("--style", choices=STYLES, default="flat",
                   help="how people are drawn: flat (default) or textured (grain, light from above, inked outlines, "
                        "duller scenes); the same identities, poses and keypoints")
    s.add_argument("--people-seed", type=int, default=None, metavar="SEED",
                   help="draw the people (and their cameras and poses) from this seed, the scenes from --seed: other "
                        "people in the same cameras, e.g. an unlabelled split for a generator (default: --seed)")
    s.add_argument("--train-share", type=float, default=0.5, metavar="S",
                   help="share of the identities in the training split (default 0.5)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_simulate)

    c = sub.add_parser("check", help="validate a re-ID dataset (Market-1501, DukeMTMC-reID, MSMT17, CUHK03): names, "
                                     "keypoints, images")
    c.add_argument("--root", required=True, help="dataset root (holding bounding_box_train/ or Market-1501-v15.09.15/, "
                                                 "DukeMTMC-reID/, MSMT17_V1/, cuhk03/, ...)")
    c.add_argument("--format", default="auto", choices=("auto", *FORMATS),
                   help="dataset layout (default auto: detected from the folder)")
    c.add_argument("--keypoints", default=None,
                   help="keypoint CSV for all splits (default: market-annotation-*.csv in the root)")
    c.add_argument("--size", default="128x64", help="expected image size HEIGHTxWIDTH (default 128x64)")
    c.add_argument("--skip-missing-keypoints", action="store_true",
                   help="count person images without a keypoint row instead of refusing the dataset")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=_cmd_check)

    t = sub.add_parser("train",
                       help="train a stage: stage1 (reconstruction), pose (pose autoencoder), stage2 (mappings)")
    t.add_argument("job", choices=["stage1", "pose", "stage2"], help="what to train")
    t.add_argument("-c", "--config", default=None, help="YAML config (e.g. configs/demo/stage1.yaml)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. train.steps=500")
    t.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue a killed run: the given run directory, or the latest run of this config")
    t.add_argument("--run-dir", default=None, help="run directory (default: outputs/JOB/NNNNN-CONFIG)")
    t.add_argument("--out", default="outputs", help="parent of the run directories")
    t.add_argument("--factor", default=None, choices=["fg", "bg", "pose", "all"],
                   help="stage2 only: which mapping to train")
    t.add_argument("--skip-missing-keypoints", action="store_true",
                   help="stage1: leave out training images without a keypoint row (counted in the run log) "
                        "instead of refusing the dataset; same as --set data.skip_missing_keypoints=true")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="evaluate a trained stage: reconstruction SSIM and counterfactual swap scores")
    e.add_argument("job", choices=["stage1", "stage2"], help="what to evaluate")
    e.add_argument("--run", required=True, help="run directory of the trained stage")
    e.add_argument("--data", default=None,
                   help="dataset root (default: the run's data.root); held-out = query + gallery")
    e.add_argument("--pairs", type=int, default=200, help="SimMarket swap pairs to score")
    e.add_argument("--limit", type=int, default=512, help="held-out images for the reconstruction metrics")
    e.add_argument("--out", default=None, help="output folder (default: RUN/eval)")
    e.set_defaults(func=_cmd_eval)

    sm = sub.add_parser("sample",
                        help="PNG grids from a stage-II run: sampled people, identities, resampled factors, "
                             "interpolations")
    sm.add_argument("--run", required=True, help="run directory of a trained stage-II run")
    sm.add_argument("--out", default=None, help="output folder (default: RUN/samples)")
    sm.add_argument("--seed", type=int, default=0, help="sampling seed; the same seed gives the same grids")
    sm.add_argument("--cols", type=int, default=8, help="images per row")
    sm.add_argument("--rows", type=int, default=4, help="rows (people) per grid")
    sm.set_defaults(func=_cmd_sample)

    b = sub.add_parser("build", help="build a Virtual Market: N identities x K images, filters, Market-1501 export",
                       description="Build a Virtual Market. With test_share: 0 (the default) the output is a "
                                   "training-only set: its query/ is empty, so torchreid's Market1501 raises "
                                   "IndexError on it. Train on it beside a real dataset with "
                                   "reid.extra_training.register_with_extra_training (remixes of fg_mode: real keep "
                                   "their real identities, sampled ones are added as new identities); the output's "
                                   "README.txt holds the code.")
    b.add_argument("-c", "--config", required=True, help="YAML build config (e.g. configs/demo/build.yaml)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    b.add_argument("--shard", default=None, metavar="I/N",
                   help="build identities i, i+n, ... only (default: torchrun rank / world)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_cmd_build)

    cp = sub.add_parser("cutpaste",
                        help="cut-and-paste baseline (no generator): every real training person, cut out by a soft "
                             "pose mask, pasted into another camera's image (or a generated background plate)",
                        description="Cut-and-paste: every real training person, cut out by a soft pose mask, pasted "
                                    "into another camera's image (or a generated background plate), keeping its real "
                                    "pid. The output is a training-only set (no query or gallery images), which "
                                    "torchreid's Market1501 cannot load (IndexError on the empty query): train on it "
                                    "beside the real dataset with reid.extra_training.register_with_extra_training, "
                                    "which keeps the real identities; the output's README.txt holds the code.")
    cp.add_argument("--root", required=True,
                    help="re-ID dataset with keypoints (its training split): Market-1501, DukeMTMC-reID, CUHK03 or "
                         "MSMT17; images whose keypoints show no person are skipped (OUT/skipped.csv)")
    cp.add_argument("--out", required=True,
                    help="output folder (Market-1501 layout, MSMT17's for MSMT17 data; training split only; must not "
                         "exist or be empty)")
    cp.add_argument("--per-image", type=int, default=1, help="pasted images per real training image (default 1)")
    cp.add_argument("--seed", type=int, default=0, help="donor seed; the same seed gives the same dataset")
    cp.add_argument("--size", default="128x64", help="image size HEIGHTxWIDTH of the dataset (default 128x64)")
    cp.add_argument("--keypoints", default=None,
                    help="keypoint CSV of the training split (default: market-annotation-train.csv in the root)")
    cp.add_argument("--mask-radius", type=int, default=None,
                    help="disk radius (px) of the pose mask (default 7 at 128x64, scaled with the height: 4 at 64x32)")
    cp.add_argument("--blur", type=float, default=None,
                    help="Gaussian blur std (px) of the mask edge (default 2 at 128x64, scaled with the height)")
    cp.add_argument("--plates", choices=PLATES, default="image",
                    help="background: the donor image (default); a person-free plate stage I decodes from the "
                         "donor's background embedding (generator; needs --stage1-run); or the donor image with its "
                         "own person filled in by that plate (inpaint; needs --stage1-run); or half and half: the "
                         "donor image or its plate, a seeded random half each (mixed; needs --stage1-run)")
    cp.add_argument("--stage1-run", default=None,
                    help="--plates generator, inpaint or mixed: stage-I run directory or snapshot (e.g. "
                         "generator/reference/stage1.pt)")
    cp.add_argument("--device", default="cpu", help="device of the plate generator (default cpu)")
    cp.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality 1..100 (default 95)")
    cp.add_argument("--skip-missing-keypoints", action="store_true",
                    help="leave out training images without a keypoint row instead of refusing the dataset")
    cp.add_argument("--quiet", action="store_true", help="no progress bar")
    cp.set_defaults(func=_cmd_cutpaste)

    fl = sub.add_parser("filter",
                        help="identity-consistency filter: drop generated training images a re-ID model trained on "
                             "the real data places nearer another identity (or, for a new identity, too near a real "
                             "one)")
    fl.add_argument("--model", required=True, help="state.pt of a re-ID run trained on --real-root (vmarket reid)")
    fl.add_argument("--real-root", required=True, help="the real Market-1501-format dataset the model trained on")
    fl.add_argument("--generated", required=True, help="generated dataset (Market-1501 layout; its training split)")
    fl.add_argument("--out", required=True, help="output folder (Market-1501 layout; must not exist or be empty)")
    fl.add_argument("--model-name", default="osnet_x0_25", help="torchreid model of the run (default osnet_x0_25)")
    fl.add_argument("--size", default="128x64", help="re-ID input size HEIGHTxWIDTH of the run (default 128x64)")
    fl.add_argument("--new-tau", type=float, default=0.9,
                    help="drop a new identity's image whose cosine to a real identity's centroid is this or more "
                         "(default 0.9)")
    fl.add_argument("--device", default="auto", help="device of the re-ID model (default: cuda if available)")
    fl.add_argument("--quiet", action="store_true", help="no progress bars")
    fl.set_defaults(func=_cmd_filter)

    r = sub.add_parser("reid", help="re-ID baselines with torchreid: `vmarket reid ablate -c CONFIG`")
    r.add_argument("action", choices=["ablate"],
                   help="ablate: real / virtual / real+virtual / virtual->real over seeds")
    r.add_argument("-c", "--config", required=True, help="YAML ablation config (e.g. configs/demo/reid.yaml)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=_cmd_reid)

    rf = sub.add_parser("reference",
                        help="train, evaluate and ship the SimMarket reference models (what `make reference` runs)")
    rf.add_argument("config", nargs="?", default="configs/reference/reference.yaml",
                    help="reference YAML (default configs/reference/reference.yaml)")
    rf.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    rf.add_argument("--rescore", action="store_true",
                    help="score the shipped stage I (`package`) again under the current metric definitions and "
                         "record it in its provenance.json; trains nothing")
    rf.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                    help="save the training state and stop after this many seconds (exit code 3); the same command "
                         "run again continues from there")
    rf.add_argument("--quiet", action="store_true", help="no progress bars")
    rf.set_defaults(func=_cmd_reference)

    rr = sub.add_parser("reference-reid",
                        help="the reference re-ID ablation: every recipe (generator, cut-and-paste, standard "
                             "transforms) x data regime x seed on SimMarket (what `make reference-reid` runs)")
    rr.add_argument("config", nargs="?", default="configs/reference/reid.yaml",
                    help="ablation YAML (default configs/reference/reid.yaml)")
    rr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    rr.add_argument("--package", action="store_true",
                    help="then copy the table, rows and provenance to reid/reference/ and the figures to docs/")
    rr.add_argument("--package-only", action="store_true",
                    help="train nothing: tabulate the runs finished so far and package them")
    rr.add_argument("--only", default="", metavar="NAME,NAME",
                    help="run these recipes only this time (real always runs); a later full run reuses them")
    rr.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="runs at a time, in worker processes (default 1: seed by seed); a GPU holds many, a 2-core "
                         "CPU gains nothing")
    rr.add_argument("--quiet", action="store_true", help="no progress bars")
    rr.set_defaults(func=_cmd_reference_reid)

    pl = sub.add_parser("pipeline", help="the whole pipeline on SimMarket, with report.md (what `make demo` runs)")
    pl.add_argument("config", nargs="?", default="configs/demo/pipeline.yaml",
                    help="pipeline YAML (default configs/demo/pipeline.yaml)")
    pl.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    pl.add_argument("--from-scratch", action="store_true",
                    help="train stage I, the pose AE and stage II in this run (inside the demo budget) instead of "
                         "using the shipped reference checkpoints")
    pl.add_argument("--quiet", action="store_true", help="no progress bars")
    pl.set_defaults(func=_cmd_pipeline)

    kp = sub.add_parser("keypoints",
                        help="estimate the 18 COCO keypoints of every image of a re-ID dataset (Market-1501, "
                             "DukeMTMC-reID, MSMT17, CUHK03) and write the keypoint CSVs (resumes after a kill)")
    kp.add_argument("--root", required=True,
                    help="dataset root (holding bounding_box_train/ or Market-1501-v15.09.15/, DukeMTMC-reID/, "
                         "MSMT17_V1/, cuhk03/, ...)")
    kp.add_argument("--format", default="auto", choices=("auto", *FORMATS),
                    help="dataset layout (default auto: detected from the folder; CUHK03's labelled boxes: "
                         "cuhk03_labeled)")
    kp.add_argument("--out", default=None, metavar="CSV",
                    help="one CSV for all splits (default: market-annotation-train.csv and market-annotation-test.csv "
                         "where check and training read them: beside the split folders or MSMT17 lists, in CUHK03's "
                         "images_detected/ or images_labeled/)")
    kp.add_argument("--estimator", choices=ESTIMATORS, default="mediapipe",
                    help="mediapipe (default; offline, pip install 'virtual-market[pose]') or keypointrcnn "
                         "(torchvision Keypoint R-CNN, more accurate, batched on a GPU; needs its weights)")
    kp.add_argument("--weights", default=None, metavar="FILE",
                    help="keypointrcnn weights (default: torchvision's cache, TORCH_HOME/hub/checkpoints)")
    kp.add_argument("--batch", type=int, default=16, help="images per estimator call and checkpoint (default 16)")
    kp.add_argument("--device", default="auto", help="keypointrcnn device (default: cuda if available)")
    kp.add_argument("--overwrite", action="store_true", help="replace existing keypoint CSVs")
    kp.add_argument("--quiet", action="store_true", help="no progress bar")
    kp.set_defaults(func=_cmd_keypoints)
    return p


def _cmd_keypoints(args) -> None:
    # a bad dataset or --out is refused before a model loads
    plan_keypoints(args.root, args.out, args.overwrite, fmt=args.format)
    estimator = make_estimator(args.estimator, args.weights, device=args.device)
    s = write_keypoints(args.root, estimator, out=args.out, batch=args.batch, overwrite=args.overwrite,
                        progress=not args.quiet, fmt=args.format)
    print(f"keypoints ({args.estimator}): {s['images']} images ({s['estimated_now']} estimated now at "
          f"{s['images_per_s']:.1f} img/s), {s['joints_found']:.1%} joints detected, no person in {s['no_person']} "
          f"-> {', '.join(s['outputs'])}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        sys.stderr.write(f"vmarket {args.command}: error: {e}\n")
        return 2
    except TimeLimitReached as e:
        sys.stderr.write(f"vmarket {args.command}: {e}; run the same command again to continue\n")
        return 3
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
