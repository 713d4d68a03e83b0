import numpy as np
import pytest

from generator.data.keypoints import (
    pose_vector_to_rcv,
    rcv_to_pose_vector,
    rcv_to_yx,
    read_keypoints_csv,
    write_keypoints_csv,
    yx_to_rcv,
)
from generator.errors import UserError

# two rows in the published Market-1501 annotation format, typed by hand
PUBLISHED = (
    "name:keypoints_y:keypoints_x\n"
    "0002_c1s1_000451_03.jpg: [18, 30, 27, 54, 73, 30, 56, 74, 73, 103, 126, 73, 102, 125, 16, 16, 18, 18]: "
    "[33, 33, 22, 18, 17, 43, 46, 44, 26, 22, 19, 41, 40, 43, 30, 36, -1, 39]\n"
    "0002_c1s1_000551_01.jpg: [-1, 29, 29, 51, -1, 29, 50, 66, 69, 97, 121, 70, 97, 122, -1, -1, 15, 15]: "
    "[-1, 33, 23, 20, -1, 43, 46, 47, 26, 24, 22, 40, 39, 38, -1, -1, 28, 38]\n"
)


def test_published_format_reads(tmp_path):
    f = tmp_path / "market-annotation-train.csv"
    f.write_text(PUBLISHED)
    kp = read_keypoints_csv(f)
    assert list(kp) == ["0002_c1s1_000451_03.jpg", "0002_c1s1_000551_01.jpg"]
    a = kp["0002_c1s1_000451_03.jpg"]
    assert a.shape == (18, 2)
    assert tuple(a[0]) == (18, 33)  # nose (y, x)
    assert tuple(a[13]) == (125, 43)  # left ankle
    assert tuple(a[16]) == (18, -1)  # left ear: x is -1, so the joint is missing
    assert tuple(yx_to_rcv(a)[16]) == (0, 0, 0)
    rcv = yx_to_rcv(kp["0002_c1s1_000551_01.jpg"])
    assert rcv[:, 2].sum() == 14
    assert tuple(rcv[0]) == (0, 0, 0)  # missing -> (0, 0, 0), the official convention
    assert tuple(rcv[1]) == (29, 33, 1)


def test_round_trip_is_byte_identical(tmp_path):
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text(PUBLISHED)
    write_keypoints_csv(dst, read_keypoints_csv(src))
    assert dst.read_bytes() == src.read_bytes()


def test_pose_vector_round_trip():
    rng = np.random.default_rng(0)
    yx = np.stack([rng.integers(0, 128, 18), rng.integers(0, 64, 18)], 1)
    yx[[3, 7]] = -1
    rcv = yx_to_rcv(yx)
    vec = rcv_to_pose_vector(rcv, 128, 64)
    assert vec.shape == (54,)
    assert np.allclose(vec[0:3], [yx[0, 0] / 128 * 2 - 1, yx[0, 1] / 64 * 2 - 1, 1])
    assert vec[3 * 3 + 2] == 0
    back = pose_vector_to_rcv(vec, 128, 64)
    assert np.allclose(back, rcv, atol=1e-4)
    assert (rcv_to_yx(back) == yx).all()


@pytest.mark.parametrize("row, message", [
    ("0002_c1s1_000451_03.jpg: [1, 2, 3]: [1, 2, 3]", "list of 18 integers"),
    ("0002_c1s1_000451_03.jpg [1]", "expected 'name"),
])
def test_malformed_rows(tmp_path, row, message):
    f = tmp_path / "k.csv"
    f.write_text("name:keypoints_y:keypoints_x\n" + row + "\n")
    with pytest.raises(UserError, match=message) as e:
        read_keypoints_csv(f)
    assert f"{f}:2" in str(e.value)


def test_missing_header(tmp_path):
    f = tmp_path / "k.csv"
    f.write_text("name,y,x\n")
    with pytest.raises(UserError, match="header"):
        read_keypoints_csv(f)
