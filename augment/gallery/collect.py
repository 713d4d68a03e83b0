"""Read a dataset the project wrote into the gallery's model (``augment.gallery.model``): a build (``build.json``),
a cut-and-paste or one of its hybrids (``cutpaste.json``), a filter's output (``filter_summary.json``) or a
SimMarket (``simmarket.json``), each with its ``manifest.csv``.

Manifest paths are relative to the dataset folder; the pictures that made an image (``source``, ``donor``, a
build's ``fg_image``, ``bg_image`` and ``pose_image``) are relative to the base folder of the real data it was
made from, which the dataset records: cut-and-paste's ``cutpaste.json`` (``config.root``), a build's
``build.json`` (``config.data_root``, else the data root of its stage-II run or of that run's stage I), and the
loading code of either's README.txt. A filter's rejected images are those of the generated folder it read
(``generated_root`` of ``filter_summary.json``). ``--real`` (``real``) overrides the recorded real data."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from augment.gallery.model import Gallery, Identity, Item, Picture, count, find_folder, readme_real_root
from augment.makers.plates import PLATES
from generator.data.layouts import read_layout, resolve_layout
from generator.errors import UserError
from generator.io import folder_defect, read_json_object

COLUMNS = ("path", "pid", "camid", "origin")  # what every manifest has
IMAGE_COLUMNS = ("source", "fg_image", "bg_image", "pose_image")  # paths relative to the real data's base folder
PLATE_NOTES = {"generator": "generated plate", "inpaint": "person filled in"}  # cut-and-paste's plate
NUMBERED_APART = ("msmt17",)  # layouts whose training and test people are numbered apart, each from 0
FIX = "pass the --out folder of vmarket build, cutpaste, filter or simulate"


def read_dataset(folder: str | os.PathLike, real: str | os.PathLike | None = None) -> Gallery:
    """The gallery model of the dataset at ``folder`` (``real``: the real data it was made from, instead of the one
    it records). A folder that is no dataset the project wrote, real data not found, or a manifest naming files
    that are not there is a UserError that says what to do."""
    if real is not None and not Path(real).is_dir():
        raise UserError(f"--real {real}: no such folder; pass the real dataset the images were made from")
    gallery = _read(Path(folder), Path(real) if real is not None else None)
    check_files(gallery)
    return gallery


def _read(folder: Path, real: Path | None) -> Gallery:
    if defect := folder_defect(folder):
        raise UserError(f"{folder}: {defect}; {FIX}")
    # each kind by the file its writer leaves, checked in this order (a filter's output also holds a manifest)
    readers = {"filter_summary.json": _read_filter, "cutpaste.json": _read_cutpaste, "build.json": _read_build,
               "simmarket.json": _read_simmarket}
    for marker, read in readers.items():
        if (folder / marker).is_file():
            return read(folder, real)
    raise UserError(f"{folder}: not a dataset vmarket wrote (it holds none of {', '.join(readers)}); {FIX}")


def _json(path: Path) -> dict:
    return read_json_object(path, "make the dataset again")


def _csv(path: Path, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    """The CSV at ``path`` as text columns ('' for empty cells), refused when it lacks one of ``columns``."""
    if not path.is_file():
        raise UserError(f"{path}: missing, so {path.parent} is not a finished {what}; run the command that wrote it "
                        "again")
    try:
        df = pd.read_csv(path, keep_default_na=False, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable CSV ({type(e).__name__}); make the {what} again") from None
    lacking = [c for c in columns if c not in df.columns]
    if lacking:
        raise UserError(f"{path}: lacks the column(s) {', '.join(lacking)}; it is not the file vmarket writes for a "
                        f"{what}: make it again")
    return df


def _manifest(folder: Path, what: str, columns: tuple[str, ...] = (), empty: bool = False) -> pd.DataFrame:
    path = folder / "manifest.csv"
    df = _csv(path, COLUMNS + columns, what)
    if df.empty and not empty:
        raise UserError(f"{path}: lists no image; make the {what} again")
    try:
        df["pid"], df["camid"] = df.pid.astype(int), df.camid.astype(int)
    except ValueError:
        raise UserError(f"{path}: a pid or camid that is not a whole number; make the {what} again") from None
    return df


@dataclass
class RealData:
    """The training split of the real data a dataset was made from: its images by pid, and the camera of each
    image, keyed by its path relative to the data's base folder (as manifests name them)."""

    root: Path
    base: Path
    cameras: dict[str, int]
    by_pid: dict[int, list[str]]
    skipped: frozenset[str] = frozenset()  # images that were never a source (their pose shows no person)

    def picture(self, rel: str, note: str = "", camid: int = 0) -> Picture:
        return Picture(self.base / rel, self.cameras.get(rel, camid), rel, note)

    def identity_pictures(self, pid: int) -> list[Picture]:
        return [self.picture(rel, "no person: never a source" if rel in self.skipped else "")
                for rel in self.by_pid.get(pid, [])]


def real_data(root: Path, skipped: frozenset[str] = frozenset()) -> RealData:
    layout = resolve_layout(root)
    cameras, by_pid = {}, {}
    for r in read_layout(layout, ("train",)):
        rel = os.path.relpath(r.path, layout.base)
        cameras[rel] = r.camid
        by_pid.setdefault(r.pid, []).append(rel)
    return RealData(root, layout.base, cameras, by_pid, skipped)


def _real_root(real: Path | None, dataset: Path, recorded: list, what: str) -> Path:
    """``real`` when given, else the first recorded real data folder that is there."""
    if real is not None:
        return real
    for r in recorded:
        found = find_folder(r, dataset)
        if found is not None:
            return found
    named = next((str(r) for r in recorded if r), "")
    raise UserError(f"{dataset}: the real data {what} " + (f"({named}) is not there" if named else "is not recorded")
                    + "; pass --real REAL_ROOT, that data's folder")


def _group(items: list[tuple[int, str, Item]]) -> dict[int, Identity]:
    """Identities by pid, in pid order, from ``(pid, kind, item)``."""
    out: dict[int, Identity] = {}
    for pid, kind, item in sorted(items, key=lambda t: t[0]):
        out.setdefault(pid, Identity(pid, kind)).items.append(item)
    return out


def _result(folder: Path, row: dict) -> Picture:
    return Picture(folder / row["path"], row["camid"], row["path"])


def _read_cutpaste(folder: Path, real: Path | None) -> Gallery:
    meta = _json(folder / "cutpaste.json")
    config = meta.get("config") or {}
    df = _manifest(folder, "cut-and-paste", ("source", "donor"))
    root = _real_root(real, folder, [config.get("root"), readme_real_root(folder)], "it pasted from")
    skipped = folder / "skipped.csv"
    skipped_rows = _csv(skipped, ("source",), "cut-and-paste") if skipped.is_file() else pd.DataFrame({"source": []})
    data = real_data(root, frozenset(skipped_rows.source))
    rows = []
    for r in df.to_dict("records"):
        donor_cam = int(r.get("donor_camid") or 0)
        parts = [("source", data.picture(r["source"], camid=int(r.get("source_camid") or 0))),
                 ("donor", data.picture(r["donor"], PLATE_NOTES.get(r.get("plate", ""), ""), donor_cam))]
        rows.append((r["pid"], "real", Item(_result(folder, r), r["origin"], r.get("split", "train"), parts)))
    identities = _group(rows)
    for ident in identities.values():
        ident.real = data.identity_pictures(ident.pid)
    plates = PLATES.get(config.get("plates"), PLATES["image"])
    g = Gallery(f"Cut-and-paste {plates.what}: {folder.name}", "cutpaste", folder, root, list(identities.values()))
    g.summary = summary(g, [("skipped sources", count(len(skipped_rows)), "no visible person (skipped.csv)")])
    return g


def stage_roots(stage2_run: str | None, dataset: Path) -> list[str]:
    """The data roots a build's stage-II run records: its own ``data_root``, then its stage I's ``data.root``."""
    run = find_folder(stage2_run, dataset)
    if run is None or not (run / "config.yaml").is_file():
        return []
    s2 = _yaml_mapping(run / "config.yaml")
    roots = [s2.get("data_root")]
    s1 = find_folder(s2.get("stage1_run"), dataset)
    if s1 is not None and (s1 / "config.yaml").is_file():
        data = _yaml_mapping(s1 / "config.yaml").get("data")
        roots.append(data.get("root") if isinstance(data, dict) else None)
    return [r for r in roots if isinstance(r, str) and r]


def _yaml_mapping(path: Path) -> dict:
    """A run's config, read only for the data root it records: {} where it cannot be read (the other records of
    the real data, or --real, are tried instead)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def build_parts(row: dict, data: RealData | None) -> list[tuple[str, Picture]]:
    """What made one image of a build: its real source (real mode), the real foreground it perturbs (remix mode),
    and its pose and background, each a real image or a note of what was sampled."""
    parts = []
    sources = [s for s in str(row.get("source", "")).split(";") if s]
    if sources and data is not None:
        parts.append(("source", data.picture(sources[0], f"one of {len(sources)}: their mean foreground"
                                             if len(sources) > 1 else "")))
    if row.get("fg_image") and data is not None:
        parts.append(("foreground", data.picture(row["fg_image"], "perturbed")))
    for factor, role in (("pose", "pose"), ("bg", "background")):
        image, source, key = (str(row.get(f"{factor}_{k}", "")) for k in ("image", "source", "key"))
        if image and data is not None:
            parts.append((role, data.picture(image)))
        elif source.startswith("phi"):
            parts.append((role, Picture(None, note=f"sampled by \u03a6_{factor}")))
        elif key:
            parts.append((role, Picture(None, note=f"real bank row {key}")))
    return parts


def _read_build(folder: Path, real: Path | None) -> Gallery:
    meta = _json(folder / "build.json")
    config = meta.get("config") or {}
    if not (folder / "README.txt").is_file():
        raise UserError(f"{folder}: an unfinished build (no README.txt yet); run vmarket build with its config again "
                        "to finish it")
    df = _manifest(folder, "build")
    data = None
    if any(c in df.columns and (df[c] != "").any() for c in IMAGE_COLUMNS):
        recorded = [config.get("data_root"), *stage_roots(config.get("stage2_run"), folder), readme_real_root(folder)]
        data = real_data(_real_root(real, folder, recorded, "stage II embedded"))
    rows = [(r["pid"], "new" if r["origin"] == "virtual" else "real",
             Item(_result(folder, r), r["origin"], r.get("split", "train"), build_parts(r, data)))
            for r in df.to_dict("records")]
    identities = _group(rows)
    for ident in identities.values():
        if ident.kind == "real" and data is not None:
            ident.real = data.identity_pictures(ident.pid)
    mode = config.get("fg_mode", "sample")
    g = Gallery(f"Virtual Market build (fg mode {mode}): {folder.name}", "build", folder,
                data.root if data else None, list(identities.values()))
    skips = int(meta.get("no_person_images", 0) or 0)
    lost = int(meta.get("no_person_identities", 0) or 0)
    g.summary = summary(g, [("skipped sources", count(skips), "real training images that show no person"
                             + (f"; {lost} identities not built" if lost else ""))])
    return g


def _read_simmarket(folder: Path, real: Path | None) -> Gallery:
    meta = _json(folder / "simmarket.json")
    df = _manifest(folder, "SimMarket")
    rows = [(r["pid"], "sim", Item(_result(folder, r), r["origin"], r.get("split", "train")))
            for r in df.to_dict("records")]
    if meta.get("layout") in NUMBERED_APART:  # training and test people numbered apart: group each part alone
        train = _group([row for row in rows if row[2].split == "train"])
        test = _group([row for row in rows if row[2].split != "train"])
        past = max(train, default=-1) + 1
        for ident in train.values():
            ident.part = "train"
        for ident in test.values():
            ident.part, ident.key = "test", past + ident.pid
        identities = [*train.values(), *test.values()]
    else:
        identities = list(_group(rows).values())
    g = Gallery(f"SimMarket (seed {meta.get('seed', '?')}): {folder.name}", "simmarket", folder, None, identities)
    splits = df.get("split", pd.Series(dtype=str)).value_counts()
    g.summary = summary(g, [(s, count(int(splits.get(s, 0))), "split") for s in ("train", "query", "gallery")])
    return g


def _read_filter(folder: Path, real: Path | None) -> Gallery:
    s = _json(folder / "filter_summary.json")
    rejected = _csv(folder / "filter_rejected.csv", ("name", "reason"), "filter output")
    kept = _manifest(folder, "filter output", empty=True)  # empty when every image was rejected
    gen = find_folder(s.get("generated_root"), folder)
    if gen is None:
        raise UserError(f"{folder}: the generated folder it filtered ({s.get('generated_root')}) is not there, and "
                        "its rejected images live there; put it back, or filter again")
    inner = _read(gen, real)
    reasons = dict(zip(rejected.name, rejected.reason, strict=True))
    kept_paths = {Path(p).name: p for p in kept.path}
    found = set()
    for ident in inner.identities:
        shown = []
        for item in ident.items:
            name = item.result.path.name
            if name in reasons:
                item.kept, item.reason = False, reasons[name]
            elif name in kept_paths:
                item.kept, item.result = True, Picture(folder / kept_paths[name], item.result.camid, kept_paths[name])
            else:  # not in the training split the filter read
                continue
            found.add(name)
            shown.append(item)
        ident.items = shown
    lost = [n for n in [*reasons, *kept_paths] if n not in found]
    if lost:
        raise UserError(f"{folder}: names {len(lost)} image(s) that {gen}/manifest.csv does not list (first: "
                        f"{lost[0]}); the generated folder changed since it was filtered: filter it again")
    g = Gallery(f"Identity-consistency filter: {folder.name} (of {inner.title})", "filter", folder, inner.real_root,
                [i for i in inner.identities if i.items], filtered=True)
    n_rej = len(reasons)
    g.summary = summary(g, [("kept", count(len(kept_paths)), "by the identity-consistency filter"),
                            ("rejected", count(n_rej), f"{n_rej / max(n_rej + len(kept_paths), 1):.1%}, with the "
                                                       "filter's reason")]
                        + [row for row in inner.summary if row[0] == "skipped sources"])
    return g


def summary(g: Gallery, extra: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The counts at the top of the page as ``(label, value, note)``: identities, images per origin, cameras, real
    images shown, and ``extra``."""
    kinds, others = {}, []
    for ident in g.identities:
        if ident.is_no_one:  # SimMarket's distractors and junk
            others.append(f"{ident.label} as pid {ident.pid}")
        else:
            kinds[ident.label] = kinds.get(ident.label, 0) + 1
    per_origin = {}
    for item in g.items():
        per_origin[item.origin] = per_origin.get(item.origin, 0) + 1
    cams = g.cameras()
    rows = [("identities", count(sum(kinds.values())),
             ", ".join([f"{n} {k if n == 1 else k.replace('identity', 'identities')}" for k, n in kinds.items()]
                       + others))]
    rows += [(f"{o} images", count(n), "") for o, n in per_origin.items()]
    real = sum(len(i.real) for i in g.identities)
    if real:
        rows.append(("real images", count(real), "training images of these identities"))
    rows.append(("cameras", str(len(cams)), " ".join(f"c{c}" for c in cams)))
    return rows + extra


def check_files(g: Gallery) -> None:
    """Refuse a gallery whose manifest names result images that are not there, or whose real data lacks the
    pictures the manifest names."""
    results = [it.result.title for it in g.items() if not it.result.path.is_file()]  # each result is one file
    if results:
        raise UserError(f"{g.dataset}/manifest.csv: names {len(results)} image(s) that are not there (first: "
                        f"{results[0]}); put them back or make the dataset again")
    # a donor or source serves many results: each file is looked at once
    pictures = {p.path: p.title for it in g.items() for _, p in it.parts if p.path is not None}
    pictures.update((p.path, p.title) for i in g.identities for p in i.real)
    parts = sorted(title for path, title in pictures.items() if not path.is_file())
    if parts:
        raise UserError(f"{g.real_root}: lacks {len(parts)} image(s) that the manifest of {g.dataset} names as "
                        f"sources or donors (first: {parts[0]}); pass --real with the data it was made from")
