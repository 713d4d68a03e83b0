"""What the lever benchmarks (stage1_levers.py, stage2_objectives.py) share: the reference's SimMarket, the
variants given as ``NAME:KEY=VALUE,...`` and the results kept across runs in ``OUT/results.json``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from generator.io import atomic_write_text
from generator.shipped import simulate_reference_data


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--variant", action="append", required=True, metavar="NAME:KEY=VALUE,...")
    ap.add_argument("--data", default="", help="SimMarket root of stage I (default: the reference's, simulated)")
    ap.add_argument("--quiet", action="store_true")


def prepare(args) -> tuple[Path, Path, dict]:
    """(out, data root, results so far): the reference's SimMarket simulated under ``out`` unless ``--data``."""
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    if not (data / "simmarket.json").exists():
        simulate_reference_data(data)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    return out, data, results


def parse_variant(spec: str) -> tuple[str, str, list[str]]:
    """(name, overrides as written, ``KEY=VALUE`` overrides) of ``NAME:KEY=VALUE,...``."""
    name, _, sets = spec.partition(":")
    return name, sets, list(filter(None, sets.split(",")))


def save(out: Path, results: dict) -> None:
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
