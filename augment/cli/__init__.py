"""`vmarket`: the one console script. Subcommands parse arguments and call the library.

Errors a user can fix (``UserError``) print as one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import os
import sys

from augment.cli import data_commands, generator_commands, job_commands
from augment.cli.parser import Parser
from generator.errors import UserError
from generator.training.runtime import TimeLimitReached

COMMANDS = (  # in the order `vmarket --help` lists them
    data_commands.add_simulate,
    data_commands.add_check,
    generator_commands.add_train,
    generator_commands.add_eval,
    generator_commands.add_sample,
    data_commands.add_build,
    data_commands.add_cutpaste,
    data_commands.add_filter,
    data_commands.add_browse,
    job_commands.add_reid,
    job_commands.add_reference,
    job_commands.add_reference_reid,
    job_commands.add_pipeline,
    data_commands.add_keypoints,
)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="vmarket",
                description="Virtual Market: disentangled person generation for re-ID data augmentation.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # a path in the home folder given where the shell does not expand it (`--out=~/runs`, a quoted "~/runs")
    for name, value in vars(args).items():
        if isinstance(value, (str, os.PathLike)) and str(value).startswith("~"):
            setattr(args, name, type(value)(os.path.expanduser(value)))
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
