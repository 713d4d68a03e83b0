"""`vmarket`: the one console script. Subcommands parse arguments and call the library.

Errors a user can fix (``UserError``) print as one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import sys

from generator.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the problem and where to look, no usage dump."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def _cmd_simulate(args) -> None:
    from generator.simmarket import parse_size, simulate

    size = parse_size(args.size)
    s = simulate(args.out, args.ids, seed=args.seed, size=size, overwrite=args.overwrite, progress=not args.quiet)
    print(
        f"SimMarket: {s['identities']} identities ({s['train_ids']} train / {s['test_ids']} test), {s['images']} images "
        f"(train {s['train']}, query {s['query']}, gallery {s['gallery']} incl. {s['distractors']} distractors and "
        f"{s['junk']} junk) at {s['height']}x{s['width']} in {s['seconds']:.1f} s "
        f"({s['images'] / s['seconds']:.0f} img/s) -> {args.out}"
    )


def _cmd_check(args) -> None:
    from collections import Counter

    from tqdm import tqdm

    from generator.data import load_image, market_dataset
    from generator.simmarket import parse_size

    size = parse_size(args.size)
    splits = ("train", "query", "gallery")
    ds = market_dataset(args.root, splits, size=size, keypoints_csv=args.keypoints, keep_junk=True)
    for r in tqdm(ds.records, desc="checking images", unit="img", disable=args.quiet, mininterval=0.5):
        load_image(r.path, size)
    by_split = Counter(r.split for r in ds.records)
    ids = {s: len({r.pid for r in ds.records if r.split == s and r.pid > 0}) for s in splits}
    cams = sorted({r.camid for r in ds.records})
    missing = sum(int((rcv[:, 2] == 0).sum()) for rcv in ds.rcv)
    print(
        f"ok: {len(ds)} images at {size[0]}x{size[1]} (train {by_split['train']} / {ids['train']} ids, "
        f"query {by_split['query']} / {ids['query']} ids, gallery {by_split['gallery']}), cameras {cams}, "
        f"{missing / (18 * len(ds)):.1%} joints missing -> {args.root}"
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vmarket", description="Virtual Market: disentangled person generation for re-ID data augmentation.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    s = sub.add_parser("simulate", help="write a SimMarket dataset (Market-1501 layout, keypoints, manifest)")
    s.add_argument("--out", required=True, help="output folder (created; must be empty unless --overwrite)")
    s.add_argument("--ids", type=int, required=True, help="number of identities, split half train / half test")
    s.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same dataset")
    s.add_argument("--size", default="128x64", help="image size HEIGHTxWIDTH (default 128x64)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_simulate)

    c = sub.add_parser("check", help="validate a Market-1501-format dataset: names, keypoints, images")
    c.add_argument("--root", required=True, help="dataset root (holding bounding_box_train/ or Market-1501-v15.09.15/)")
    c.add_argument("--keypoints", default=None, help="keypoint CSV for all splits (default: market-annotation-*.csv in the root)")
    c.add_argument("--size", default="128x64", help="expected image size HEIGHTxWIDTH (default 128x64)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=_cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        sys.stderr.write(f"vmarket {args.command}: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
