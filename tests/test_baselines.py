"""Baselines: brute-force references for k-center and facility location, the Deita threshold, the code presets, errors."""
import warnings
import numpy as np
import pytest
import scipy.sparse as sp
from datasel.core import InputError
from datasel.selectors.baselines import (random_select, kcenter_greedy, kmeans_closest, kmeans_random, deita_filter, facility_location,
                               qdit, facility_location_value, knn_similarities, lazy_greedy, stochastic_greedy,
                               DenseCoverage, SparseCoverage)
from datasel.geometry.neighbors import l2_normalize


def mixture(n=240, d=12, k=6, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3
    return (centers[rng.integers(k, size=n)] + rng.normal(size=(n, d))).astype(np.float32)


X = mixture()
Q = np.random.default_rng(5).normal(size=len(X))


def unit64(A):
    A = np.asarray(A, dtype=np.float64)
    return A / np.linalg.norm(A, axis=1, keepdims=True)


# ---------------------------------------------------------------- random
def test_random_select():
    s = random_select(X, 30, seed=1)
    assert len(set(s.indices.tolist())) == 30 and s.indices.max() < len(X)
    np.testing.assert_array_equal(s.indices, random_select(len(X), 30, seed=1).indices)
    assert not np.array_equal(s.indices, random_select(X, 30, seed=2).indices)
    np.random.seed(42)
    np.testing.assert_array_equal(random_select(list(range(500)), 0.1, seed=42, reference=True).indices,
                                  np.random.permutation(np.arange(500))[:50])
    with pytest.raises(InputError, match='budget'): random_select(10, 11)
    with pytest.raises(InputError, match='n_or_X'): random_select(0, 1)


# ---------------------------------------------------------------- k-center
def kcenter_reference(X, b, first, metric):
    if metric == 'cosine':
        U = unit64(X); D = 1 - U @ U.T
    else:
        A = X.astype(np.float64); D = np.sqrt(((A[:, None] - A[None]) ** 2).sum(-1))
    picks, radii = [first], [np.inf]
    for _ in range(b - 1):
        m = D[:, picks].min(1); m[picks] = -1
        picks.append(int(np.argmax(m))); radii.append(m[picks[-1]])
    return picks, radii


@pytest.mark.parametrize('metric', ['cosine', 'l2'])
@pytest.mark.parametrize('first', [0, 17, 239])
def test_kcenter_equals_bruteforce(metric, first):
    sel = kcenter_greedy(X, 40, metric=metric, first=first)
    picks, radii = kcenter_reference(X, 40, first, metric)
    assert sel.indices.tolist() == picks
    np.testing.assert_allclose(sel.scores[1:], radii[1:], rtol=1e-4, atol=1e-5)
    assert np.all(np.diff(sel.scores[1:]) <= 1e-5)                    # the covering radius never grows


def test_kcenter_radius_and_seed():
    sel = kcenter_greedy(X, 25, metric='l2', seed=3)
    A = X.astype(np.float64)
    D = np.sqrt(((A[:, None] - A[None, sel.indices]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(sel.info['radius'], D.max(), rtol=1e-4)
    assert sel.indices[0] == kcenter_greedy(X, 5, metric='l2', seed=3).indices[0]
    dup = np.repeat(X[:3], 4, axis=0)                                  # 3 distinct rows, 12 picks
    assert len(set(kcenter_greedy(dup, 12).indices.tolist())) == 12
    with pytest.raises(InputError, match='first'): kcenter_greedy(X, 5, first=-1)
    with pytest.raises(InputError, match='metric'): kcenter_greedy(X, 5, metric='dot')
    with pytest.raises(InputError, match='budget: 241 is out of range'): kcenter_greedy(X, 241)
    with pytest.raises(InputError, match='NaN'): kcenter_greedy(np.full((3, 2), np.nan), 1)


# ---------------------------------------------------------------- kM-Closest / kM-Random
def test_kmeans_closest_unique_and_duplicates():
    sel = kmeans_closest(X, 20, seed=0)
    assert len(sel) == 20 == len(set(sel.indices.tolist()))
    assert np.all(np.diff(sel.scores) <= 0)                            # largest cluster first
    dup = np.repeat(X[:4], 25, axis=0)
    assert len(kmeans_closest(dup, 10, unique=True)) == 10
    loose = kmeans_closest(dup, 10, unique=False)
    assert len(loose) <= 4 and len(loose) + loose.info['duplicates'] == 10


def test_kmeans_random_counts_and_reference():
    sel = kmeans_random(X, 60, k=6, seed=0)
    assert sel.method == 'kmeans_random' and sel.scores is None and len(sel) == 60
    np.testing.assert_array_equal(sel.info['cluster_counts'], sel.info['cluster_budgets'])
    labels = np.repeat(np.arange(4), [100, 80, 50, 10])
    ref = kmeans_random(None, 80, labels=labels, reference=True)
    np.testing.assert_array_equal(np.bincount(labels[ref.indices]), [20, 20, 20, 10])
    with pytest.raises(InputError, match='k: expected a number of clusters'): kmeans_random(X, 10, k=241)


# ---------------------------------------------------------------- Deita
@pytest.mark.parametrize('threshold', [0.3, 0.6, 0.9])
def test_deita_never_accepts_a_pair_above_threshold(threshold):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        sel = deita_filter(X, Q, 50, threshold=threshold, block=16)
    U = unit64(X[sel.indices]); S = U @ U.T; np.fill_diagonal(S, -np.inf)
    assert S.max() < threshold + 1e-6
    assert np.all(np.diff(sel.scores) <= 0)                            # accepted in score order
    # every rejected item walked before the last acceptance is too close to an earlier accepted one
    order = np.argsort(-Q, kind='stable')[:sel.info['walked']]
    rejected = np.setdiff1d(order, sel.indices)
    R = unit64(X[rejected]) @ U.T
    pos = {int(i): p for p, i in enumerate(order)}
    for r, row in zip(rejected, R):
        earlier = [j for j, a in enumerate(sel.indices) if pos[int(a)] < pos[int(r)]]
        assert row[earlier].max() >= threshold - 1e-6


@pytest.mark.filterwarnings('ignore:deita_filter')
def test_deita_matches_sequential_reference():
    def reference(X, q, b, t):
        U, acc = unit64(X), []
        for i in np.argsort(-q, kind='stable'):
            if not acc or (U[acc] @ U[i]).max() < t: acc.append(int(i))
            if len(acc) == b: break
        return acc
    for block in (1, 7, 256):
        assert deita_filter(X, Q, 30, threshold=0.8, block=block).indices.tolist() == reference(X, Q, 30, 0.8)


def test_deita_sqeuclidean_rule():
    sel = deita_filter(X, Q, 40, threshold=9.0, rule='sqeuclidean')
    A = X[sel.indices].astype(np.float64)
    D = ((A[:, None] - A[None]) ** 2).sum(-1); np.fill_diagonal(D, np.inf)
    assert D.min() >= 9.0 - 1e-4
    assert 'nearest_sqdist' in sel.info


def test_deita_shortfall_and_fill():
    with pytest.warns(UserWarning, match='only'):
        short = deita_filter(X, Q, 200, threshold=0.2)
    assert short.info['shortfall'] == 200 - len(short) > 0 and short.info['walked'] == len(X)
    with pytest.warns(UserWarning):
        full = deita_filter(X, Q, 200, threshold=0.2, fill=True)
    assert len(full) == 200 == len(set(full.indices.tolist()))
    np.testing.assert_array_equal(full.indices[:len(short)], short.indices)
    assert len(full.info['filled']) == 200 - len(short)


def test_deita_bad_inputs():
    with pytest.raises(InputError, match='scores: expected 240 values'): deita_filter(X, Q[:5], 10)
    bad = Q.copy(); bad[0] = np.nan
    with pytest.raises(InputError, match='NaN'): deita_filter(X, bad, 10)
    with pytest.raises(InputError, match='rule'): deita_filter(X, Q, 10, rule='l1')
    with pytest.raises(InputError, match='threshold'): deita_filter(X, Q, 10, threshold=float('nan'))


# ---------------------------------------------------------------- facility location / QDIT
def naive_greedy(K, b, modular=None, weight=1.0, offset_best=0.0):
    "Greedy on sum_v max(K[v, c] - best_v, 0) * weight + modular[c], every gain recomputed (K: reference x candidates)."
    m, n = K.shape
    modular = np.zeros(n) if modular is None else modular
    best, picks, gains = np.full(m, offset_best), [], []
    for _ in range(b):
        g = weight * np.maximum(K - best[:, None], 0).sum(0) + modular
        g[picks] = -np.inf
        c = int(np.argmax(g)); picks.append(c); gains.append(g[c]); best = np.maximum(best, K[:, c])
    return picks, np.array(gains)


def clip_kernel(R, C): return np.maximum(unit64(R) @ unit64(C).T, 0)


def test_facility_location_lazy_equals_naive_greedy():
    picks, gains = naive_greedy(clip_kernel(X, X), 30)
    sel = facility_location(X, 30)
    assert sel.indices.tolist() == picks
    np.testing.assert_allclose(sel.scores, gains, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sel.info['objective'], facility_location_value(X, sel.indices), rtol=1e-6)
    nocache = facility_location(X, 30, cache_bytes=0)                  # gains recomputed from X: same picks
    assert nocache.indices.tolist() == picks


def test_facility_location_with_reference_rows():
    R = mixture(90, seed=9)
    picks, _ = naive_greedy(clip_kernel(R, X), 15)
    sel = facility_location(X, 15, reference=R)
    assert sel.indices.tolist() == picks
    brute = clip_kernel(R, X)[:, sel.indices].max(1).sum()
    np.testing.assert_allclose(facility_location_value(X, sel.indices, reference=R), brute, rtol=1e-5)


def test_shift_kernel_equals_raw_cosine_greedy():
    K = unit64(X) @ unit64(X).T
    picks, _ = naive_greedy(1 + K, 12)
    assert facility_location(X, 12, kernel='shift').indices.tolist() == picks
    np.testing.assert_allclose(facility_location_value(X, picks, kernel='shift'), (1 + K[:, picks].max(1)).sum(), rtol=1e-5)


def test_knn_sparse_lazy_equals_naive_on_the_graph():
    W = knn_similarities(X, 15)
    assert W.shape == (len(X), len(X)) and W.nnz <= len(X) * 15 and W.data.min() >= 0
    U = unit64(X); S = U @ U.T
    nn = np.argsort(-S, axis=1, kind='stable')[:, :15]
    Wr = W.tocsr()
    for v in (0, 50, 200):
        assert v in Wr[v].indices and set(Wr[v].indices.tolist()) <= set(nn[v].tolist()) | {v}
    picks, _ = naive_greedy(W.toarray().astype(np.float64), 25)
    assert facility_location(X, 25, similarity='knn', knn=15).indices.tolist() == picks
    assert facility_location(X, 25, similarity=W).indices.tolist() == picks
    with pytest.raises(InputError, match='columns'): facility_location(X, 5, similarity=W[:, :10])
    with pytest.raises(InputError, match='>= 0'): facility_location(X, 5, similarity=-W)


def test_stochastic_within_reasonable_factor():
    lazy = facility_location(X, 30)
    values = [facility_location_value(X, facility_location(X, 30, optimizer='stochastic', seed=s).indices) for s in range(3)]
    assert min(values) >= 0.95 * lazy.info['objective']                # guarantee: (1 - 1/e - eps) in expectation
    assert min(values) <= lazy.info['objective'] + 1e-6
    sel = facility_location(X, 30, optimizer='stochastic', seed=0)
    assert len(set(sel.indices.tolist())) == 30
    np.testing.assert_array_equal(sel.indices, facility_location(X, 30, optimizer='stochastic', seed=0).indices)
    with pytest.raises(InputError, match='epsilon'): facility_location(X, 5, optimizer='stochastic', epsilon=1.5)


def test_drivers_directly():
    U = l2_normalize(X)
    mod = np.linspace(0, 1, len(X))
    picks, gains, evals = lazy_greedy(DenseCoverage(U, U), 10, mod, weight=0.5)
    ref, ref_gains = naive_greedy(clip_kernel(X, X), 10, modular=mod, weight=0.5)
    assert picks.tolist() == ref and evals >= len(X)
    np.testing.assert_allclose(gains, ref_gains, rtol=1e-4)
    W = knn_similarities(X, 10)
    p2, _, _ = stochastic_greedy(SparseCoverage(W), 10, np.zeros(len(X)), epsilon=0.5, rng=np.random.default_rng(0))
    assert len(set(p2.tolist())) == 10


def test_qdit():
    K = clip_kernel(X, X)
    for alpha in (0.0, 0.2, 0.7):
        picks, _ = naive_greedy(K, 20, modular=alpha * Q, weight=1 - alpha)
        assert qdit(X, 20, Q, alpha=alpha).indices.tolist() == picks
    picks, _ = naive_greedy(K, 20, modular=0.5 * Q, weight=0.5 / len(X))
    assert qdit(X, 20, Q, alpha=0.5, normalize=True).indices.tolist() == picks
    assert sorted(qdit(X, 20, Q, alpha=1.0).indices.tolist()) == sorted(np.argsort(-Q)[:20].tolist())
    sel = qdit(X, 20, Q, alpha=0.3)
    np.testing.assert_allclose(sel.info['objective'], 0.7 * facility_location_value(X, sel.indices) + 0.3 * Q[sel.indices].sum(), rtol=1e-5)


def test_qdit_reference_equals_official_loop():
    def official(data, quality, K, alpha):           # qdit.py restated: FL over the pool recomputed per candidate
        U = unit64(data); C = U @ U.T
        chosen = []
        for _ in range(K):
            best, best_i = -np.inf, None
            for i in range(len(data)):
                if i in chosen: continue
                score = (1 - alpha) * C[:, chosen + [i]].max(1).sum() + alpha * quality[i]
                if score > best: best, best_i = score, i
            chosen.append(best_i)
        return chosen
    small, q = X[:60], Q[:60] * 5
    assert qdit(small, 8, q, alpha=0.4, reference=True).indices.tolist() == official(small, q, 8, 0.4)


def test_facility_bad_inputs():
    with pytest.raises(InputError, match='quality: expected 240 values'): qdit(X, 5, Q[:3])
    with pytest.raises(InputError, match='alpha'): qdit(X, 5, Q, alpha=-0.1)
    with pytest.raises(InputError, match='optimizer'): facility_location(X, 5, optimizer='naive')
    with pytest.raises(InputError, match='similarity'): facility_location(X, 5, similarity='dense')
    with pytest.raises(InputError, match='kernel'): facility_location(X, 5, kernel='abs')
    with pytest.raises(InputError, match="knn: only used"): facility_location(X, 5, knn=10)
    with pytest.raises(InputError, match='knn: expected a positive int'): facility_location(X, 5, similarity='knn', knn=0)
    with pytest.raises(InputError, match='selected'): facility_location_value(X, [0, 240])
    with pytest.raises(InputError, match='reference: expected 12 columns'): facility_location(X, 5, reference=np.ones((4, 3)))
    assert facility_location_value(X, []) == 0.0
