"""docs/cli.md, the CLI reference, rendered from the `vmarket` parser itself: every command's usage and a table of
its arguments. ``python -m augment.cli.reference_doc`` rewrites the file (`make docs`); ``--check`` exits 1 when it
is stale, and the test suite fails on a stale file."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from augment.cli import build_parser
from generator.io import write_or_check

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
WIDTH = 110  # usage lines wrap here, whatever the terminal


def _usage(parser: argparse.ArgumentParser) -> str:
    fmt = argparse.HelpFormatter(parser.prog, width=WIDTH)
    fmt.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return fmt.format_help().strip()


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _argument(action: argparse.Action) -> str:
    if action.option_strings:
        value = "" if action.nargs == 0 else " " + (action.metavar or (
            "{" + ",".join(map(str, action.choices)) + "}" if action.choices else action.dest.upper()))
        return ", ".join(f"`{o}{value}`" for o in action.option_strings)
    return f"`{action.metavar or action.dest}`" + (f" ({', '.join(map(str, action.choices))})" if action.choices
                                                    else "")


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if action.nargs == 0 or action.default in (None, argparse.SUPPRESS, [], ""):
        return ""
    return f"`{action.default}`"


def render(parser: argparse.ArgumentParser | None = None) -> str:
    parser = parser or build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    lines = ["# CLI reference", "",
             "Every `vmarket` command, rendered from its argument parser by `make docs` (a test fails when this file",
             "is stale). `vmarket COMMAND --help` prints the same. [Back to the README](../README.md).", "",
             f"{_cell(parser.description)}", "",
             "| command | what it does |", "| --- | --- |",
             *[f"| [`{name}`](#vmarket-{name}) | {_cell(helps[name])} |" for name in sub.choices], ""]
    for name, sp in sub.choices.items():
        lines += [f"## vmarket {name}", "", _cell(helps[name]), "", "```", _usage(sp), "```", "",
                  "| argument | default | meaning |", "| --- | --- | --- |"]
        lines += [f"| {_argument(a)} | {_default(a)} | {_cell(a.help or '')} |"
                  for a in sp._actions if not isinstance(a, argparse._HelpAction)]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    return write_or_check(DOC, render(), check, "run `make docs` to render it from the parser again")


if __name__ == "__main__":
    sys.exit(main())
