"""Write a gallery: ``index.html`` (the counts, legend and filters as static HTML), ``style.css`` and ``app.js``
(``static/``), the data (``data/index.js``: one entry per identity, enough to filter and page; ``data/chunk-NNNN.js``:
the identities of one page each, loaded as a page needs them) and the thumbnails (``t/K/N.jpg``: small JPEGs, one per
image file, however many cards show it). Data files are scripts, not JSON, so the page works from disk (file://)
with no server.

The gallery is written in ``.OUT.partial`` beside ``OUT`` and renamed when complete, so a failed or killed run
leaves no half-written gallery; an earlier gallery in ``OUT`` (its ``gallery.json``) is replaced."""
from __future__ import annotations

import html
import json
import os
import shutil
import time
from pathlib import Path

from PIL import Image

from augment.gallery.model import ORIGIN_NOTES, ROLE_NOTES, ROLES, Gallery, Identity, Item, Picture
from generator.data.dataset import IMAGE_ERRORS, image_error
from generator.errors import UserError
from generator.io import (
    atomic_write_json,
    check_output_folder,
    fresh_work_folder,
    progress_bar,
    remove_empty_folders,
)

STATIC = Path(__file__).resolve().parent / "static"
MARKER = "gallery.json"  # a finished gallery: what it shows
PARTIAL = ".vmarket-gallery"  # marks .OUT.partial as an unfinished gallery (ours to clear)
THUMB = (96, 48)  # thumbnail box (height, width): larger images are scaled down into it
THUMB_QUALITY = 80
PAGE_ITEMS = 240  # about this many generated images per page
ORIGIN_COLOURS = {"real": "#555555", "sim": "#6b7280", "cutpaste": "#1f77b4", "hybrid": "#2ca02c",
                  "inpaint": "#9467bd", "remix": "#ff7f0e", "virtual": "#d62728"}


def _shown(path: Path) -> str:
    """A folder as the page names it: relative to the working directory when it lies inside it, else absolute."""
    rel = os.path.relpath(Path(path).resolve())
    return str(Path(path).resolve()) if rel.startswith("..") else rel


class Thumbnails:
    """One thumbnail number per image file, in the order first asked for."""

    def __init__(self):
        self.number: dict[str, int] = {}

    def __call__(self, picture: Picture) -> int:
        if picture.path is None:
            return -1
        key = os.path.abspath(picture.path)
        return self.number.setdefault(key, len(self.number))

    @staticmethod
    def path(n: int) -> str:
        return f"t/{n // 1000}/{n}.jpg"

    def write(self, folder: Path, progress: bool) -> int:
        """Write every thumbnail under ``folder``; their bytes."""
        total = 0
        for path, n in progress_bar(self.number.items(), desc="thumbnails", unit="img", enabled=progress,
                                    total=len(self.number), mininterval=0.5):
            dst = folder / self.path(n)
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    scale = min(THUMB[0] / im.height, THUMB[1] / im.width, 1.0)
                    if scale < 1:
                        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                                       Image.BILINEAR)
                    im.save(dst, format="JPEG", quality=THUMB_QUALITY)
            except IMAGE_ERRORS as e:
                raise UserError(f"{path}: not a readable image ({image_error(e)}); put the file back or make the "
                                "dataset again") from None
            total += dst.stat().st_size
        return total


class Strings:
    """A table of the notes the data repeats: each note is written once and cited by number (0: none)."""

    def __init__(self):
        self.table: dict[str, int] = {"": 0}

    def __call__(self, text: str) -> int:
        return self.table.setdefault(text, len(self.table))


def per_page(g: Gallery) -> int:
    """Identities per page: about ``PAGE_ITEMS`` images, 1 to 50 identities."""
    mean = sum(len(i.items) for i in g.identities) / max(len(g.identities), 1)
    return max(1, min(50, round(PAGE_ITEMS / max(mean, 1))))


def _item_record(item: Item, origins: dict[str, int], thumbs: Thumbnails, notes: Strings) -> list:
    parts = [[ROLES.index(role), thumbs(p), p.camid, p.title, notes(p.note)] for role, p in item.parts]
    kept = item.kept is not False
    label = item.split if item.origin == "sim" else item.origin  # what the caption under the image says
    return [thumbs(item.result), item.result.camid, origins[item.origin], int(kept), item.reason, item.result.title,
            parts, notes(label)]


def _identity_record(ident: Identity, origins, thumbs, notes) -> tuple[list, list]:
    """(its chunk record, its index entry without the chunk number)."""
    real = [[thumbs(p), p.camid, p.title, notes(p.note)] for p in ident.real]
    items = [_item_record(it, origins, thumbs, notes) for it in ident.items]
    real_bits = 0
    for p in ident.real:
        real_bits |= 1 << p.camid
    keys = sorted({((origins[it.origin] * 64) + it.result.camid) * 2 + int(it.kept is not False)
                   for it in ident.items})
    key = ident.pid if ident.key is None else ident.key
    return [key, ident.label, real, items, ident.shown], [key, real_bits, keys, ident.shown]


def _data_files(g: Gallery, work: Path, thumbs: Thumbnails, page: int) -> dict:
    """data/chunk-NNNN.js (one page of identities each) under ``work``; the index (without the notes table)."""
    origins = {o: k for k, o in enumerate(g.origins())}
    notes = Strings()
    (work / "data").mkdir()
    entries = []
    for start in range(0, len(g.identities), page):
        n = start // page
        records = []
        for ident in g.identities[start:start + page]:
            record, entry = _identity_record(ident, origins, thumbs, notes)
            records.append(record)
            entries.append([entry[0], n, *entry[1:]])
        text = json.dumps(records, separators=(",", ":"), ensure_ascii=False)
        (work / "data" / f"chunk-{n:04d}.js").write_text(f"VM_CHUNK({n},{text});\n", encoding="utf-8")
    return {"title": g.title, "kind": g.kind, "perPage": page, "origins": list(origins), "roles": list(ROLES),
            "colors": {o: ORIGIN_COLOURS.get(o, "#8c564b") for o in origins}, "thumb": list(THUMB),
            "itemWord": "images" if g.kind == "simmarket" else "generated", "filtered": g.filtered,
            "ids": entries, "notes": list(notes.table)}


def _buttons(name: str, label: str, values: list[tuple[str, str]]) -> str:
    buttons = "".join(f'<button type="button" data-value="{html.escape(v)}" aria-pressed="{str(v == "all").lower()}">'
                      f"{html.escape(text)}</button>" for v, text in [("all", "all"), *values])
    return f'<div class="group" data-filter="{name}"><span>{label}</span>{buttons}</div>'


def _legend(g: Gallery) -> str:
    roles = [r for r in ROLES if any(role == r for it in g.items() for role, _ in it.parts)]
    parts = [f'<span><i class="chip" style="--o:{ORIGIN_COLOURS.get(o, "#8c564b")}"></i><b>{html.escape(o)}</b>: '
             f"{html.escape(ORIGIN_NOTES.get(o, 'generated image'))}</span>" for o in g.origins()]
    parts += [f"<span><b>{r}</b>: {html.escape(ROLE_NOTES[r])}</span>" for r in roles]
    if roles:
        parts.append("<span>each card: what made the image, then <b>\u2192 the image</b>; c<i>N</i>: camera</span>")
    if g.filtered:
        parts.append('<span><b style="color:#a93226">dashed red</b>: rejected by the filter, with its reason</span>')
    return '<div class="legend">' + "".join(parts) + "</div>"


def index_html(g: Gallery) -> str:
    """The page: title, counts, legend and filters as static HTML (painted before any script runs)."""
    stats = "".join(f'<div class="stat"><b>{html.escape(value)}</b><span>{html.escape(label)}</span>'
                    + (f"<small>{html.escape(note)}</small>" if note else "") + "</div>"
                    for label, value, note in g.summary)
    groups = [_buttons("origin", "origin", [(o, o) for o in g.origins()]),
              _buttons("camera", "camera", [(str(c), f"c{c}") for c in g.cameras()])]
    if g.filtered:
        groups.append(_buttons("kept", "filter", [("kept", "kept"), ("rejected", "rejected")]))
    where = _shown(g.dataset) + (f" \u00b7 real data {_shown(g.real_root)}" if g.real_root else "")
    pager = ('<nav class="pager"><button type="button" class="prev">\u2039 previous</button><span class="where">'
             '</span><button type="button" class="next">next \u203a</button></nav>')
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(g.title)}</title>
<link rel="stylesheet" href="style.css">
</head>
<body data-state="loading">
<header>
<h1>{html.escape(g.title)}</h1>
<p class="path">{html.escape(where)}</p>
<div class="stats">{stats}</div>
{_legend(g)}
</header>
<div class="filters">{"".join(groups)}<label>pid <input id="pid" type="text" size="8" placeholder="7"></label></div>
{pager}
<main id="identities"></main>
{pager}
<script src="data/index.js"></script>
<script src="app.js"></script>
</body>
</html>
"""


def _put_in_place(work: Path, out: Path) -> None:
    """Rename ``work`` onto ``out``; an earlier gallery there is moved aside first and then removed."""
    old = out.parent / f".{out.name}.old"
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    elif out.exists():
        out.rmdir()
    os.replace(work, out)
    shutil.rmtree(old, ignore_errors=True)


def _write(g: Gallery, work: Path, progress: bool) -> dict:
    """Every file of the gallery in ``work``; what ``gallery.json`` records."""
    thumbs = Thumbnails()
    index = _data_files(g, work, thumbs, per_page(g))
    (work / "data" / "index.js").write_text(
        "window.VM_INDEX = " + json.dumps(index, separators=(",", ":"), ensure_ascii=False) + ";\n", encoding="utf-8")
    thumb_bytes = thumbs.write(work, progress)
    (work / "index.html").write_text(index_html(g), encoding="utf-8")
    for name in ("app.js", "style.css"):
        shutil.copyfile(STATIC / name, work / name)
    return {"written_by": "vmarket browse", "title": g.title, "kind": g.kind, "dataset": str(g.dataset.resolve()),
            "real_root": str(g.real_root.resolve()) if g.real_root else None, "identities": len(g.identities),
            "items": sum(len(i.items) for i in g.identities), "thumbnails": len(thumbs.number),
            "thumbnail_bytes": thumb_bytes, "pages": -(-len(g.identities) // index["perPage"])}


def write_gallery(g: Gallery, out: str | os.PathLike, progress: bool = True) -> dict:
    """Write the gallery of ``g`` to ``out`` (see the module docstring); returns its counts, bytes and seconds."""
    t0 = time.perf_counter()
    out = Path(out)
    created = check_output_folder(out, "--out", beside=True, inputs={"dataset": g.dataset, "real data": g.real_root},
                                  datasets=["dataset", "real data"])
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UserError(f"{out}: not empty and not a gallery; choose another --out or delete it")
    work = None
    try:
        work = fresh_work_folder(out, PARTIAL, "vmarket browse output")
        summary = _write(g, work, progress)
        (work / PARTIAL).unlink()
        summary["bytes"] = sum(p.stat().st_size for p in work.rglob("*") if p.is_file())
        atomic_write_json(work / MARKER, summary)
        _put_in_place(work, out)
    except BaseException:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        remove_empty_folders(out.parent, created)
        raise
    return {**summary, "seconds": time.perf_counter() - t0, "index": str(out / "index.html")}
