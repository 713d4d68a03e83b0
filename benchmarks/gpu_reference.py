"""The reference generator in one job that fits a short GPU window, resumable in the next window.

One run makes the SimMarket data, trains (or continues) stage I, the pose AE and stage II of a reference config
(``vmarket reference``), evaluates and packages them when training finishes, and leaves everything in OUT as a
few files of at most 15 MiB (``generator.training.transfer``): ``runs.tar.NNN`` parts, ``transfer.json`` (their
index) and ``summary.json`` (status, steps, times, device). Training stops at a wall-clock budget, so that the
state is saved and packed before the window's limit kills the job; the next window passes that OUT back with
``--resume-from`` and continues from the saved steps. The data is not packed: it is rebuilt from the config's
seeds (SimMarket is deterministic).

    bash benchmarks/gpu_reference.sh OUT [--resume-from PREVIOUS_OUT] [--config CONFIG] [--set KEY=VALUE ...]
        [--budget-s 480]

On a CPU it runs the same way (slowly); the tests run it with a tiny config.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from augment.jobs.reference import ReferenceConfig, run_reference
from generator.config import load_config
from generator.errors import UserError
from generator.io import atomic_write_text, load_checkpoint
from generator.training.runtime import TimeLimitReached
from generator.training.transfer import pack, unpack

PACK_MARGIN_S = 90  # seconds kept after training for evaluation, packing and the copy back
MAX_FILES = 8  # files a window gives back: the parts, transfer.json and summary.json
# what a window's files may hold: 64 MiB come back from a window, and 64 MiB travel to the next one with the
# working tree, of which the repository takes about 28
CARRY_MIB, RETURN_MIB = 32.0, 56.0


def _steps(work: Path) -> dict:
    """The step each training run has saved (its snapshot), for the summary."""
    out = {}
    for run, key in (("pose", "step"), ("stage1", "step"), ("stage2", "steps")):
        snap = work / run / "snapshot.pt"
        if snap.is_file():
            out[run] = load_checkpoint(snap)[key]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder for the packed runs and summary.json (created)")
    ap.add_argument("--resume-from", default=None, metavar="DIR", help="OUT of an earlier window: continue it")
    ap.add_argument("--config", default="configs/reference/reference.yaml", help="reference YAML")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    ap.add_argument("--budget-s", type=float, default=480.0,
                    help=f"seconds this job may take in all; training stops {PACK_MARGIN_S} s before (default 480)")
    ap.add_argument("--work", default="/tmp/vm_reference", help="working folder on this machine")
    ap.add_argument("--part-mib", type=float, default=15.0, help="largest file written to OUT (MiB)")
    ap.add_argument("--budget-mib", type=float, default=CARRY_MIB,
                    help="all parts together (MiB) of a run stopped at its budget: what travels on to the next "
                         f"window beside the repository (default {CARRY_MIB:g})")
    ap.add_argument("--finished-mib", type=float, default=RETURN_MIB,
                    help="all parts together (MiB) of a finished run, which only comes back (default "
                         f"{RETURN_MIB:g}; at most {MAX_FILES - 2} parts)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    t0 = time.time()
    try:
        if math.ceil(args.budget_mib / args.part_mib) + 2 > MAX_FILES:
            raise UserError(f"--budget-mib {args.budget_mib:g} in parts of --part-mib {args.part_mib:g} makes more "
                            f"than {MAX_FILES} files with the index and summary; raise --part-mib")
        work, out = Path(args.work), Path(args.out)
        if work.exists():
            shutil.rmtree(work)
        if args.resume_from:
            index = unpack(args.resume_from, work)
            print(f"[gpu_reference] continued from {args.resume_from} ({index['level']} state)", flush=True)
        cfg = load_config(ReferenceConfig, args.config, args.set + [f"out={work}", f"package={work / 'package'}",
                                                                    f"figures={work / 'figures'}"])
        if not any(s.startswith("stage2:train.device=") for s in cfg.set):  # stage II's own default is the CPU
            cfg.set = [*cfg.set, "stage2:train.device=auto"]
        status = "failed"  # until training ends one way or the other; the runs are packed whatever happens
        try:
            run_reference(cfg, progress=not args.quiet, deadline=t0 + args.budget_s - PACK_MARGIN_S,
                          command=" ".join(["benchmarks/gpu_reference.sh OUT --config", args.config]
                                           + [f"--set {v}" for v in args.set]))
            status = "finished"
        except TimeLimitReached as e:
            status = "stopped"
            print(f"[gpu_reference] {e}", flush=True)
        finally:  # a finished run travels no further: it may use what a window gives back
            budget = (min(args.finished_mib, (MAX_FILES - 2) * args.part_mib) if status == "finished"
                      else args.budget_mib)
            try:
                index = pack(work, out, budget_mib=budget, part_mib=args.part_mib, exclude=("data", "shipped"))
            except UserError as e:  # the summary still comes back, and says why nothing else did
                failure = e.__context__  # the training's own error, when it failed
                out.mkdir(parents=True, exist_ok=True)
                atomic_write_text(out / "summary.json", json.dumps(
                    {"status": status, "steps": _steps(work), "seconds": round(time.time() - t0, 1),
                     "packed": {"error": str(e)}, "config": args.config, "set": args.set,
                     **({"error": f"{type(failure).__name__}: {failure}"} if status == "failed" and failure else {})},
                    indent=1))
                raise
    except UserError as e:
        print(f"gpu_reference: error: {e}", file=sys.stderr)
        return 2
    summary = {"status": status, "steps": _steps(work), "seconds": round(time.time() - t0, 1),
               "times": json.loads((work / "times.json").read_text()) if (work / "times.json").is_file() else {},
               "packed": {"level": index["level"], "mib": round(index["bytes"] / 2 ** 20, 2),
                          "parts": len(index["parts"])},
               "device": (torch.cuda.get_device_name() if torch.cuda.is_available()
                          else platform.processor() or platform.machine()),
               "torch": torch.__version__, "config": args.config, "set": args.set,
               "resumed_from": args.resume_from}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    print(f"[gpu_reference] {status}: steps {summary['steps']}, {summary['seconds']:.0f} s; packed "
          f"{summary['packed']['mib']} MiB ({index['level']}) in {len(index['parts'])} parts -> {out}", flush=True)
    return 0 if status == "finished" else 3


if __name__ == "__main__":
    sys.exit(main())
