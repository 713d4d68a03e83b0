"""The argument parser of every `vmarket` command."""
from __future__ import annotations

import argparse
import math
import sys

from generator.config import SEED_MAX
from generator.data.layouts import FORMATS


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the problem and where to look, no usage dump."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def config_arguments(p: argparse.ArgumentParser, default: str | None, what: str) -> None:
    """A job's YAML config (positional, with a default; or ``-c/--config``, required, when ``default`` is None) and
    its ``--set KEY=VALUE`` overrides."""
    if default is None:
        p.add_argument("-c", "--config", required=True, help=what)
    else:
        p.add_argument("config", nargs="?", default=default, help=f"{what} (default {default})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value; in a config that runs jobs (a set list), JOB:KEY=VALUE sets a key "
                        "of one job, after the file's own entries")


def count(minimum: int, maximum: int | None = None):
    """An argparse type: a whole number of at least ``minimum`` and at most ``maximum`` (None: no bound; argparse
    names the option when it is not)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give one of {minimum} or more") from None
        if value < minimum or (maximum is not None and value > maximum):
            allowed = f"{minimum} or more" if maximum is None else f"{minimum} to {maximum}"
            raise argparse.ArgumentTypeError(f"{value}: use {allowed}")
        return value

    parse.__name__ = "count"  # argparse's message names the type
    return parse


def seed(text: str) -> int:
    """An argparse type: a random seed, a whole number 0..2**32-1 (what numpy and torch accept)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give a seed 0..{SEED_MAX}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{value}: a seed is a whole number 0..{SEED_MAX}")
    return value


def number(minimum: float, maximum: float | None = None):
    """An argparse type: a finite number of at least ``minimum`` (and at most ``maximum``)."""
    span = f"{minimum:g}..{maximum:g}" if maximum is not None else f"{minimum:g} or more"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; give one of {span}") from None
        if not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{text}: use a finite number, {span}")
        return value

    parse.__name__ = "number"
    return parse


def format_argument(p: argparse.ArgumentParser, note: str = "") -> None:
    """``--format``: the layout of the command's dataset (generator.data.layouts), detected by default."""
    p.add_argument("--format", default="auto", choices=("auto", *FORMATS),
                   help=f"dataset layout (default auto: detected from the folder{note})")


def quiet_argument(p: argparse.ArgumentParser, bars: str = "bars") -> None:
    p.add_argument("--quiet", action="store_true", help=f"no progress {bars}")
