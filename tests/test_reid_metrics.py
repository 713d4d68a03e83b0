"""Our evaluation equals torchreid's evaluate_rank on the same distances (torchreid never sees junk: its loaders
drop it)."""
import numpy as np
import pytest
import torch

from reid.metrics import evaluate_distances, evaluate_features, squared_euclidean
from reid.torchreid_adapter import import_torchreid


def _torchreid_rank(d, qp, gp, qc, gc, max_rank=50):
    import_torchreid()
    from torchreid.reid.metrics.rank import evaluate_rank

    keep = gp != -1
    return evaluate_rank(d[:, keep], qp, gp[keep], qc, gc[keep], max_rank=max_rank, use_metric_cuhk03=False,
                         use_cython=False)


def _random_case(seed, q=120, g=700, ids=40):
    rng = np.random.default_rng(seed)
    qp, qc = rng.integers(1, ids, q), rng.integers(1, 7, q)
    gp = rng.choice(np.r_[np.arange(1, ids), [0, 0, 0, -1, -1]], g)  # distractors (0) and junk (-1)
    gc = rng.integers(1, 7, g)
    d = rng.random((q, g)).astype(np.float32)
    d[rng.random((q, g)) < 0.2] *= 0.3  # some structure so ranks vary
    return d, qp, gp, qc, gc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parity_with_torchreid(seed):
    d, qp, gp, qc, gc = _random_case(seed)
    ours = evaluate_distances(d, qp, gp, qc, gc, max_rank=50)
    cmc, mAP = _torchreid_rank(d, qp, gp, qc, gc)
    assert abs(ours.mAP - mAP) < 1e-6
    assert np.abs(ours.cmc - cmc).max() < 1e-6
    assert 0 < ours.mINP <= ours.mAP + 1e-12  # INP <= AP for every query


def test_query_without_valid_match_is_skipped_like_torchreid():
    d, qp, gp, qc, gc = _random_case(5)
    qp[0], qc[0] = 99, 3
    gp[:3], gc[:3] = 99, 3  # pid 99 only in the query's own camera: no valid match
    qp[1] = 98  # pid 98 nowhere in the gallery
    ours = evaluate_distances(d, qp, gp, qc, gc)
    cmc, mAP = _torchreid_rank(d, qp, gp, qc, gc)
    assert ours.num_valid == len(qp) - 2
    assert abs(ours.mAP - mAP) < 1e-6 and np.abs(ours.cmc - cmc).max() < 1e-6
    with pytest.raises(ValueError, match="no query has a valid gallery match"):
        evaluate_distances(d[:2], qp[:2], gp, qc[:2], gc)


def test_protocol_by_hand():
    # one query (pid 1, cam 1); gallery sorted by distance: same-cam match (dropped), junk (dropped),
    # distractor, true match in cam 2, other id, true match in cam 3
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    gp = np.array([1, -1, 0, 1, 7, 1])
    gc = np.array([1, 2, 2, 2, 3, 3])
    r = evaluate_distances(d, [1], gp, [1], gc, max_rank=4)
    # valid ranking: distractor, match (rank 2), other, match (rank 4)
    assert r.cmc.tolist() == [0, 1, 1, 1]
    assert r.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert r.mINP == pytest.approx(2 / 4)


def test_features_path_and_chunking_agree():
    rng = np.random.default_rng(0)
    qf, gf = rng.normal(size=(90, 16)).astype(np.float32), rng.normal(size=(400, 16)).astype(np.float32)
    qp, gp = rng.integers(1, 20, 90), rng.integers(-1, 20, 400)
    qc, gc = rng.integers(1, 7, 90), rng.integers(1, 7, 400)
    d = squared_euclidean(torch.from_numpy(qf), torch.from_numpy(gf)).numpy()
    a = evaluate_distances(d, qp, gp, qc, gc, chunk=7)
    b = evaluate_features(qf, gf, qp, gp, qc, gc, chunk=1000)
    c = evaluate_distances(d, qp, gp, qc, gc, chunk=1000)
    assert a.mAP == pytest.approx(b.mAP, abs=1e-6) and a.mAP == pytest.approx(c.mAP, abs=1e-12)
    assert np.allclose(a.cmc, b.cmc) and a.mINP == pytest.approx(b.mINP, abs=1e-6)
    cmc, mAP = _torchreid_rank(d, qp, gp, qc, gc)
    assert abs(b.mAP - mAP) < 1e-5


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ties_rank_in_gallery_order_like_a_stable_sort(seed):
    d, qp, gp, qc, gc = _random_case(seed)
    d = np.floor(d * 6).astype(np.float64)  # six distinct distances: ties everywhere, positives tied at the top
    keep = gp != -1
    ours = evaluate_distances(d, qp, gp, qc, gc, max_rank=50)
    # the referee: torchreid on distances made distinct in gallery order (what a stable sort does with ties)
    order = np.cumsum(keep) - 1  # position of each entry in the gallery once junk is gone
    cmc, mAP = _torchreid_rank(d + order[None] * 1e-9, qp, gp, qc, gc)
    assert abs(ours.mAP - mAP) < 1e-6
    assert np.abs(ours.cmc - cmc).max() < 1e-6
    # and against a direct stable sort of each row
    first, aps = [], []
    for i in range(len(qp)):
        g = np.flatnonzero(keep & ~((gp == qp[i]) & (gc == qc[i])))
        ranked = g[np.argsort(d[i, g], kind="stable")]
        hits = np.flatnonzero(gp[ranked] == qp[i]) + 1
        if len(hits):
            first.append(hits[0])
            aps.append(np.mean(np.arange(1, len(hits) + 1) / hits))
    assert abs(ours.mAP - np.mean(aps)) < 1e-9
    assert abs(ours.cmc[0] - np.mean(np.array(first) == 1)) < 1e-9


def test_tied_positive_and_negative_by_hand():
    # query pid 1 cam 1; gallery: negative, positive, positive, all at distance 1; a stable sort keeps that order
    gp, gc = np.array([5, 1, 1]), np.array([2, 2, 3])
    r = evaluate_distances(np.array([[1.0, 1.0, 1.0]]), [1], gp, [1], gc, max_rank=3)
    assert r.cmc.tolist() == [0.0, 1.0, 1.0]  # first match at rank 2, not behind the tie
    assert r.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)
    # the positive first in the gallery: rank 1 and 3 (the tied negative sits between them)
    r = evaluate_distances(np.array([[1.0, 1.0, 1.0]]), [1], np.array([1, 5, 1]), [1], gc, max_rank=3)
    assert r.mAP == pytest.approx((1 + 2 / 3) / 2)


def test_junk_is_dropped_here_but_a_negative_for_evaluate_rank():
    d, qp, gp, qc, gc = _random_case(7)
    junk = gp == -1
    d[:, junk] = 0.0  # junk closest to every query: it would push every match down if it counted
    ours = evaluate_distances(d, qp, gp, qc, gc)
    cmc_clean, map_clean = _torchreid_rank(d, qp, gp, qc, gc)  # junk removed before evaluate_rank, as its loaders do
    assert abs(ours.mAP - map_clean) < 1e-6
    import_torchreid()
    from torchreid.reid.metrics.rank import evaluate_rank

    cmc_raw, map_raw = evaluate_rank(d, qp, gp, qc, gc, max_rank=50, use_metric_cuhk03=False, use_cython=False)
    assert map_raw < 0.9 * ours.mAP  # evaluate_rank alone counts junk as negatives, ahead of every match
