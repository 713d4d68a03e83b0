"""Re-ID dataset layouts: Market-1501, DukeMTMC-reID, MSMT17 and CUHK03 (new protocol), detected and read; and
the writer of MSMT17's layout (``Msmt17Writer``) for what the project makes from MSMT17 data.

Each reader follows the file conventions of torchreid's own dataset class (``torchreid.reid.data.datasets.image``),
so that the records ``(path, pid, camid - 1)`` that ``reid.torchreid_adapter.market_records`` makes of ours equal
that class's records (its training pids before it relabels them 0..N-1):

- ``market1501``: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` in the root or in
  ``Market-1501-v15.09.15/``; names ``PPPP_cCsS_FFFFFF_BB.jpg``; junk (pid -1) dropped (``generator.data.market``).
- ``duke``: the same split folders in the root or in ``DukeMTMC-reID/``; names ``PPPP_cC_fFFFFFFF.jpg``
  (``0001_c2_f0046182.jpg``), cameras 1..8.
- ``msmt17``: ``MSMT17_V1/`` (images in ``train/``, ``test/``) or ``MSMT17_V2/`` (``mask_train_v2/``,
  ``mask_test_v2/``), or those folders in the root itself, with ``list_train.txt``, ``list_query.txt`` and
  ``list_gallery.txt``: lines ``RELATIVE/PATH.jpg PID``, the path relative to the train (or test) image folder;
  the camera is the path's third ``_`` field (``0000/0000_000_01_0303morning_0015_0.jpg``: camera 1). Pids are
  taken as listed (numbered from 0, query / gallery apart from train). The training split is ``list_train.txt``
  alone, as in torchreid's default (``list_val.txt`` joins it there only with ``combineall``); ``list_val.txt``
  is not read.
- ``cuhk03_detected`` / ``cuhk03_labeled``: the new protocol (Zhong et al., CVPR 2017):
  ``cuhk03_new_protocol_config_detected.mat`` (or ``_labeled.mat``) whose ``train_idx``, ``query_idx`` and
  ``gallery_idx`` index (1-based) its ``filelist`` and ``labels``, and the images in ``images_detected/`` (or
  ``images_labeled/``), as torchreid extracts them from ``cuhk03_release/cuhk-03.mat``; in the root or in
  ``cuhk03/``. The camera is the view, the name's third field (``1_001_2_06.png``: view 2). ``auto`` picks the
  detected boxes when both are there (torchreid's default); choose ``cuhk03_labeled`` explicitly. The raw
  ``cuhk-03.mat`` is not needed here; torchreid's own ``CUHK03`` class refuses a folder without it (and reads it
  with h5py), so such a folder (``vmarket simulate --layout cuhk03`` writes one) loads in torchreid through
  ``reid.torchreid_adapter.register_market``.

Records keep the camera 1-based as the names number it (torchreid subtracts 1), the pids as the dataset numbers
them, and, within a split, the order of the folder listing (sorted) or of the list / index file.

Keypoint CSVs (``market-annotation-train.csv`` for the training split, ``market-annotation-test.csv`` for query
and gallery; ``name:keypoints_y:keypoints_x``) name each image the way the dataset's own index names it
(``Record.keypoint_name``): the file name for Market-1501, DukeMTMC-reID and CUHK03, and for MSMT17 the list-file
entry, the path relative to the split's image folder (``0000/0000_000_01_0303morning_0015_0.jpg``), since train
and test each number their identities from 0000. The CSVs sit beside the split folders or list files (the dataset
folder) or in the root above it; CUHK03's sit in the image folder of its variant
(``images_detected/market-annotation-train.csv``), because the detected and labelled crops share file names but
not keypoints.
"""
from __future__ import annotations

import os
import re
import typing
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.io import loadmat
from scipy.io.matlab import MatReadError

from generator.config import DataFormat
from generator.data.keypoints import write_keypoints_csv
from generator.data.market import MARKET_SUBDIR, SPLIT_DIRS, Record, resolve_root, scan_market, scan_split_folders
from generator.errors import UserError
from generator.io import atomic_save_image, atomic_write_text, folder_defect

FORMATS = tuple(f for f in typing.get_args(DataFormat) if f != "auto")  # the layouts `auto` chooses between
DATASET_NAMES = {"market1501": "Market-1501", "duke": "DukeMTMC-reID", "msmt17": "MSMT17",
                 "cuhk03_detected": "CUHK03 (detected)", "cuhk03_labeled": "CUHK03 (labelled)"}
DUKE_SUBDIR = "DukeMTMC-reID"
DUKE_CAMERAS = 8
# MSMT17 version folder -> its (train, test) image folders, as torchreid's MSMT17 names them
MSMT17_VERSIONS = {"MSMT17_V1": ("train", "test"), "MSMT17_V2": ("mask_train_v2", "mask_test_v2")}
MSMT17_LISTS = {"train": "list_train.txt", "query": "list_query.txt", "gallery": "list_gallery.txt"}
MSMT17_OUT = "MSMT17_V1"  # the dataset folder of the project's outputs in MSMT17's layout (made from MSMT17 data)
MSMT17_MAX_CAMERA = 99  # MSMT17 names: two camera digits, from 01
CUHK03_SUBDIR = "cuhk03"
CUHK03_VARIANTS = {"cuhk03_detected": "detected", "cuhk03_labeled": "labeled"}
# keypoint files, as pose-transfer work on Market-1501 names them: train split / query + gallery
KEYPOINT_FILES = {"train": "market-annotation-train.csv", "query": "market-annotation-test.csv",
                  "gallery": "market-annotation-test.csv"}

# any camera number, so that parse_duke_name refuses one out of range by its number, not as a malformed name
_DUKE_RE = re.compile(r"^(-1|\d{4})_c(\d+)_f(\d+)\.jpg$")
_MARKET_LIKE_RE = re.compile(r"^(-1|\d{4})_c\d+s\d+_\d+_\d+\.")
_WHAT_AUTO_LOOKS_FOR = ("Market-1501 or DukeMTMC-reID split folders (bounding_box_train/, query/, bounding_box_test/), "
                        "MSMT17 lists (list_train.txt, or MSMT17_V1/ or MSMT17_V2/) or CUHK03 new-protocol files "
                        "(cuhk03_new_protocol_config_detected.mat, or cuhk03/)")


def cuhk03_mat_name(fmt: str) -> str:
    return f"cuhk03_new_protocol_config_{CUHK03_VARIANTS[fmt]}.mat"


def cuhk03_image_dir(fmt: str) -> str:
    return f"images_{CUHK03_VARIANTS[fmt]}"


@dataclass(frozen=True)
class Layout:
    format: str  # one of FORMATS (never auto)
    base: Path  # the dataset folder: split folders, list files or .mat files
    root: Path  # the folder the user named


def _folder(root) -> Path:
    root = Path(root)
    if defect := folder_defect(root):
        raise UserError(f"{root}: {defect}; pass the dataset root (holding {_WHAT_AUTO_LOOKS_FOR})")
    return root


def _msmt17_base(root: Path) -> Path | None:
    for version in MSMT17_VERSIONS:
        if (root / version).is_dir():
            return root / version
    return root if (root / MSMT17_LISTS["train"]).is_file() else None


def _cuhk03_base(root: Path, fmt: str | None = None) -> Path | None:
    """The folder holding the new-protocol .mat of ``fmt`` (either variant when None): ``root`` or ``root/cuhk03``."""
    mats = [cuhk03_mat_name(fmt)] if fmt else [cuhk03_mat_name(f) for f in CUHK03_VARIANTS]
    for folder in (root, root / CUHK03_SUBDIR):
        if any((folder / m).is_file() for m in mats):
            return folder
    return None


def _split_folder_format(folder: Path) -> str:
    """duke or market1501, from the image names of a split folder (Market's names if neither fits)."""
    names = os.listdir(folder)
    duke = sum(bool(_DUKE_RE.match(n)) for n in names)
    market = sum(bool(_MARKET_LIKE_RE.match(n)) for n in names)
    return "duke" if duke > market else "market1501"


def detect_format(root, fmt_key: str | None = None) -> str:
    """The layout of the dataset at ``root`` (one of FORMATS), from its folders, list / index files and names.
    ``fmt_key``: the command's format option, which the error offers where nothing is found (None: it has none)."""
    root = _folder(root)
    cuhk = _cuhk03_base(root)
    if cuhk is not None:
        return "cuhk03_detected" if (cuhk / cuhk03_mat_name("cuhk03_detected")).is_file() else "cuhk03_labeled"
    if _msmt17_base(root) is not None:
        return "msmt17"
    if (root / DUKE_SUBDIR).is_dir():
        return "duke"
    if (root / MARKET_SUBDIR).is_dir():
        return "market1501"
    for d in SPLIT_DIRS.values():
        if (root / d).is_dir() and any(n.lower().endswith((".jpg", ".jpeg", ".png")) for n in os.listdir(root / d)):
            return _split_folder_format(root / d)
    if any((root / d).is_dir() for d in SPLIT_DIRS.values()):
        return "market1501"  # empty split folders: the Market reader names what is missing
    option = f", or set {fmt_key} to its format ({', '.join(FORMATS)})" if fmt_key else ""
    raise UserError(f"{root}: no re-ID dataset found; expected {_WHAT_AUTO_LOOKS_FOR}: pass the dataset root{option}")


def _family(fmt: str) -> str:
    return "cuhk03" if fmt.startswith("cuhk03") else fmt


def _setting(key: str, value: str) -> str:
    """How the user writes the format option: ``data.format: duke`` in a config, ``--format duke`` on a command line."""
    return f"{key} {value}" if key.startswith("--") else f"{key}: {value}"


def resolve_layout(root, fmt: str = "auto", fmt_key: str | None = None) -> Layout:
    """The layout of ``root``: detected (``fmt`` auto) or as ``fmt`` says, refused when the folder plainly holds
    another layout. ``fmt_key`` is how errors name the format option (``data.format``, ``real_format``; None for a
    command that has none)."""
    key = fmt_key or "format"
    if fmt != "auto" and fmt not in FORMATS:
        raise UserError(f"{key}: {fmt!r} is not a dataset format; use one of auto, {', '.join(FORMATS)}")
    root = _folder(root)
    if fmt == "auto":
        fmt = detect_format(root, fmt_key)
    else:
        try:
            found = detect_format(root)
        except UserError:  # nothing recognisable: the reader of `fmt` names what is missing
            found = None
        if found is not None and _family(found) != _family(fmt):
            fix = f"set {_setting(fmt_key, found)}, or auto to detect it" if fmt_key else "point at a dataset of " \
                "that layout"
            raise UserError(f"{root}: holds {DATASET_NAMES[found]}, not {DATASET_NAMES[fmt]} "
                            f"({_setting(key, fmt)}); {fix}")
    return Layout(fmt, _base(root, fmt, fmt_key), root)


def _base(root: Path, fmt: str, fmt_key: str | None = None) -> Path:
    if fmt == "market1501":
        return resolve_root(root)
    if fmt == "duke":
        if (root / DUKE_SUBDIR).is_dir():
            return root / DUKE_SUBDIR
        if any((root / d).is_dir() for d in SPLIT_DIRS.values()):
            return root
        raise UserError(f"{root}: holds neither bounding_box_train/, query/, bounding_box_test/ nor {DUKE_SUBDIR}/; "
                        "pass the DukeMTMC-reID root folder")
    if fmt == "msmt17":
        base = _msmt17_base(root)
        if base is None:
            raise UserError(f"{root}: holds neither MSMT17_V1/, MSMT17_V2/ nor list_train.txt; pass the MSMT17 root "
                            "folder")
        return base
    base = _cuhk03_base(root, fmt)
    if base is None:
        other = "cuhk03_detected" if fmt == "cuhk03_labeled" else "cuhk03_labeled"
        raise UserError(f"{root}: no {cuhk03_mat_name(fmt)} here or in {CUHK03_SUBDIR}/; put CUHK03's new-protocol "
                        f"file there" + (f" (or set {_setting(fmt_key, other)})" if fmt_key else ""))
    return base


def scan_dataset(root, splits=("train", "query", "gallery"), keep_junk: bool = False, fmt: str = "auto",
                 fmt_key: str | None = None) -> list[Record]:
    """Validated records of ``splits`` of the dataset at ``root`` in layout ``fmt`` (auto: detected); a split
    that is missing or empty, an unreadable index, a bad name or an image the index names but the folder lacks
    is a UserError naming the file. ``keep_junk``: Market-1501 / DukeMTMC-reID images of pid -1 are kept."""
    return read_layout(resolve_layout(root, fmt, fmt_key), splits, keep_junk)


def read_layout(layout: Layout, splits=("train", "query", "gallery"), keep_junk: bool = False) -> list[Record]:
    if layout.format == "market1501":
        return scan_market(layout.root, splits, keep_junk=keep_junk)
    if layout.format == "duke":
        return scan_split_folders(layout.base, splits, parse_duke_name, keep_junk, "duke", "DukeMTMC-reID")
    if layout.format == "msmt17":
        return _scan_msmt17(layout.base, splits)
    return _scan_cuhk03(layout.base, layout.format, splits)


def check_protocol(records, fmt: str, queries: bool = True) -> None:
    """Refuse a test split that breaks the re-ID protocol: a query or gallery identity that the training split holds
    too (re-ID tests on identities it never trained on; MSMT17 numbers its test identities apart, so there the same
    number is another person), and a query image with no gallery image of its identity from another camera: the
    evaluation leaves out the gallery images of the query's own identity and camera, so no search can find it.
    ``queries=False``: the first check alone (what keeps a training split apart from the test identities)."""
    person = [r for r in records if r.is_person]
    train = {r.pid for r in person if r.split == "train"}
    gallery: dict[int, set[int]] = {}  # identity -> the cameras of its gallery images
    for r in person:
        if r.split == "gallery":
            gallery.setdefault(r.pid, set()).add(r.camid)
    for r in person:
        if r.split != "train" and r.pid in train and fmt != "msmt17":
            raise UserError(f"{r.path}: {r.split} image of identity {r.pid}, which the training split holds too; a "
                            "re-ID test holds identities never trained on: move that identity's images out of one "
                            "of the splits")
        if not queries:
            continue
        if r.split == "query" and r.pid not in gallery:
            raise UserError(f"{r.path}: query image of identity {r.pid}, of which the gallery holds no image, so no "
                            "search can find it; add its gallery images or remove it from the query")
        if r.split == "query" and gallery[r.pid] == {r.camid}:
            raise UserError(f"{r.path}: query image of identity {r.pid} from camera {r.camid}, whose gallery images "
                            f"all come from that camera too; the evaluation leaves those out (a same-camera match "
                            "is not re-identification), so no search can find it: add a gallery image of it from "
                            "another camera, or remove it from the query")


def parse_duke_name(path: str) -> tuple[int, int]:
    """(pid, camid) of a DukeMTMC-reID image name ``PPPP_cC_fFFFFFFF.jpg``; UserError on anything else."""
    m = _DUKE_RE.match(os.path.basename(path))
    if m is None:
        raise UserError(f"{path}: not a DukeMTMC-reID image name; expected PPPP_cC_fFFFFFFF.jpg (e.g. "
                        "0001_c2_f0046182.jpg); rename or remove the file")
    pid, cam = int(m.group(1)), int(m.group(2))
    if len(m.group(2)) > 1 or not 1 <= cam <= DUKE_CAMERAS:  # torchreid reads one digit after the c
        raise UserError(f"{path}: camera {m.group(2)} in the name; DukeMTMC-reID names number cameras with one digit, "
                        f"c1 to c{DUKE_CAMERAS}: renumber the cameras or remove the file")
    return pid, cam


def msmt17_image_dirs(base: Path) -> tuple[Path, Path]:
    """(train, test) image folders of an MSMT17 dataset folder: by its version name, else whichever pair exists."""
    pairs = [MSMT17_VERSIONS[base.name]] if base.name in MSMT17_VERSIONS else list(MSMT17_VERSIONS.values())
    for train, test in pairs:
        if (base / train).is_dir() or (base / test).is_dir():
            return base / train, base / test
    return base / pairs[0][0], base / pairs[0][1]


def msmt17_entry(pid: int, camid: int, frame: int, tag: str, copy: int = 0) -> str:
    """An MSMT17 list entry ``PPPP/PPPP_FFFFFF_CC_TAG_KKKK_0.jpg`` for an image the project writes: the camera from
    01 in the third field, where MSMT17 readers take it; ``tag`` (``cutpaste``, ``remix``) says what wrote it, which
    no real MSMT17 name carries there; ``frame`` and ``copy`` make it unique."""
    return f"{pid:04d}/{pid:04d}_{frame:06d}_{camid:02d}_{tag}_{copy:04d}_0.jpg"


def msmt17_out_path(entry: str) -> str:
    """The path of training image ``entry`` (``msmt17_entry``) relative to an output in MSMT17's layout."""
    return f"{MSMT17_OUT}/{MSMT17_VERSIONS[MSMT17_OUT][0]}/{entry}"


def msmt17_out_entry(path: str) -> str:
    """The list entry of an output's training image from its path relative to the output (``msmt17_out_path``)."""
    prefix = msmt17_out_path("")
    if not path.startswith(prefix):
        raise ValueError(f"{path}: not under {prefix}")
    return path[len(prefix):]


class Msmt17Writer:
    """Training images in MSMT17's layout under ``root``: ``MSMT17_V1/train/<entry>``, the entry
    (``PPPP/NAME.jpg``) being what ``list_train.txt`` and the keypoint CSV name. Each image goes to a temp file
    first and is then renamed."""

    def __init__(self, root: str | os.PathLike, jpeg_quality: int = 95):
        self.base = Path(root) / MSMT17_OUT
        self.jpeg_quality = jpeg_quality

    def path_for(self, split: str, name: str) -> Path:
        return self.base / MSMT17_VERSIONS[MSMT17_OUT][0] / name

    def write(self, split: str, name: str, image) -> Path:
        path = self.path_for(split, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_image(image, path, quality=self.jpeg_quality)
        return path

    def write_list(self, entries, pids, keypoints: dict | None = None) -> None:
        """``list_train.txt``: one line ``ENTRY PID`` per training image; with ``keypoints`` (by entry), also the
        keypoint CSV beside it, where every reader of MSMT17 data looks for it."""
        atomic_write_text(self.base / MSMT17_LISTS["train"],
                          "".join(f"{e} {int(p)}\n" for e, p in zip(entries, pids, strict=True)))
        if keypoints is not None:
            write_keypoints_csv(self.base / KEYPOINT_FILES["train"], keypoints)


def _camera_field(rel: str) -> int | None:
    """The 1-based camera of an MSMT17 / CUHK03 name: its third ``_`` field, as torchreid reads it."""
    fields = rel.split("_")
    return int(fields[2]) if len(fields) > 2 and fields[2].isdigit() and int(fields[2]) >= 1 else None


def _one_label_each(labels: dict[str, list[tuple[int, str]]], what: str) -> None:
    """Refuse labels that contradict the names: ``labels`` maps each person a name gives (MSMT17's folder, CUHK03's
    camera pair and number) to its images' (label, where the label is read), and every person must have one label,
    and no two persons the same one; an image whose label contradicts the others' would be written under an
    identity it does not show."""
    owner: dict[int, str] = {}
    for person, seen in labels.items():
        label = Counter(lab for lab, _ in seen).most_common(1)[0][0]  # the label most of its images carry
        for other, where in seen:
            if other != label:
                raise UserError(f"{where}: label {other}, while the other images of {what} {person} have label "
                                f"{label}; a person has one label: fix it")
        if label in owner:
            raise UserError(f"{seen[0][1]}: label {label} is given to {what} {person} and to {what} {owner[label]}; "
                            "two persons cannot share a label: fix it")
        owner[label] = person


def _scan_msmt17(base: Path, splits) -> list[Record]:
    train_dir, test_dir = msmt17_image_dirs(base)
    records: list[Record] = []
    persons: dict[str, dict[str, list[tuple[int, str]]]] = {}  # per numbering (train; query + gallery)
    for split in splits:
        image_dir = train_dir if split == "train" else test_dir
        list_path = base / MSMT17_LISTS[split]
        if not image_dir.is_dir():
            raise UserError(f"{image_dir}: missing image folder; MSMT17 keeps the images of {list_path.name} in "
                            f"{image_dir.name}/ beside it")
        try:
            lines = list_path.read_text().splitlines()
        except OSError as e:
            raise UserError(f"{list_path}: cannot read the MSMT17 list ({e.strerror}); an MSMT17 folder needs "
                            f"{', '.join(MSMT17_LISTS.values())}") from None
        resolved = image_dir.resolve()
        before = len(records)
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                raise UserError(f"{list_path}:{lineno}: expected 'RELATIVE/PATH.jpg PID' such as "
                                f"'0000/0000_000_01_0303morning_0015_0.jpg 0', got {line[:60]!r}; fix or remove the "
                                "line")
            rel, pid = parts[0], int(parts[1])
            cam = _camera_field(rel)
            if cam is None:
                raise UserError(f"{list_path}:{lineno}: {rel}: no camera in the name; MSMT17 names carry it as the "
                                "third '_' field, from 01 (0000_000_01_0303morning_0015_0.jpg); fix the line")
            if not (image_dir / rel).is_file():
                raise UserError(f"{list_path}:{lineno}: {image_dir / rel}: missing image; restore it or remove the "
                                "line")
            person = rel.split("/", 1)[0] if "/" in rel else Path(rel).name.split("_", 1)[0]
            persons.setdefault("train" if split == "train" else "test", {}).setdefault(person, []).append(
                (pid, f"{list_path}:{lineno}"))
            records.append(Record(str(resolved / rel), pid, cam, split, key=rel, layout="msmt17"))
        if len(records) == before:
            raise UserError(f"{list_path}: empty list, no images; fill it or point at the right root")
    for numbering in persons.values():
        _one_label_each(numbering, "person")
    return records


def _scan_cuhk03(base: Path, fmt: str, splits) -> list[Record]:
    mat_path = base / cuhk03_mat_name(fmt)
    image_dir = base / cuhk03_image_dir(fmt)
    if not image_dir.is_dir():
        raise UserError(f"{image_dir}: missing image folder; the CUHK03 new protocol reads its images from "
                        f"{image_dir.name}/ beside {mat_path.name} (torchreid extracts them there from "
                        "cuhk03_release/cuhk-03.mat)")
    try:
        mat = loadmat(str(mat_path))
    except (OSError, ValueError, TypeError, NotImplementedError, IndexError, MatReadError) as e:
        raise UserError(f"{mat_path}: unreadable .mat file ({type(e).__name__}: truncated or not MATLAB data?); "
                        "replace it with CUHK03's new-protocol file") from None
    fields = ("train_idx", "query_idx", "gallery_idx", "labels", "filelist")
    missing = [f for f in fields if f not in mat]
    if missing:
        raise UserError(f"{mat_path}: no {missing[0]!r}; a CUHK03 new-protocol file holds {', '.join(fields)}")
    filelist, labels = mat["filelist"].flatten(), mat["labels"].flatten()
    if len(filelist) != len(labels):
        raise UserError(f"{mat_path}: {len(filelist)} files but {len(labels)} labels; replace it with CUHK03's "
                        "new-protocol file")
    if labels.dtype.kind not in "iuf" or (labels.dtype.kind == "f" and not np.all(np.mod(labels, 1) == 0)):
        raise UserError(f"{mat_path}: labels are not whole numbers; replace it with CUHK03's new-protocol file")
    persons: dict[str, list[tuple[int, str]]] = {}
    for i, entry in enumerate(filelist):
        name = str(np.asarray(entry).ravel()[0]) if np.asarray(entry).size else ""
        if name.count("_") >= 2:  # camera pair and person number: 1_001_1_01.png
            persons.setdefault("_".join(name.split("_")[:2]), []).append(
                (int(labels[i]), f"{mat_path}: labels[{i}] (filelist {name!r})"))
    _one_label_each(persons, "person")
    resolved = image_dir.resolve()
    records: list[Record] = []
    for split in splits:
        idxs = mat[f"{split}_idx"].flatten()
        if len(idxs) == 0:
            raise UserError(f"{mat_path}: {split}_idx is empty; an empty split (check the file)")
        for idx in idxs:
            i = int(idx) - 1  # 1-based in the file
            if not 0 <= i < len(filelist):
                raise UserError(f"{mat_path}: {split}_idx holds {int(idx)}, outside filelist's 1..{len(filelist)}; "
                                "replace it with CUHK03's new-protocol file")
            name = str(np.asarray(filelist[i]).ravel()[0])
            cam = _camera_field(name)
            if cam is None:
                raise UserError(f"{mat_path}: filelist entry {name!r} has no view; CUHK03 names carry it as the "
                                "third '_' field (1_001_2_06.png: view 2); fix the file")
            if not (image_dir / name).is_file():
                raise UserError(f"{image_dir / name}: missing image ({mat_path.name} lists it); restore it, or "
                                "extract the images again")
            records.append(Record(str(resolved / name), int(labels[i]), cam, split, layout=fmt))
    return records


def keypoint_dirs(layout: Layout) -> list[Path]:
    """Where the keypoint CSVs of ``layout`` may sit, the first being where writers put them."""
    if layout.format in CUHK03_VARIANTS:
        return [layout.base / cuhk03_image_dir(layout.format)]
    return list(dict.fromkeys([layout.base, layout.root]))


def manifest_file(root) -> Path | None:
    """A dataset's ``manifest.csv`` (the project's outputs and SimMarket write one): beside its split folders or
    MSMT17 list, or in its root; None where it has none."""
    layout = resolve_layout(root)
    return next((f / "manifest.csv" for f in dict.fromkeys([layout.base, layout.root])
                 if (f / "manifest.csv").is_file()), None)


def keypoint_path(root, split: str, fmt: str = "auto", fmt_key: str | None = None) -> Path:
    """Where the keypoint CSV of ``split`` belongs (for a writer): beside the split folders, list files or (CUHK03)
    in the variant's image folder."""
    return keypoint_dirs(resolve_layout(root, fmt, fmt_key))[0] / KEYPOINT_FILES[split]


def layout_keypoint_file(layout: Layout, split: str) -> Path:
    """The keypoint CSV of ``split`` that exists (see ``keypoint_dirs``); UserError naming where it belongs."""
    dirs = keypoint_dirs(layout)
    for folder in dirs:
        if (folder / KEYPOINT_FILES[split]).is_file():
            return folder / KEYPOINT_FILES[split]
    variant = f" --format {layout.format}" if layout.format == "cuhk03_labeled" else ""  # auto reads the detected
    there = next((folder / KEYPOINT_FILES[split] for folder in dirs if (folder / KEYPOINT_FILES[split]).exists()),
                 None)
    if there is not None:  # a folder, or something else that is no file, by the CSV's name
        raise UserError(f"{there}: not a file, where the keypoint CSV belongs; move it away and put the 18-joint CSV "
                        f"(name:keypoints_y:keypoints_x) there, or estimate it with `vmarket keypoints --root "
                        f"{layout.root}{variant}`")
    raise UserError(
        f"{dirs[0] / KEYPOINT_FILES[split]}: keypoint file missing; estimate it with `vmarket keypoints --root "
        f"{layout.root}{variant}`, or put the 18-joint CSV (name:keypoints_y:keypoints_x) there or pass its path"
    )


def keypoint_file(root, split: str, fmt: str = "auto", fmt_key: str | None = None) -> Path:
    """The keypoint CSV of ``split`` for the dataset at ``root``: beside the split folders (the dataset folder) or
    in the root above them; CUHK03: in the variant's image folder."""
    return layout_keypoint_file(resolve_layout(root, fmt, fmt_key), split)
