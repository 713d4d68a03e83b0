"""Our evaluation equals torchreid's evaluate_rank on the same distances (torchreid never sees junk: its loaders
drop it)."""
import numpy as np
import pytest
import torch

from reid.metrics import cosine_distance, evaluate_distances, evaluate_features, squared_euclidean
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


def _stable_sort_referee(d, qp, gp, qc, gc, max_rank=50):
    """CMC, mAP and mINP by brute force: each row sorted whole (a stable sort: ties in gallery order)."""
    keep = gp != -1
    d, gp, gc = d[:, keep], gp[keep], gc[keep]
    first, aps, inps = [], [], []
    for i in range(len(qp)):
        g = np.flatnonzero(~((gp == qp[i]) & (gc == qc[i])))
        ranked = g[np.argsort(d[i, g], kind="stable")]
        hits = np.flatnonzero(gp[ranked] == qp[i]) + 1
        if len(hits):
            first.append(hits[0])
            aps.append(np.mean(np.arange(1, len(hits) + 1) / hits))
            inps.append(len(hits) / hits[-1])
    cmc = (np.array(first)[:, None] <= np.arange(1, min(max_rank, keep.sum()) + 1)[None]).mean(0)
    return cmc, np.mean(aps), np.mean(inps)


def _hard_case(seed, q=300, g=2000, ids=6, dim=8, noise=3.0):
    """Few identities (a hundred or more matches per query), a weak signal: matches at every depth of the ranking."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids + 1, dim)).astype(np.float32)
    qp, qc = rng.integers(1, ids + 1, q), rng.integers(1, 7, q)
    gp = rng.choice(np.r_[np.arange(1, ids + 1), [0, -1]], g)
    gc = rng.integers(1, 7, g)
    qf = centres[qp] + noise * rng.normal(size=(q, dim)).astype(np.float32)
    gf = centres[np.maximum(gp, 0)] + noise * rng.normal(size=(g, dim)).astype(np.float32)
    return qf, gf, qp, gp, qc, gc


@pytest.mark.parametrize("seed", [0, 1])
def test_hard_case_many_matches_deep_in_the_ranking(seed):
    qf, gf, qp, gp, qc, gc = _hard_case(seed)
    d = squared_euclidean(torch.from_numpy(qf), torch.from_numpy(gf)).numpy()
    ours = evaluate_distances(d, qp, gp, qc, gc)
    cmc, mAP, mINP = _stable_sort_referee(d, qp, gp, qc, gc)
    assert ours.mAP < 0.5 and ours.mINP < 0.3  # really a hard case
    assert abs(ours.mAP - mAP) < 1e-9 and abs(ours.mINP - mINP) < 1e-9 and np.abs(ours.cmc - cmc).max() < 1e-9
    tr_cmc, tr_mAP = _torchreid_rank(d, qp, gp, qc, gc)
    assert abs(ours.mAP - tr_mAP) < 1e-6 and np.abs(ours.cmc - tr_cmc).max() < 1e-6
    feats = evaluate_features(qf, gf, qp, gp, qc, gc)  # same distances up to the BLAS's rounding
    assert abs(feats.mAP - mAP) < 1e-6 and np.abs(feats.cmc - cmc).max() < 1e-6


@pytest.mark.parametrize("levels", [3, 12, 400])
def test_ties_at_every_depth_match_a_stable_sort(levels):
    # integer distances: matches tied with each other, with negatives before and after them in the gallery,
    # with dropped entries (same id and camera), and the hardest match tied as well
    qf, gf, qp, gp, qc, gc = _hard_case(3, q=120, g=900)
    d = squared_euclidean(torch.from_numpy(qf), torch.from_numpy(gf)).numpy()
    d = np.floor((d - d.min()) / (d.max() - d.min()) * levels)
    ours = evaluate_distances(d, qp, gp, qc, gc)
    cmc, mAP, mINP = _stable_sort_referee(d, qp, gp, qc, gc)
    assert abs(ours.mAP - mAP) < 1e-9 and abs(ours.mINP - mINP) < 1e-9 and np.abs(ours.cmc - cmc).max() < 1e-9
    same = evaluate_distances(d.astype(np.float32), qp, gp, qc, gc)  # float32 rows take the same path
    assert same.mAP == ours.mAP and same.mINP == ours.mINP


def test_dropped_and_junk_entries_never_count_even_when_tied():
    # query pid 1 cam 1; every entry at distance 1: junk, a same-camera match (dropped), a negative, a match,
    # a dropped entry again, a match. Valid ranking in gallery order: negative, match (2), match (3)
    gp = np.array([-1, 1, 5, 1, 1, 1])
    gc = np.array([2, 1, 2, 2, 1, 3])
    r = evaluate_distances(np.ones((1, 6)), [1], gp, [1], gc, max_rank=3)
    assert r.cmc.tolist() == [0.0, 1.0, 1.0]
    assert r.mAP == pytest.approx((1 / 2 + 2 / 3) / 2) and r.mINP == pytest.approx(2 / 3)
    # dropped and junk entries closer than everything change nothing
    d = np.array([[0.0, 0.0, 1.0, 2.0, 0.0, 3.0]])
    r = evaluate_distances(d, [1], gp, [1], gc, max_rank=3)
    assert r.cmc.tolist() == [0.0, 1.0, 1.0] and r.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_blocks_rows_and_threads_do_not_change_results():
    # more queries than one group of rows (128), blocks that do not divide the queries, the next block
    # prepared in a second thread (torch threads > 1) or not
    qf, gf, qp, gp, qc, gc = _hard_case(4, q=333, g=700)
    d = squared_euclidean(torch.from_numpy(qf), torch.from_numpy(gf)).numpy()
    threads = torch.get_num_threads()
    results = []
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            for chunk in (1, 7, 128, 130, 1000):
                results.append(evaluate_distances(d, qp, gp, qc, gc, chunk=chunk))
            results.append(evaluate_distances(torch.from_numpy(d), qp, gp, qc, gc, chunk=50))
            feats = evaluate_features(qf, gf, qp, gp, qc, gc, chunk=50)
            assert abs(feats.mAP - results[0].mAP) < 1e-6 and np.abs(feats.cmc - results[0].cmc).max() < 1e-6
    finally:
        torch.set_num_threads(threads)
    for r in results[1:]:
        assert r.mAP == results[0].mAP and r.mINP == results[0].mINP and np.array_equal(r.cmc, results[0].cmc)
    assert results[0].num_valid == len(qp)


def test_cosine_features_path():
    qf, gf, qp, gp, qc, gc = _hard_case(5, q=100, g=600, dim=16)
    d = cosine_distance(torch.from_numpy(qf), torch.from_numpy(gf)).numpy()
    a = evaluate_features(qf, gf, qp, gp, qc, gc, metric="cosine", chunk=33)
    cmc, mAP, mINP = _stable_sort_referee(d, qp, gp, qc, gc)
    assert abs(a.mAP - mAP) < 1e-6 and abs(a.mINP - mINP) < 1e-6 and np.abs(a.cmc - cmc).max() < 1e-6
