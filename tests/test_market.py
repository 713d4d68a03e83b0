import numpy as np
import pytest

from generator.data.market import MarketWriter, format_name, parse_name, resolve_root, scan_market
from generator.errors import UserError


def test_name_round_trip():
    for name in ["0002_c1s1_000451_03.jpg", "-1_c3s2_012345_01.jpg", "0000_c6s4_999999_99.jpg",
                 "1501_c2s3_000001_00.jpg"]:
        parsed = parse_name(name)
        assert parsed.format() == name
    assert parse_name("-1_c3s2_012345_01.jpg").pid == -1
    assert parse_name("0000_c6s4_999999_99.jpg").pid == 0
    p = parse_name("/some/dir/0002_c1s1_000451_03.jpg")
    assert (p.pid, p.camid, p.seq, p.frame, p.box) == (2, 1, 1, 451, 3)


@pytest.mark.parametrize("bad", ["002_c1s1_000451_03.jpg", "0002_c1_000451_03.jpg", "0002_c1s1_451_03.jpg",
                                 "0002_c1s1_000451_03.png", "abcd_c1s1_000451_03.jpg", "Thumbs.jpg"])
def test_malformed_names_raise(bad):
    with pytest.raises(UserError, match="PPPP_cCsS_FFFFFF_BB"):
        parse_name(bad)


def test_format_rejects_out_of_range():
    with pytest.raises(ValueError):
        format_name(2, 10, 1, 1, 1)
    assert format_name(-1, 1, 1, 1, 1) == "-1_c1s1_000001_01.jpg"


def _tiny(root):
    w = MarketWriter(root)
    img = np.zeros((128, 64, 3), np.uint8)
    w.write("train", "0001_c1s1_000001_01.jpg", img)
    w.write("query", "0002_c2s1_000001_01.jpg", img)
    w.write("gallery", "0002_c3s1_000001_01.jpg", img)
    w.write("gallery", "-1_c3s1_000002_01.jpg", img)
    w.write("gallery", "0000_c4s1_000002_01.jpg", img)


def test_scan_root_and_inner_folder(tmp_path):
    _tiny(tmp_path / "a")
    recs = scan_market(tmp_path / "a")
    assert [(r.split, r.pid, r.camid) for r in recs] == [("train", 1, 1), ("query", 2, 2), ("gallery", 0, 4),
                                                         ("gallery", 2, 3)]
    assert len(scan_market(tmp_path / "a", keep_junk=True)) == 5
    _tiny(tmp_path / "b" / "Market-1501-v15.09.15")
    assert resolve_root(tmp_path / "b").name == "Market-1501-v15.09.15"
    assert len(scan_market(tmp_path / "b")) == 4
    assert not list((tmp_path / "a").rglob(".*.tmp"))  # atomic writes leave no temp files


def test_scan_errors(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        scan_market(tmp_path / "missing")
    _tiny(tmp_path)
    (tmp_path / "query" / "0002_c2s1_000001_01.jpg").unlink()
    with pytest.raises(UserError, match="empty split"):
        scan_market(tmp_path)


def test_a_split_of_junk_images_alone_is_refused_unless_junk_is_kept(tmp_path):
    """Junk (pid -1) is left out of re-ID; a query of junk alone would reach torchreid empty and fail there."""
    _tiny(tmp_path)
    (tmp_path / "query" / "0002_c2s1_000001_01.jpg").rename(tmp_path / "query" / "-1_c2s1_000001_01.jpg")
    with pytest.raises(UserError, match=r"query: only junk images \(pid -1\).*the query split needs images"):
        scan_market(tmp_path)
    assert [r.pid for r in scan_market(tmp_path, keep_junk=True) if r.split == "query"] == [-1]
