"""`vmarket`: the one console script. Subcommands parse arguments and call the library.

Errors a user can fix (``UserError``, and the errors of the file system a user's paths or disk cause: a name too
long, a full disk, a folder that cannot be written) print as one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading

from augment.cli import data_commands, generator_commands, job_commands
from augment.cli.parser import Parser
from generator.errors import UserError
from generator.io import PERMISSION_FIX, TOO_LONG_FIX, access_denied
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
    data_commands.add_export,
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


# errors of the file system that a user's paths or disk cause, and what to do about each
OS_FIXES = {errno.ENAMETOOLONG: TOO_LONG_FIX,
            errno.ENOSPC: "free space on that disk, or write to another one",
            errno.EDQUOT: "free space within your disk quota, or write elsewhere",
            errno.EROFS: "that file system is read-only: write elsewhere",
            errno.EACCES: PERMISSION_FIX,  # with a file name, access_denied names the place that refuses
            errno.EPERM: PERMISSION_FIX}


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a scheduler's stop), raised in the command as Ctrl-C is: the same cleanup runs
    (a job's unfinished output goes, its checkpoints stay for a resume)."""


def _terminate(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # a path in the home folder given where the shell does not expand it (`--out=~/runs`, a quoted "~/runs")
    for name, value in vars(args).items():
        if isinstance(value, (str, os.PathLike)) and str(value).startswith("~"):
            setattr(args, name, type(value)(os.path.expanduser(value)))
    main_thread = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        args.func(args)
    except UserError as e:
        sys.stderr.write(f"vmarket {args.command}: error: {e}\n")
        return 2
    except OSError as e:
        if e.errno not in OS_FIXES:
            raise
        if e.errno == errno.EACCES and e.filename is not None:  # the folder that refuses, not a file probed inside
            sys.stderr.write(f"vmarket {args.command}: error: {access_denied(e.filename)}\n")
            return 2
        where = f"{e.filename}: " if e.filename is not None else ""
        sys.stderr.write(f"vmarket {args.command}: error: {where}{e.strerror}; {OS_FIXES[e.errno]}\n")
        return 2
    except TimeLimitReached as e:
        sys.stderr.write(f"vmarket {args.command}: {e}; run the same command again to continue\n")
        return 3
    except Terminated:
        sys.stderr.write("terminated\n")
        return 143
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    finally:
        if main_thread and before is not None:  # None: a handler Python did not install, left as it was
            signal.signal(signal.SIGTERM, before)
    return 0
