"""The gallery (`vmarket browse`) of a 12,000-image set: the time to write it and its size, and, opened from disk
(file://) in headless Chromium, the time to first contentful paint and to the first page with its visible thumbnails
loaded, and the page weight (index.html, the data and the thumbnails the first page loads).

The set: a SimMarket of --ids identities (half of them training identities) at 128x64 and its cut-and-paste with
--per-image chosen so that it holds at least --images images. Needs Chromium (/usr/bin/chromium, or --chromium) and
the Python package playwright (the `dev` extra); no browser download.
"""
from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
FIRST_PAGE = """() => document.body.dataset.state === "ready" && [...document.images].filter((i) => {
  const r = i.getBoundingClientRect();
  return r.top < innerHeight && r.bottom > 0;
}).every((i) => i.complete && i.naturalWidth > 0)"""
TIMES = """() => ({
  fcp: (performance.getEntriesByName("first-contentful-paint")[0] || {}).startTime,
  now: performance.now(),
  files: [...document.querySelectorAll("script[src], link[rel=stylesheet]")].map((e) => e.src || e.href)
    .concat([...document.images].filter((i) => i.complete && i.naturalWidth > 0).map((i) => i.src)),
  images: document.images.length,
})"""
FRACTIONS = [(1 / 2, "a half"), (1 / 3, "a third"), (1 / 4, "a quarter"), (1 / 10, "a tenth"),
             (1 / 20, "a twentieth"), (1 / 50, "a fiftieth"), (1 / 100, "a hundredth"), (1 / 1000, "a thousandth")]


def in_words(share: float) -> str:
    """A share as the nearest of a few fractions, in words."""
    return "about " + min(FRACTIONS, key=lambda f: abs(math.log(share / f[0])))[1]


def make_set(d: Path, ids: int, images: int) -> tuple[Path, float]:
    """The SimMarket and its cut-and-paste of at least ``images`` images; (its folder, seconds to make it)."""
    from augment.makers.cutpaste import cut_paste
    from generator.data.market import scan_market
    from generator.simmarket.simulate import simulate

    t = time.perf_counter()
    simulate(d / "sim", ids, seed=0, size=(128, 64), progress=False)
    sources = len(scan_market(d / "sim", ("train",)))
    s = cut_paste(d / "sim", d / "cp", per_image=math.ceil(images / sources), seed=0, progress=False)
    print(f"set: SimMarket {ids} identities, {sources} training images; cut-and-paste {s['images']} images of "
          f"{s['identities']} identities ({math.ceil(images / sources)} per source image)")
    return d / "cp", time.perf_counter() - t


def open_once(browser, gallery: Path) -> dict:
    """One cold page: milliseconds to first contentful paint and to the first page with its visible thumbnails
    loaded, and the bytes of index.html and of every file it loaded by then."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto((gallery / "index.html").as_uri(), wait_until="commit")
    page.wait_for_function(FIRST_PAGE, polling="raf")
    t = page.evaluate(TIMES)
    files = {gallery / "index.html"} | {Path(unquote(urlparse(u).path)) for u in t["files"]}
    context.close()
    return {"fcp": t["fcp"], "first_page": t["now"], "bytes": sum(f.stat().st_size for f in files),
            "files": len(files), "images": t["images"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=1030,
                    help="SimMarket identities (default 1030: 515 training identities, 6,045 training images)")
    ap.add_argument("--images", type=int, default=12000, help="at least this many generated images (default 12000)")
    ap.add_argument("--runs", type=int, default=3, help="cold page loads timed (default 3; medians printed)")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from augment.gallery.collect import read_dataset
    from augment.gallery.page import write_gallery

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        dataset, made = make_set(d, args.ids, args.images)
        t = time.perf_counter()
        gallery = read_dataset(dataset)
        read_s = time.perf_counter() - t
        s = write_gallery(gallery, d / "gallery", progress=False)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
            runs = [open_once(browser, d / "gallery") for _ in range(args.runs)]
            browser.close()
    med = {k: statistics.median(r[k] for r in runs) for k in ("fcp", "first_page", "bytes", "files", "images")}
    print(f"gallery of {s['items']} images, {s['identities']} identities ({made:.0f} s to make the set):")
    print(f"  write (read the dataset + thumbnails + data): {read_s + s['seconds']:6.1f} s "
          f"(reading {read_s:.1f} s), {s['thumbnails']} thumbnails, {s['pages']} pages")
    print(f"  whole gallery on disk                       : {s['bytes'] / 1e6:6.1f} MB "
          f"(thumbnails {s['thumbnail_bytes'] / 1e6:.1f} MB)")
    print(f"  first contentful paint (median of {args.runs})       : {med['fcp']:6.0f} ms")
    print(f"  first page, visible thumbnails loaded       : {med['first_page']:6.0f} ms "
          f"({med['images']:.0f} image elements on the page, lazy)")
    print(f"  page weight at that point                   : {med['bytes'] / 1e3:6.0f} KB in {med['files']:.0f} files "
          f"(index.html, style, script, data, the thumbnails loaded)")
    print(f"  the first page fetches {in_words(med['bytes'] / s['bytes'])} of the gallery's bytes")


if __name__ == "__main__":
    main()
