"""Greedy engines, facility location and QDIT: naive-greedy references, the kNN graph, similarity='auto' past the
cache cliff, the official QDIT loop, memory-mapped pools, errors."""

import numpy as np
from conftest import mixture, unit64
import pytest
from datasel import metrics
from datasel.core import InputError
from datasel.geometry.neighbors import l2_normalize
from datasel.selectors.greedy import (
    facility_location,
    qdit,
    knn_similarities,
    lazy_greedy,
    stochastic_greedy,
    DenseCoverage,
    SparseCoverage,
)


X = mixture()
Q = np.random.default_rng(5).normal(size=len(X))


def naive_greedy(K, b, modular=None, weight=1.0):
    "Greedy on weight * sum_v max(K[v, c] - best_v, 0) + modular[c], every gain recomputed (K: targets x candidates)."
    m, n = K.shape
    modular = np.zeros(n) if modular is None else modular
    best, picks, gains = np.zeros(m), [], []
    for _ in range(b):
        g = weight * np.maximum(K - best[:, None], 0).sum(0) + modular
        g[picks] = -np.inf
        c = int(np.argmax(g))
        picks.append(c)
        gains.append(g[c])
        best = np.maximum(best, K[:, c])
    return picks, np.array(gains)


def clip_kernel(R, C):
    return np.maximum(unit64(R) @ unit64(C).T, 0)


def test_facility_location_lazy_equals_naive_greedy():
    picks, gains = naive_greedy(clip_kernel(X, X), 30)
    sel = facility_location(X, 30)
    assert sel.indices.tolist() == picks and sel.method == 'facility_location'
    np.testing.assert_allclose(sel.scores, gains, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(sel.per_pick['gain'], sel.scores)
    assert sel.params['similarity'] == 'exact' and sel.params['neighbors'] is None
    np.testing.assert_allclose(sel.info['objective'], clip_kernel(X, X[sel.indices]).max(1).sum(), rtol=1e-5)
    nocache = facility_location(X, 30, similarity='exact', cache_bytes=0)  # gains recomputed from X: same picks
    assert nocache.indices.tolist() == picks


def test_objective_agrees_with_the_metric():
    for kernel in ('clip', 'shift'):
        sel = facility_location(X, 30, kernel=kernel)
        np.testing.assert_allclose(sel.info['objective'], metrics.facility_location_value(X, sel.indices, kernel=kernel), rtol=1e-5)
    R = mixture(50, seed=3)
    sel = facility_location(X, 10, targets=R)
    np.testing.assert_allclose(sel.info['objective'], metrics.facility_location_value(X, sel.indices, targets=R), rtol=1e-5)


def test_facility_location_with_target_rows():
    R = mixture(90, seed=9)
    picks, _ = naive_greedy(clip_kernel(R, X), 15)
    sel = facility_location(X, 15, targets=R)
    assert sel.indices.tolist() == picks and sel.params['target_rows'] == 90
    np.testing.assert_allclose(sel.info['objective'], clip_kernel(R, X)[:, sel.indices].max(1).sum(), rtol=1e-5)


def test_shift_kernel_equals_raw_cosine_greedy():
    K = unit64(X) @ unit64(X).T
    picks, _ = naive_greedy(1 + K, 12)
    assert facility_location(X, 12, kernel='shift').indices.tolist() == picks


def test_knn_sparse_lazy_equals_naive_on_the_graph():
    W = knn_similarities(X, 15)
    assert W.shape == (len(X), len(X)) and W.nnz <= len(X) * 15 and W.data.min() >= 0
    U = unit64(X)
    S = U @ U.T
    nn = np.argsort(-S, axis=1, kind='stable')[:, :15]
    Wr = W.tocsr()
    for v in (0, 50, 200):
        assert v in Wr[v].indices and set(Wr[v].indices.tolist()) <= set(nn[v].tolist()) | {v}
    picks, _ = naive_greedy(W.toarray().astype(np.float64), 25)
    sel = facility_location(X, 25, similarity='knn', neighbors=15)
    assert sel.indices.tolist() == picks
    assert (sel.params['similarity'], sel.params['neighbors'], sel.params['index']) == ('knn', 15, 'exact')
    given = facility_location(X, 25, similarity=W)
    assert given.indices.tolist() == picks and given.params['similarity'] == 'matrix'
    with pytest.raises(InputError, match='columns'):
        facility_location(X, 5, similarity=W[:, :10])
    with pytest.raises(InputError, match='>= 0'):
        facility_location(X, 5, similarity=-W)


def test_auto_similarity_switches_past_the_cache_cliff():
    small = facility_location(X, 10)
    big = facility_location(X, 10, cache_bytes=len(X) * len(X) * 4 - 1)  # the cache no longer fits: the kNN graph
    assert small.params['similarity'] == 'exact'
    assert big.params['similarity'] == 'knn' and big.params['neighbors'] == 20 and big.params['index'] in ('exact', 'ivf', 'hnsw')
    assert big.indices.tolist() == facility_location(X, 10, similarity='knn').indices.tolist()
    approx = facility_location(X, 10, similarity='knn', index='hnsw')
    assert approx.params['index'] == 'hnsw' and len(approx) == 10
    assert metrics.facility_location_value(X, approx.indices) >= 0.9 * metrics.facility_location_value(X, small.indices)


def test_stochastic_within_reasonable_factor():
    lazy = facility_location(X, 30)
    value = lambda s: clip_kernel(X, X[s.indices]).max(1).sum()
    values = [value(facility_location(X, 30, optimizer='stochastic', seed=s)) for s in range(3)]
    assert min(values) >= 0.95 * lazy.info['objective']  # guarantee: (1 - 1/e - eps) in expectation
    assert min(values) <= lazy.info['objective'] + 1e-6
    sel = facility_location(X, 30, optimizer='stochastic', seed=0)
    assert len(set(sel.indices.tolist())) == 30
    np.testing.assert_array_equal(sel.indices, facility_location(X, 30, optimizer='stochastic', seed=0).indices)
    with pytest.raises(InputError, match='epsilon'):
        facility_location(X, 5, optimizer='stochastic', epsilon=1.5)


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
        assert qdit(X, 20, quality=Q, alpha=alpha).indices.tolist() == picks
    picks, _ = naive_greedy(K, 20, modular=0.5 * Q, weight=0.5 / len(X))
    assert qdit(X, 20, quality=Q, alpha=0.5, normalize=True).indices.tolist() == picks
    assert sorted(qdit(X, 20, quality=Q, alpha=1.0).indices.tolist()) == sorted(np.argsort(-Q)[:20].tolist())
    sel = qdit(X, 20, quality=Q, alpha=0.3)
    np.testing.assert_allclose(sel.info['objective'], 0.7 * K[:, sel.indices].max(1).sum() + 0.3 * Q[sel.indices].sum(), rtol=1e-5)
    np.testing.assert_array_equal(sel.per_pick['quality'], Q[sel.indices])


def test_qdit_official_equals_official_loop():
    def official(data, quality, K, alpha):  # qdit.py restated: FL over the pool recomputed per candidate
        U = unit64(data)
        C = U @ U.T
        chosen = []
        for _ in range(K):
            best, best_i = -np.inf, None
            for i in range(len(data)):
                if i in chosen:
                    continue
                score = (1 - alpha) * C[:, chosen + [i]].max(1).sum() + alpha * quality[i]
                if score > best:
                    best, best_i = score, i
            chosen.append(best_i)
        return chosen

    small, q = X[:60], Q[:60] * 5
    sel = qdit(small, 8, quality=q, alpha=0.4, preset='official')
    assert sel.params['kernel'] == 'shift' and sel.indices.tolist() == official(small, q, 8, 0.4)
    assert qdit(small, 8, quality=q, kernel='clip', preset='official').params['kernel'] == 'clip'


@pytest.mark.parametrize('dtype', [np.float16, np.float32])
def test_memory_mapped_pool(tmp_path, dtype):
    path = tmp_path / 'X.npy'
    np.save(path, X.astype(dtype))
    mm = np.load(path, mmap_mode='r')
    A = np.asarray(mm, dtype=np.float32)
    assert facility_location(mm, 15).indices.tolist() == facility_location(A, 15).indices.tolist()
    assert qdit(mm, 15, quality=Q, similarity='knn').indices.tolist() == qdit(A, 15, quality=Q, similarity='knn').indices.tolist()


def test_bad_inputs():
    with pytest.raises(InputError, match='quality: expected 240 values'):
        qdit(X, 5, quality=Q[:3])
    with pytest.raises(InputError, match='alpha'):
        qdit(X, 5, quality=Q, alpha=-0.1)
    with pytest.raises(InputError, match='optimizer'):
        facility_location(X, 5, optimizer='naive')
    with pytest.raises(InputError, match='similarity'):
        facility_location(X, 5, similarity='dense')
    with pytest.raises(InputError, match='kernel'):
        facility_location(X, 5, kernel='abs')
    with pytest.raises(InputError, match='neighbors: expected an int'):
        facility_location(X, 5, similarity='knn', neighbors=0)
    with pytest.raises(InputError, match='index'):
        facility_location(X, 5, similarity='knn', index='lsh')
    with pytest.raises(InputError, match='targets: expected 12 columns'):
        facility_location(X, 5, targets=np.ones((4, 3)))
    with pytest.raises(InputError, match='neighbors, targets'):
        facility_location(X, 5, similarity=knn_similarities(X, 5), neighbors=5)
