"""The experiment commands: reid, reference, reference-reid, pipeline."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from augment.cli.parser import config_arguments, quiet_argument
from augment.jobs import ablation_tables, reference_reid
from augment.jobs.pipeline import PipelineConfig, run_pipeline
from augment.jobs.reference import ReferenceConfig, rescore, run_reference
from augment.jobs.reid_recipes import ReidReferenceConfig
from generator.config import load_config
from generator.errors import UserError
from reid.ablation import AblationConfig, run_ablation


def _names(args, flag: str) -> list[str]:
    """The names a NAME,NAME option gives ([] when it is not given); one that gives none is refused."""
    value = getattr(args, flag.lstrip("-"))
    if value is None:
        return []
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise UserError(f"{flag} {value!r}: names nothing; give NAME,NAME or drop {flag}")
    return names


def _cmd_reference_reid(args) -> None:
    cfg = load_config(ReidReferenceConfig, args.config, args.set)
    only, worlds, fresh = (_names(args, flag) for flag in ("--only", "--world", "--fresh"))
    command = f"vmarket reference-reid {args.config}"  # how the runs are made (not --package-only, --only, --set)
    if args.status:
        given = next((flag for flag, v in (("--package", args.package), ("--package-only", args.package_only),
                                           ("--only", only), ("--fresh", fresh), ("--jobs", args.jobs != 1))
                      if v), None)
        if given is not None:
            raise UserError(f"{given} does not apply to --status, which trains and writes nothing; drop {given}")
        print(reference_reid.status(cfg, reuse=not args.no_shipped, worlds=worlds), end="")
        return
    if args.package_only:
        given = next((flag for flag, v in (("--only", only), ("--world", worlds), ("--fresh", fresh)) if v), None)
        if given is not None:
            raise UserError(f"{given} does not apply to --package-only, which tabulates every finished run of the "
                            f"config; drop {given}, or drop --package-only to train")
        reference_reid.collect(cfg, command=command, reuse=not args.no_shipped, runs_here=True)
    else:
        reference_reid.run(cfg, progress=not args.quiet, only=only, jobs=args.jobs, command=command, worlds=worlds,
                           reuse=not args.no_shipped, fresh=fresh)
    print((Path(cfg.out) / "ablation.md").read_text(), end="")
    print(f"-> {cfg.out}/ablation.csv, ablation.md, cmc.png, curve.png, pairs.png, provenance.json")
    if args.package or args.package_only:
        ablation_tables.package(cfg)


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
    if args.time_limit is not None and not 0 <= args.time_limit < float("inf"):  # NaN fails too
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


def add_reid(sub) -> None:
    r = sub.add_parser("reid", help="re-ID baselines with torchreid: `vmarket reid ablate -c CONFIG`")
    r.add_argument("action", choices=["ablate"],
                   help="ablate: train each of the config's settings over its seeds: real, virtual, "
                        "real+virtual, real+remix, real+new, real+remix+new, or stages chained with -> "
                        "(virtual->real); docs/glossary.md")
    config_arguments(r, None, "YAML ablation config (e.g. configs/demo/reid.yaml)")
    quiet_argument(r)
    r.set_defaults(func=_cmd_reid)


def add_reference(sub) -> None:
    rf = sub.add_parser("reference",
                        help="train, evaluate and ship the SimMarket reference models (what `make reference` runs)")
    config_arguments(rf, "configs/reference/reference-48-unlabelled.yaml", "reference YAML")
    rf.add_argument("--rescore", action="store_true",
                    help="score the shipped stage I (`package`) again under the current metric definitions and "
                         "record it in its provenance.json; trains nothing")
    rf.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                    help="save the training state and stop after this many seconds (exit code 3); the same command "
                         "run again continues from there. The limit is checked between training steps: the data are "
                         "made first, and the stage in training takes at least one step, so every run moves on")
    quiet_argument(rf)
    rf.set_defaults(func=_cmd_reference)


def add_reference_reid(sub) -> None:
    rr = sub.add_parser("reference-reid",
                        help="the reference re-ID ablation: every recipe (generator, cut-and-paste, standard "
                             "transforms) x data regime x seed on SimMarket (what `make reference-reid` runs)")
    config_arguments(rr, reference_reid.CONFIG, "ablation YAML")
    rr.add_argument("--package", action="store_true",
                    help="then copy the table, rows and provenance to reid/reference/ and the figures to docs/, and "
                         "rewrite the tables of docs/results.md from the shipped ablations")
    rr.add_argument("--package-only", action="store_true",
                    help="train nothing: tabulate the runs finished so far and package them")
    rr.add_argument("--status", action="store_true",
                    help="train and write nothing: the runs finished (here or shipped) and missing per world and "
                         "regime, and the training time the missing ones take at this machine's pace (of a regime "
                         "with no run here, at the shipped runs')")
    rr.add_argument("--only", metavar="NAME,NAME",
                    help="run these recipes only this time (the recipe the config's anchor key names, a real-only "
                         "one, always runs too: the filter and the plateau need it); a later full run reuses them")
    rr.add_argument("--world", metavar="NAME,NAME",
                    help="run these worlds of the config only this time; a later full run reuses them")
    rr.add_argument("--fresh", metavar="NAME,NAME",
                    help="train these recipes here even where the shipped ablation holds their rows (a CPU run does "
                         "not repeat its numbers on another machine or day: pair runs of one machine); out/fresh.json "
                         "keeps them for later commands")
    rr.add_argument("--no-shipped", action="store_true",
                    help="train every run here, also those whose rows the shipped ablation (the config's package) "
                         "holds from runs of the same recipe, training and reference checkpoints")
    rr.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="runs at a time, in worker processes (default 1: seed by seed); a GPU holds many, a 2-core "
                         "CPU gains nothing")
    quiet_argument(rr)
    rr.set_defaults(func=_cmd_reference_reid)


def add_pipeline(sub) -> None:
    pl = sub.add_parser("pipeline", help="the whole pipeline on SimMarket, with report.md (what `make demo` runs)")
    config_arguments(pl, "configs/demo/pipeline.yaml", "pipeline YAML")
    pl.add_argument("--from-scratch", action="store_true",
                    help="train stage I, the pose AE and stage II in this run (inside the demo budget) instead of "
                         "using the shipped reference checkpoints")
    quiet_argument(pl)
    pl.set_defaults(func=_cmd_pipeline)
