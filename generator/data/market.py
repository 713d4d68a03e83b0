"""Market-1501 layout: the file-name codec, the folder scan and a writer.

Names follow ``PPPP_cCsS_FFFFFF_BB.jpg``: person id (4 digits, ``-1`` for junk,
``0000`` for distractors), camera, sequence, frame, box. Records are
``(path, pid, camid, split)`` as torchreid keeps them, with ``camid`` 1-based
as in the file name.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from generator.errors import UserError
from generator.io import atomic_save_image, folder_defect

SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
MARKET_SUBDIR = "Market-1501-v15.09.15"
JUNK_PID = -1
DISTRACTOR_PID = 0
# any camera number, so that parse_name refuses one out of range by its number, not as a malformed name
_NAME_RE = re.compile(r"^(-1|\d{4})_c(\d+)s(\d)_(\d{6})_(\d{2})\.jpg$")
MAX_CAMERA = 9  # one camera digit in a name


@dataclass(frozen=True)
class MarketName:
    pid: int  # -1 junk, 0 distractor, else the identity
    camid: int  # 1-based camera id
    seq: int  # sequence within the camera
    frame: int
    box: int  # box index within the frame

    def format(self) -> str:
        return format_name(self.pid, self.camid, self.seq, self.frame, self.box)


def parse_name(name: str) -> MarketName:
    """Parse a Market-1501 image file name; raise UserError on anything else."""
    m = _NAME_RE.match(os.path.basename(name))
    if m is None:
        raise UserError(
            f"{name}: not a Market-1501 image name; expected PPPP_cCsS_FFFFFF_BB.jpg "
            "(e.g. 0002_c1s1_000451_03.jpg, pid -1 for junk, 0000 for distractors); rename or remove the file"
        )
    pid, cam, seq, frame, box = m.groups()
    if len(cam) > 1 or not 1 <= int(cam) <= MAX_CAMERA:
        raise UserError(f"{name}: camera {cam} in the name; Market-1501 names number cameras with one digit from 1 "
                        f"(c1 to c{MAX_CAMERA}): renumber the cameras or remove the file")
    return MarketName(int(pid), int(cam), int(seq), int(frame), int(box))


def format_name(pid: int, camid: int, seq: int, frame: int, box: int) -> str:
    if pid < -1 or pid > 9999:
        raise ValueError(f"pid {pid} out of range")
    if not (1 <= camid <= 9 and 0 <= seq <= 9 and 0 <= frame <= 999999 and 0 <= box <= 99):
        raise ValueError(f"camera {camid}, sequence {seq}, frame {frame} or box {box} out of range")
    pid_str = "-1" if pid == JUNK_PID else f"{pid:04d}"
    return f"{pid_str}_c{camid}s{seq}_{frame:06d}_{box:02d}.jpg"


@dataclass(frozen=True)
class Record:
    path: str  # absolute path of the image
    pid: int
    camid: int  # 1-based, as the file name numbers the camera
    split: str  # train | query | gallery
    key: str = ""  # the image's row name in the keypoint CSV when it is not the file name (MSMT17: see layouts)
    layout: str = "market1501"  # the dataset layout it was read from (generator.data.layouts)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def keypoint_name(self) -> str:
        """The name of the image's row in the keypoint CSV: the file name, but for MSMT17 (generator.data.layouts)."""
        return self.key or self.name

    @property
    def is_person(self) -> bool:
        """An identity's image: not junk (pid -1) nor a distractor (pid 0000 in Market-1501 and DukeMTMC-reID
        names); MSMT17 numbers its identities from 0, so there pid 0 is a person."""
        return self.pid > 0 or (self.pid == 0 and self.layout == "msmt17")


def resolve_root(root: str | os.PathLike) -> Path:
    """The folder holding the split folders: ``root`` itself or ``root/Market-1501-v15.09.15``."""
    root = Path(root)
    if defect := folder_defect(root):
        raise UserError(f"{root}: {defect}; pass the Market-1501 root (the folder holding bounding_box_train/)")
    inner = root / MARKET_SUBDIR
    if inner.is_dir():
        return inner
    if any((root / d).is_dir() for d in SPLIT_DIRS.values()):
        return root
    raise UserError(
        f"{root}: holds neither bounding_box_train/, query/, bounding_box_test/ nor {MARKET_SUBDIR}/; "
        "pass the Market-1501 root folder"
    )


def scan_market(root: str | os.PathLike, splits=("train", "query", "gallery"), keep_junk: bool = False) -> list[Record]:
    """Scan a Market-1501 root into validated records, sorted by split then name.

    Every ``.jpg`` must have a valid name; junk images (pid -1) are dropped
    unless ``keep_junk``. Each requested split must exist and hold at least one image.
    """
    return scan_split_folders(resolve_root(root), splits, lambda p: _pid_cam(parse_name(p)), keep_junk,
                              "market1501", "Market-1501")


def _pid_cam(name: MarketName) -> tuple[int, int]:
    return name.pid, name.camid


def scan_split_folders(base: Path, splits, parse, keep_junk: bool, layout: str, dataset: str) -> list[Record]:
    """Records of the split folders (bounding_box_train/, query/, bounding_box_test/) under ``base``, the layout
    Market-1501 and DukeMTMC-reID share; ``parse(path) -> (pid, camid)`` reads (and validates) a file name,
    ``dataset`` names the dataset in errors."""
    records: list[Record] = []
    for split in splits:
        folder = base / SPLIT_DIRS[split]
        if not folder.is_dir():
            raise UserError(f"{folder}: missing split folder; a {dataset} root needs {SPLIT_DIRS[split]}/")
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpg", ".jpeg", ".png")))
        if not names:
            raise UserError(f"{folder}: empty split, no images found; fill it or point at the right root")
        before = len(records)
        for name in names:
            pid, camid = parse(str(folder / name))
            if not (folder / name).exists():  # resolve() below would raise on a loop
                raise UserError(f"{folder / name}: a symbolic link that leads nowhere (or to itself); remove it or "
                                "point it at the image")
            if pid == JUNK_PID and not keep_junk:
                continue
            if split == "train" and pid in (JUNK_PID, DISTRACTOR_PID):
                raise UserError(f"{folder / name}: junk or distractor image in the training split; "
                                f"move it to bounding_box_test/ or remove it")
            records.append(Record(str((folder / name).resolve()), pid, camid, split, layout=layout))
        if len(records) == before:
            raise UserError(f"{folder}: only junk images (pid -1), which re-ID leaves out; the {split} split needs "
                            f"images of identities")
    return records


class MarketWriter:
    """Writes images into the Market-1501 layout under ``root``.

    Each image goes to a temp file first and is then renamed, so a killed
    writer never leaves a truncated JPEG under a valid name.
    """

    def __init__(self, root: str | os.PathLike, jpeg_quality: int = 95):
        self.root = Path(root)
        self.jpeg_quality = jpeg_quality
        for d in SPLIT_DIRS.values():
            (self.root / d).mkdir(parents=True, exist_ok=True)

    def path_for(self, split: str, name: str) -> Path:
        return self.root / SPLIT_DIRS[split] / name

    def write(self, split: str, name: str, image) -> Path:
        """Write ``image`` (a PIL image or HxWx3 uint8 array) as ``split/name``."""
        parse_name(name)
        path = self.path_for(split, name)
        atomic_save_image(image, path, quality=self.jpeg_quality)
        return path
