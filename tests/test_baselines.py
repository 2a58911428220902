"""Baselines: brute-force references for k-center and kM-Closest, the Deita threshold and its shortfall, the official
presets, memory-mapped pools, errors."""

import json
import tracemalloc
import numpy as np
from conftest import mixture, unit64
import pytest
from datasel.core import InputError, dumps_json
from datasel.selectors import baselines
from datasel.selectors.baselines import random_select, kcenter_greedy, kmeans_closest, deita_filter


X = mixture()
Q = np.random.default_rng(5).normal(size=len(X))


def memmap(tmp_path, A, dtype):
    path = tmp_path / f'X_{np.dtype(dtype).name}.npy'
    np.save(path, np.asarray(A).astype(dtype))
    return np.load(path, mmap_mode='r')


# ---------------------------------------------------------------- random
def test_random_select():
    s = random_select(X, 30, seed=1)
    assert len(set(s.indices.tolist())) == 30 and s.indices.max() < len(X) and s.method == 'random'
    np.testing.assert_array_equal(s.indices, random_select(len(X), 30, seed=1).indices)
    assert not np.array_equal(s.indices, random_select(X, 30, seed=2).indices)
    np.random.seed(42)
    np.testing.assert_array_equal(random_select(500, 0.1, seed=42, preset='official').indices, np.random.permutation(np.arange(500))[:50])
    assert random_select(500, 5, generator='default_rng', preset='official').params['generator'] == 'default_rng'
    with pytest.raises(InputError, match='budget'):
        random_select(10, 11)
    with pytest.raises(InputError, match='X: expected an int'):
        random_select(0, 1)
    with pytest.raises(InputError, match='generator'):
        random_select(10, 1, generator='mt')
    with pytest.raises(TypeError):
        random_select(10, 1, 3)  # seed is keyword-only


# ---------------------------------------------------------------- k-center
def kcenter_reference(X, b, first, metric):
    if metric == 'cosine':
        U = unit64(X)
        D = 1 - U @ U.T
    else:
        A = X.astype(np.float64)
        D = np.sqrt(((A[:, None] - A[None]) ** 2).sum(-1))
    picks, radii = [first], []
    for _ in range(b):
        m = D[:, picks].min(1)
        radii.append(m.max())
        m[picks] = -1
        if len(picks) < b:
            picks.append(int(np.argmax(m)))
    return picks, radii


@pytest.mark.parametrize('metric', ['cosine', 'l2'])
@pytest.mark.parametrize('first', [0, 17, 239])
def test_kcenter_equals_bruteforce(metric, first):
    sel = kcenter_greedy(X, 40, metric=metric, first=first)
    picks, radii = kcenter_reference(X, 40, first, metric)
    assert sel.indices.tolist() == picks
    np.testing.assert_allclose(sel.scores, radii, rtol=1e-4, atol=1e-5)  # covering radius once each pick is in
    np.testing.assert_array_equal(sel.per_pick['radius'], sel.scores)
    assert np.all(np.diff(sel.scores) <= 1e-5)  # the covering radius never grows


def test_kcenter_radius_strict_json_and_seed():
    sel = kcenter_greedy(X, 25, metric='l2', seed=3)
    A = X.astype(np.float64)
    D = np.sqrt(((A[:, None] - A[None, sel.indices]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(sel.info['radius'], D.max(), rtol=1e-4)
    assert np.isfinite(sel.scores).all()
    text = dumps_json(sel.to_dict())
    assert 'Infinity' not in text and 'NaN' not in text and json.loads(text)['scores'][0] > 0
    assert kcenter_greedy(X, 240).scores[-1] == 0  # every row picked: radius 0
    assert sel.indices[0] == kcenter_greedy(X, 5, metric='l2', seed=3).indices[0]
    dup = np.repeat(X[:3], 4, axis=0)  # 3 distinct rows, 12 picks
    assert len(set(kcenter_greedy(dup, 12).indices.tolist())) == 12
    with pytest.raises(InputError, match='first'):
        kcenter_greedy(X, 5, first=-1)
    with pytest.raises(InputError, match='metric'):
        kcenter_greedy(X, 5, metric='dot')
    with pytest.raises(InputError, match='budget: 241 is out of range'):
        kcenter_greedy(X, 241)
    with pytest.raises(InputError, match='NaN'):
        kcenter_greedy(np.full((3, 2), np.nan), 1)


# ---------------------------------------------------------------- kM-Closest
def test_kmeans_closest_unique_and_official():
    sel = kmeans_closest(X, 20, seed=0)
    assert len(sel) == 20 == len(set(sel.indices.tolist())) and sel.shortfall == 0
    assert np.all(np.diff(sel.scores) <= 0)  # largest cluster first
    np.testing.assert_array_equal(sel.scores, sel.info['cluster_sizes'][sel.per_pick['cluster']])
    d2 = ((X[sel.indices] - sel.info['centroids'][sel.per_pick['cluster']]) ** 2).sum(1)
    full = ((X[:, None] - sel.info['centroids'][None]) ** 2).sum(-1).min(0)[sel.per_pick['cluster']]
    assert np.mean(np.isclose(d2, full, rtol=1e-4, atol=1e-5)) > 0.8  # mostly the centroid's nearest row itself
    dup = np.repeat(X[:4], 25, axis=0)
    assert len(kmeans_closest(dup, 10)) == 10
    loose = kmeans_closest(dup, 10, preset='official')
    assert loose.params['unique'] is False and len(loose) <= 4
    assert len(loose) + loose.shortfall == 10 and 'nearest item' in loose.shortfall_reason
    assert len(kmeans_closest(dup, 10, unique=True, preset='official')) == 10  # explicit beats the preset


# ---------------------------------------------------------------- Deita
def deita_reference(X, q, b, t):
    U, acc = unit64(X), []
    for i in np.argsort(-q, kind='stable'):
        if not acc or (U[acc] @ U[i]).max() < t:
            acc.append(int(i))
        if len(acc) == b:
            break
    return acc


@pytest.mark.parametrize('threshold', [0.3, 0.6, 0.9])
def test_deita_never_accepts_a_pair_above_threshold(threshold):
    sel = deita_filter(X, 50, quality=Q, threshold=threshold, block=16, fill=False)
    U = unit64(X[sel.indices])
    S = U @ U.T
    np.fill_diagonal(S, -np.inf)
    assert S.max() < threshold + 1e-6
    assert np.all(np.diff(sel.scores) <= 0)  # accepted in score order
    order = np.argsort(-Q, kind='stable')[: sel.info['walked']]
    rejected = np.setdiff1d(order, sel.indices)
    R = unit64(X[rejected]) @ U.T
    pos = {int(i): p for p, i in enumerate(order)}
    for r, row in zip(rejected, R):  # each rejection was too close to an earlier pick
        earlier = [j for j, a in enumerate(sel.indices) if pos[int(a)] < pos[int(r)]]
        assert row[earlier].max() >= threshold - 1e-6
    np.testing.assert_allclose(sel.per_pick['nearest'][1:], (S + np.triu(np.full_like(S, -np.inf))).max(1)[1:], rtol=1e-5)


def test_deita_matches_sequential_reference():
    for block in (1, 7, 256):
        assert deita_filter(X, 30, quality=Q, threshold=0.8, block=block, fill=False).indices.tolist() == deita_reference(X, Q, 30, 0.8)


def test_deita_official_rule():
    sel = deita_filter(X, 40, quality=Q, threshold=9.0, preset='official', fill=False)
    assert sel.params['rule'] == 'sqeuclidean'
    A = X[sel.indices].astype(np.float64)
    D = ((A[:, None] - A[None]) ** 2).sum(-1)
    np.fill_diagonal(D, np.inf)
    assert D.min() >= 9.0 - 1e-4
    assert deita_filter(X, 10, quality=Q, rule='cosine', preset='official').params['rule'] == 'cosine'


def test_deita_shortfall_without_warning_and_fill(recwarn):
    short = deita_filter(X, 200, quality=Q, threshold=0.2, fill=False)
    assert short.shortfall == 200 - len(short) > 0 and short.info['walked'] == len(X)
    assert 'pass the cosine threshold' in short.shortfall_reason
    full = deita_filter(X, 200, quality=Q, threshold=0.2)
    assert len(full) == 200 == len(set(full.indices.tolist())) and full.shortfall == 0
    np.testing.assert_array_equal(full.indices[: len(short)], short.indices)
    assert full.info['filled'] == 200 - len(short) == int(full.per_pick['filled'].sum())
    assert not full.per_pick['filled'][: len(short)].any()
    assert len(recwarn) == 0  # stated, never warned
    json.loads(dumps_json(full.to_dict()))


def test_deita_bad_inputs():
    with pytest.raises(InputError, match='quality: expected 240 values'):
        deita_filter(X, 10, quality=Q[:5])
    bad = Q.copy()
    bad[0] = np.nan
    with pytest.raises(InputError, match='NaN'):
        deita_filter(X, 10, quality=bad)
    with pytest.raises(InputError, match='rule'):
        deita_filter(X, 10, quality=Q, rule='l1')
    with pytest.raises(InputError, match='threshold'):
        deita_filter(X, 10, quality=Q, threshold=float('nan'))


# ---------------------------------------------------------------- memory-mapped pools
@pytest.mark.parametrize('dtype', [np.float16, np.float32])
def test_memory_mapped_pools_give_the_same_picks(tmp_path, dtype):
    mm = memmap(tmp_path, X, dtype)
    A = np.asarray(mm, dtype=np.float32)
    assert kcenter_greedy(mm, 20, first=3).indices.tolist() == kcenter_greedy(A, 20, first=3).indices.tolist()
    assert deita_filter(mm, 20, quality=Q).indices.tolist() == deita_filter(A, 20, quality=Q).indices.tolist()
    assert len(kmeans_closest(mm, 15)) == 15 and len(random_select(mm, 15)) == 15


@pytest.mark.parametrize('dtype', [np.float16, np.float32])
def test_memory_mapped_pool_is_not_copied(tmp_path, dtype, monkeypatch):
    n, d = 200_000, 64
    mm = memmap(tmp_path, np.random.default_rng(0).standard_normal((n, d)), dtype)
    q = np.random.default_rng(1).uniform(size=n)
    monkeypatch.setattr(baselines, 'BLOCK_BYTES', 2**20)
    for run in (lambda: kcenter_greedy(mm, 4, seed=0), lambda: deita_filter(mm, 50, quality=q), lambda: random_select(mm, 50)):
        tracemalloc.start()
        sel = run()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(sel) + sel.shortfall > 0 and peak < 0.75 * mm.nbytes, (sel.method, peak / mm.nbytes)
