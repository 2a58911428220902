"""datasel.geometry.neighbors: backends agree (faiss / torch / numpy), NovelSum density is exact, k-means is deterministic and
as good as scikit-learn's, errors name their argument."""

import json
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from datasel.core import InputError
from datasel.geometry import neighbors as nb
from datasel.geometry.neighbors import (
    knn,
    knn_density,
    mean_knn_sqdist,
    kmeans,
    assign,
    nearest_to_centroids,
    pairwise,
    pairwise_blocks,
    l2_normalize,
    set_threads,
    faiss_available,
    KMeansResult,
)

BACKENDS = ['numpy', 'torch'] + (['faiss'] if faiss_available() else [])
METRICS = ['cosine', 'ip', 'l2', 'sqeuclidean']


def brute_knn(Q, X, k, metric, drop_first=False):
    "float64 brute force, ties by index."
    Q, X = Q.astype(np.float64), X.astype(np.float64)
    if metric == 'cosine':
        Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
    if metric in ('cosine', 'ip'):
        S = -(Q @ X.T)
    else:
        S = cdist(Q, X, 'sqeuclidean')
    order = np.lexsort((np.broadcast_to(np.arange(len(X)), S.shape), S), axis=1)[:, : k + drop_first]
    vals = np.take_along_axis(S, order, 1)
    vals = -vals if metric in ('cosine', 'ip') else (np.sqrt(vals) if metric == 'l2' else vals)
    return (vals[:, 1:], order[:, 1:]) if drop_first else (vals, order)


def exact_mean_sqdist(Xq, R, k):
    "a_i in float64 against the deduplicated reference, first hit dropped."
    d = cdist(Xq.astype(np.float64), np.unique(R, axis=0).astype(np.float64), 'sqeuclidean')
    d.partition(k, axis=1)
    return np.sort(d[:, : k + 1], axis=1)[:, 1:].mean(1)


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('metric', METRICS)
def test_backends_agree_with_brute_force(seed, metric):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(257, 24)).astype(np.float32) * rng.uniform(0.5, 3, size=(257, 1)).astype(np.float32)
    Q = rng.normal(size=(33, 24)).astype(np.float32)
    bv, bi = brute_knn(X, X, 9, metric, drop_first=True)
    qv, qi = brute_knn(Q, X, 6, metric)
    for b in BACKENDS:
        v, i = knn(X, 9, metric=metric, backend=b)
        assert v.dtype == np.float32 and i.dtype == np.int64 and v.shape == (257, 9)
        np.testing.assert_array_equal(i, bi, err_msg=b)
        np.testing.assert_allclose(v, bv, rtol=1e-4, atol=1e-4, err_msg=b)
        v, i = knn(X, 6, queries=Q, metric=metric, backend=b)
        np.testing.assert_array_equal(i, qi, err_msg=b)
        np.testing.assert_allclose(v, qv, rtol=1e-4, atol=1e-4, err_msg=b)
        if metric in ('cosine', 'ip'):
            assert (np.diff(v, axis=1) <= 0).all()
        else:
            assert (np.diff(v, axis=1) >= 0).all()


@pytest.mark.parametrize('backend', BACKENDS)
def test_self_kept_and_dropped(backend):
    X = np.random.default_rng(5).normal(size=(60, 8)).astype(np.float32)
    v, i = knn(X, 3, metric='sqeuclidean', exclude_self=False, backend=backend)
    np.testing.assert_array_equal(i[:, 0], np.arange(60))
    assert (v[:, 0] == 0).all()  # exact distance to itself
    v2, i2 = knn(X, 2, metric='sqeuclidean', backend=backend)
    np.testing.assert_array_equal(i2, i[:, 1:])
    # a query search with drop_first mirrors the self-search when the queries are rows of X
    v3, i3 = knn(X, 2, queries=X[:10], metric='sqeuclidean', drop_first=True, backend=backend)
    np.testing.assert_array_equal(i3, i2[:10])


def test_duplicates_get_identical_values():
    X = np.random.default_rng(2).normal(size=(100, 16)).astype(np.float32) * 10
    X[50] = X[7]
    for b in BACKENDS:
        v, _ = knn(X, 5, metric='sqeuclidean', backend=b)
        np.testing.assert_array_equal(v[50], v[7])
        np.testing.assert_array_equal(v[7][0], 0.0)  # the twin, at distance 0


def test_blockwise_numpy_search_matches_one_block(monkeypatch):
    X = np.random.default_rng(3).normal(size=(500, 12)).astype(np.float32)
    full = knn(X, 4, metric='l2', backend='numpy')
    monkeypatch.setattr(nb, '_block_rows', lambda n_cols, max_bytes, bytes_per_value=4: 7)
    small = knn(X, 4, metric='l2', backend='numpy')
    np.testing.assert_array_equal(full[1], small[1])
    np.testing.assert_array_equal(full[0], small[0])


def test_knn_errors():
    X = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    with pytest.raises(InputError, match='k < n'):
        knn(X, 5)
    with pytest.raises(InputError, match='only 5 rows'):
        knn(X, 6, exclude_self=False)
    with pytest.raises(InputError, match='only 5 rows'):
        knn(X, 6, queries=X[:2])
    with pytest.raises(InputError, match='queries: expected 3 columns'):
        knn(X, 2, queries=np.ones((2, 4)))
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(InputError, match=r'X: 1 row\(s\) contain NaN'):
        knn(bad, 2)
    with pytest.raises(InputError, match='queries: .*NaN'):
        knn(X, 2, queries=bad)
    with pytest.raises(InputError, match='at least 1 rows'):
        knn(np.zeros((0, 3)), 1)
    with pytest.raises(InputError, match='metric'):
        knn(X, 2, metric='cityblock')
    with pytest.raises(InputError, match='backend'):
        knn(X, 2, backend='gpu')
    with pytest.raises(InputError, match='positive int'):
        knn(X, 2.5)
    assert issubclass(InputError, ValueError)


@pytest.mark.parametrize('neighbors', [5, 10])
def test_density_exact_on_golden_pool(pool, neighbors):
    a = exact_mean_sqdist(pool, pool, neighbors)
    for b in BACKENDS:
        got_a = mean_knn_sqdist(pool, neighbors=neighbors, backend=b)
        assert got_a.dtype == np.float64
        np.testing.assert_allclose(got_a, a, rtol=1e-5)
        for power in (0.25, 0.5):
            d = knn_density(pool, neighbors=neighbors, power=power, backend=b)
            assert d.dtype == np.float32 and d.shape == (len(pool),)
            np.testing.assert_allclose(d, (1 / (a + 1e-9) ** power).astype(np.float32), rtol=1e-5)
        np.testing.assert_array_equal(knn_density(pool, neighbors=neighbors, power=0, backend=b), 1)


def test_density_of_subsets_against_pool(golden, pool):
    subsets = json.loads((golden / 'novelsum_subsets.json').read_text())
    for name in ('random_300', 'with_duplicates_150', 'small_40'):
        S = pool[subsets[name]]
        a = exact_mean_sqdist(S, pool, 10)
        np.testing.assert_allclose(
            knn_density(S, reference=pool, neighbors=10, power=0.5), (1 / (a + 1e-9) ** 0.5).astype(np.float32), rtol=1e-5, err_msg=name
        )
    # duplicate rows of the pool get identical densities (faiss alone can differ in the last bit)
    d = knn_density(pool)
    for src, dst in np.load(golden / 'pool_duplicate_pairs.npy'):
        assert d[src] == d[dst]


@pytest.mark.parametrize('seed', [0, 1])
def test_density_backends_agree_random(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, 20)).astype(np.float32)
    R = np.concatenate([X[:150], rng.normal(size=(300, 20)).astype(np.float32)])
    res = [knn_density(X[:150], reference=R, neighbors=7, power=0.5, backend=b) for b in BACKENDS]
    for r in res[1:]:
        np.testing.assert_allclose(r, res[0], rtol=1e-5)
    res = [knn_density(X, neighbors=10, power=0.25, dedup_reference=False, backend=b) for b in BACKENDS]
    for r in res[1:]:
        np.testing.assert_allclose(r, res[0], rtol=1e-5)


def test_density_dedup_matters():
    X = np.array([[0, 0], [0, 0], [1, 0], [0, 2]], dtype=np.float32)
    # deduplicated: row 0's neighbours after itself are (1,0) and (0,2): a = (1 + 4) / 2
    assert mean_knn_sqdist(X, neighbors=2)[0] == 2.5
    # kept: the copy is a neighbour at distance 0
    assert mean_knn_sqdist(X, neighbors=2, dedup_reference=False)[0] == 0.5
    with pytest.raises(InputError, match='distinct reference rows'):
        mean_knn_sqdist(X, neighbors=3)
    with pytest.raises(InputError, match='reference: expected 2 columns'):
        knn_density(X, reference=np.ones((5, 3)))
    with pytest.raises(InputError, match='power'):
        knn_density(X, neighbors=1, power=float('nan'))


def blobs(n=600, d=8, k=6, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, size=(k, d))
    lab = rng.integers(k, size=n)
    return (centers[lab] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize('backend', BACKENDS)
def test_kmeans_deterministic_and_consistent(backend):
    X = blobs()
    r1, r2 = kmeans(X, 6, seed=3, backend=backend), kmeans(X, 6, seed=3, backend=backend)
    assert isinstance(r1, KMeansResult)
    np.testing.assert_array_equal(r1.labels, r2.labels)
    np.testing.assert_array_equal(r1.centroids, r2.centroids)
    assert r1.inertia == r2.inertia
    assert r1.centroids.dtype == np.float32 and r1.centroids.shape == (6, 8) and r1.labels.dtype == np.int64
    np.testing.assert_array_equal(r1.labels, assign(X, r1.centroids))  # labels = nearest centroid
    inertia = ((X.astype(np.float64) - r1.centroids[r1.labels]) ** 2).sum()
    assert abs(r1.inertia - inertia) <= 1e-5 * inertia
    assert 1 <= r1.n_iter <= 20


@pytest.mark.parametrize('backend', BACKENDS)
def test_kmeans_inertia_close_to_sklearn(backend):
    from sklearn.cluster import KMeans

    X = blobs(n=1500, d=16, k=12, seed=4)
    ours = kmeans(X, 12, niter=50, nredo=3, seed=0, backend=backend).inertia
    sk = KMeans(12, n_init=3, random_state=0).fit(X).inertia_
    assert ours <= 1.05 * sk, (ours, sk)


def test_kmeans_uses_every_row_unless_told():
    if not faiss_available():
        pytest.skip('faiss subsampling')
    X = blobs(n=2000, d=4, k=4, seed=1)
    default = kmeans(X, 4, seed=0)
    explicit = kmeans(X, 4, seed=0, max_points_per_centroid=10**6)
    np.testing.assert_array_equal(default.centroids, explicit.centroids)
    sub = kmeans(X, 4, seed=0, max_points_per_centroid=40)  # trains on 160 rows
    assert not np.array_equal(default.centroids, sub.centroids)
    assert len(sub.labels) == 2000


def test_kmeans_spherical_and_errors():
    X = blobs(n=300, d=6, k=3, seed=2) + 5
    r = kmeans(X, 3, spherical=True, seed=0)
    np.testing.assert_allclose(np.linalg.norm(r.centroids, axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(r.labels, assign(X, r.centroids, metric='cosine'))
    with pytest.raises(InputError, match='k: expected an int in 1..300'):
        kmeans(X, 301)
    with pytest.raises(InputError, match='k: '):
        kmeans(X, 0)
    with pytest.raises(InputError, match='niter'):
        kmeans(X, 3, niter=0)
    with pytest.raises(InputError, match='at least 1 rows'):
        kmeans(np.zeros((0, 3)), 1)
    bad = X.copy()
    bad[0, 0] = np.inf
    with pytest.raises(InputError, match='NaN or inf'):
        kmeans(bad, 2)
    with pytest.raises(InputError, match='X: expected 3 columns'):
        assign(np.ones((4, 6)), np.ones((2, 3)))


def test_kmeans_k_equals_n_and_fallback_empty_clusters():
    X = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
    for b in BACKENDS:
        r = kmeans(X, 12, seed=0, backend=b)
        assert sorted(r.labels.tolist()) == list(range(12)) and r.inertia < 1e-6
    X = np.repeat(np.eye(3, dtype=np.float32), [20, 1, 1], axis=0)  # fewer distinct points than clusters
    r = kmeans(X, 4, seed=0, backend='numpy')
    assert np.isfinite(r.centroids).all() and r.inertia < 1e-9


def test_nearest_to_centroids():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5)).astype(np.float32)
    C = X[[3, 3, 3, 10]] + 1e-3  # three centroids on the same row
    plain = nearest_to_centroids(X, C, unique=False)
    assert plain.tolist() == [3, 3, 3, 10]
    uniq = nearest_to_centroids(X, C)
    assert len(set(uniq.tolist())) == 4 and uniq[3] == 10 and 3 in uniq.tolist()
    order = np.argsort(cdist(C[:1].astype(np.float64), X.astype(np.float64))[0])
    assert set(uniq[:3].tolist()) == set(order[:3].tolist())  # 3 and its next two nearest rows
    perm = nearest_to_centroids(X[:20], X[:20][::-1].copy())
    assert sorted(perm.tolist()) == list(range(20))
    with pytest.raises(InputError, match='only 20 rows'):
        nearest_to_centroids(X[:20], X[:21])
    # many collisions beyond the candidate list still give distinct rows
    many = nearest_to_centroids(X[:40], np.repeat(X[:1], 40, axis=0))
    assert sorted(many.tolist()) == list(range(40))


@pytest.mark.parametrize('metric,scipy_metric', [('cosine_distance', 'cosine'), ('l2', 'euclidean'), ('sqeuclidean', 'sqeuclidean')])
def test_pairwise_matches_scipy(metric, scipy_metric):
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(37, 9)).astype(np.float32), rng.normal(size=(23, 9)).astype(np.float32)
    np.testing.assert_allclose(pairwise(X, Y, metric=metric), cdist(X, Y, scipy_metric), rtol=1e-4, atol=1e-4)
    P = pairwise(X, metric=metric)
    assert P.dtype == np.float32 and (np.diag(P) == 0).all()
    np.testing.assert_allclose(P, cdist(X, X, scipy_metric), rtol=1e-4, atol=1e-4)


def test_pairwise_blocks_bounded_and_complete():
    X = np.random.default_rng(2).normal(size=(101, 4)).astype(np.float32)
    full = pairwise(X, metric='cosine')
    np.testing.assert_allclose(full, 1 - cdist(X, X, 'cosine'), atol=1e-5)
    blocks = list(pairwise_blocks(X, metric='cosine', max_bytes=101 * 4 * 10))
    assert [b.shape[0] for *_, b in blocks] == [10] * 10 + [1]
    np.testing.assert_allclose(np.concatenate([b for *_, b in blocks]), full, atol=1e-6)  # BLAS may round a 1-row block differently
    with pytest.raises(InputError, match='pairwise_blocks'):
        pairwise(X, max_bytes=1000)
    with pytest.raises(InputError, match='block_rows'):
        pairwise_blocks(X, block_rows=0)


def test_l2_normalize_and_threads(monkeypatch):
    U = l2_normalize(np.array([[3, 4], [0, 0]]))
    np.testing.assert_allclose(U, [[0.6, 0.8], [0, 0]])
    assert U.dtype == np.float32
    before = set_threads()
    monkeypatch.setenv('DATASEL_NUM_THREADS', '1')
    assert set_threads() == 1
    if faiss_available():
        import faiss

        assert faiss.omp_get_max_threads() == 1
    monkeypatch.setenv('DATASEL_NUM_THREADS', 'many')
    with pytest.raises(InputError, match='DATASEL_NUM_THREADS'):
        set_threads()
    set_threads(before)


def test_a_search_keeps_the_callers_torch_threads(monkeypatch):
    import torch
    import datasel.geometry.neighbors as nb

    monkeypatch.setattr(nb, '_threads', {})  # as in a fresh process
    monkeypatch.delenv('DATASEL_NUM_THREADS', raising=False)
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        X = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
        knn(X, 3, backend='torch')
        kmeans(X, 4, seed=0)
        assert torch.get_num_threads() == 1
        monkeypatch.setattr(nb, '_threads', {})
        monkeypatch.setenv('DATASEL_NUM_THREADS', '2')  # the environment variable is applied by the first search
        knn(X, 3, backend='torch')
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_without_faiss_auto_falls_back(monkeypatch):
    from datasel.core import MissingDependencyError

    X = np.random.default_rng(7).normal(size=(150, 10)).astype(np.float32)
    with_faiss = knn(X, 4, metric='l2'), knn_density(X, neighbors=5), kmeans(X, 5, seed=1)
    monkeypatch.setattr(nb, 'faiss', None)
    assert not faiss_available() and not nb.faiss_gpu_available()
    v, i = knn(X, 4, metric='l2')  # 'auto' now runs torch
    np.testing.assert_array_equal(i, with_faiss[0][1])
    np.testing.assert_allclose(v, with_faiss[0][0], rtol=1e-6)
    np.testing.assert_allclose(knn_density(X, neighbors=5), with_faiss[1], rtol=1e-6)
    km = kmeans(X, 5, seed=1)
    assert km.inertia <= 1.05 * with_faiss[2].inertia
    with pytest.raises(MissingDependencyError, match='pip install faiss-cpu'):
        knn(X, 2, backend='faiss')


# ---- out of core, approximate index, seeding ----


def clustered(n=3000, d=16, k=20, seed=3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3
    return (centres[rng.integers(k, size=n)] + rng.normal(size=(n, d))).astype(np.float32)


def recall(approx, exact):
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(approx.tolist(), exact.tolist())]))


def test_exact_index_equals_brute_force():
    X = clustered(800, 12)
    for metric in METRICS:
        v, i = knn(X, 5, metric=metric, index='exact')
        bv, bi = brute_knn(X, X, 5, metric, drop_first=True)
        np.testing.assert_array_equal(i, bi)
        np.testing.assert_allclose(v, bv, rtol=1e-4, atol=1e-4)
    assert nb.knn_index(800, 12) == 'exact'


@pytest.mark.skipif(not faiss_available(), reason='the approximate indexes are faiss indexes')
@pytest.mark.parametrize('index', ['ivf', 'hnsw'])
@pytest.mark.parametrize('metric', ['l2', 'cosine'])
def test_approximate_index_recall(index, metric):
    X = clustered()
    ev, ei = knn(X, 10, metric=metric, index='exact')
    av, ai = knn(X, 10, metric=metric, index=index)
    assert recall(ai, ei) >= 0.9
    hit = ai == ei
    np.testing.assert_allclose(av[hit], ev[hit], rtol=1e-5, atol=1e-5)  # found neighbours get exact values
    if index == 'ivf':  # deterministic
        np.testing.assert_array_equal(knn(X, 10, metric=metric, index=index)[1], ai)
    d_exact = knn_density(X, neighbors=10, index='exact')
    d_approx = knn_density(X, neighbors=10, index=index)
    assert np.median(np.abs(d_approx / d_exact - 1)) < 1e-3


def test_auto_index_switches_above_the_work_limit(monkeypatch):
    X = clustered(2000, 8)
    assert nb.knn_index(2000, 8) == 'exact'
    monkeypatch.setattr(nb, 'EXACT_WORK', 1000)
    if faiss_available():
        assert nb.knn_index(2000, 8) == 'ivf'
        assert recall(knn(X, 5)[1], knn(X, 5, index='exact')[1]) >= 0.9
    assert nb.knn_index(2000, 8, backend='numpy') == 'exact'
    with pytest.raises(InputError, match='index'):
        knn(X, 5, index='ivf', backend='torch')
    with pytest.raises(InputError, match='index'):
        knn(X, 5, index='annoy')


@pytest.fixture
def memmapped(tmp_path):
    "A float16 pool on disk, opened memory-mapped, and its float32 values in RAM."
    X = clustered(1200, 16, seed=8).astype(np.float16)
    X[100] = X[7]  # one duplicate row
    np.save(tmp_path / 'pool.npy', X)
    return np.load(tmp_path / 'pool.npy', mmap_mode='r'), X.astype(np.float32)


def test_memmapped_input_is_read_in_blocks(memmapped, monkeypatch):
    M, X32 = memmapped
    monkeypatch.setattr(nb, '_BLOCK_BYTES', 16 * 4 * 100)  # 100 rows a block
    monkeypatch.setattr(nb, '_DB_BYTES', 16 * 4 * 300)  # 300 reference rows a block
    C = X32[:7]
    expected = [
        knn(X32, 5, metric='l2')[1],
        knn(X32, 5, metric='cosine')[1],
        mean_knn_sqdist(X32, neighbors=5),
        nearest_to_centroids(X32, C),
        assign(X32, C),
        pairwise(X32[:5], C, metric='cosine'),
    ]
    seen = []
    rows = nb._rows

    def spy(X, s, e, unit=False):
        if X.shape[0] == len(M):
            seen.append((nb._is_file_backed(X), min(e, len(X)) - s))
        return rows(X, s, e, unit)

    monkeypatch.setattr(nb, '_rows', spy)
    got = [
        knn(M, 5, metric='l2')[1],
        knn(M, 5, metric='cosine')[1],
        mean_knn_sqdist(M, neighbors=5),
        nearest_to_centroids(M, C),
        assign(M, C),
        next(pairwise_blocks(M, C, metric='cosine'))[2][:5],
    ]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6)
    assert seen and all(backed for backed, _ in seen)  # the blocks came from the file itself
    assert max(n for _, n in seen) <= 300  # never more than one block of rows
    km = kmeans(M, 6, seed=0, max_points_per_centroid=50)
    assert km.train_rows == 300 and len(km.labels) == len(M)


def test_memmapped_input_not_loaded_whole_rss(tmp_path):
    "In a fresh process, a 150K x 384 float16 memmap (float32: 220 MiB) goes through the geometry with < 1/3 of that in anonymous memory (a float16 copy alone would be 1/2)."
    import subprocess, sys, textwrap

    n, d = 150_000, 384
    script = textwrap.dedent(f'''
        import threading, time, numpy as np
        from datasel.geometry import neighbors as nb
        def anon():
            for line in open('/proc/self/status'):
                if line.startswith('RssAnon:'): return int(line.split()[1]) * 1024
        rng = np.random.default_rng(0)
        X = np.lib.format.open_memmap('{tmp_path}/big.npy', 'w+', np.float16, ({n}, {d}))
        for s in range(0, {n}, 25_000): X[s:s + 25_000] = rng.standard_normal((25_000, {d}), dtype=np.float32)
        X.flush(); del X
        M = np.load('{tmp_path}/big.npy', mmap_mode='r')
        nb._BLOCK_BYTES, nb._DB_BYTES = 8 << 20, 16 << 20
        base, peak, done = anon(), [0], []
        def watch():
            while not done: peak[0] = max(peak[0], anon()); time.sleep(0.002)
        t = threading.Thread(target=watch); t.start()
        nb.knn(M, 5, queries=M[:20], metric='cosine')
        nb.mean_knn_sqdist(M[:20], reference=M, neighbors=5)
        nb.nearest_to_centroids(M, np.asarray(M[:16], dtype=np.float32))
        nb.kmeans(M, 8, niter=1, seed=0, max_points_per_centroid=64)
        nb.l2_normalize(M, out=np.lib.format.open_memmap('{tmp_path}/unit.npy', 'w+', np.float16, M.shape))
        done.append(1); t.join()
        print(peak[0] - base)
    ''')
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    grown = int(out.stdout.split()[-1])
    assert grown < n * d * 4 / 3, f'anonymous memory grew by {grown / 2**20:.0f} MiB'


def test_kmeanspp_seeds_on_a_sample_deterministically(monkeypatch):
    X = clustered(3000, 8, k=12, seed=5)
    monkeypatch.setattr(nb, 'KMEANSPP_ROWS', 200)  # seed on 200 of 3000 rows
    a = nb._kmeanspp(X, 12, np.random.default_rng(4))
    b = nb._kmeanspp(X, 12, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, nb._kmeanspp(X, 12, np.random.default_rng(5)))
    rows = {r.tobytes() for r in X}
    assert all(c.tobytes() in rows for c in a)  # the seeds are rows of X
    r1, r2 = kmeans(X, 12, seed=7), kmeans(X, 12, seed=7)
    np.testing.assert_array_equal(r1.centroids, r2.centroids)
    np.testing.assert_array_equal(r1.labels, r2.labels)
    assert not np.array_equal(kmeans(X, 12, seed=8).centroids, r1.centroids)


def test_kmeans_memmap_matches_in_memory_sample(memmapped):
    M, X32 = memmapped
    a = kmeans(M, 5, seed=2, max_points_per_centroid=60)
    b = kmeans(X32, 5, seed=2, max_points_per_centroid=60)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.centroids, b.centroids, rtol=1e-6)
    assert kmeans(M, 5, seed=0).train_rows == len(M)  # 5 * 256 > 1200 rows: all of them


def test_l2_normalize_out_of_core(memmapped, tmp_path):
    M, X32 = memmapped
    out = np.lib.format.open_memmap(tmp_path / 'unit.npy', 'w+', np.float32, M.shape)
    assert l2_normalize(M, out=out, max_bytes=16 * 4 * 64) is out
    np.testing.assert_array_equal(out, l2_normalize(X32))
    Y = X32.copy()
    l2_normalize(Y, out=Y)  # in place
    np.testing.assert_array_equal(Y, l2_normalize(X32))
    with pytest.raises(InputError, match='out'):
        l2_normalize(X32, out=np.empty((3, 3)))


def test_distinct_rows_matches_unique():
    X = clustered(500, 6).round(1)
    X[[10, 20, 30]] = X[[1, 2, 1]]
    X[40, 0] = -0.0
    X[41] = X[40]
    X[41, 0] = 0.0
    keep = nb._distinct_rows(X)
    np.testing.assert_array_equal(keep, np.sort(np.unique(X, axis=0, return_index=True)[1]))
    assert nb._distinct_rows(np.unique(X, axis=0)) is None


@pytest.mark.parametrize('self_search', [True, False])
def test_knn_float32_copy_searches_float32_rows_and_one_copy_at_most(monkeypatch, self_search):
    X = np.random.default_rng(5).standard_normal((400, 16)).astype(np.float16)
    queries = None if self_search else X[:40]
    seen = []
    real = nb._knn_arrays

    def spy(Q, R, *args, **kwargs):
        seen.append((Q.dtype, R.dtype, Q is R))
        return real(Q, R, *args, **kwargs)

    monkeypatch.setattr(nb, '_knn_arrays', spy)
    plain = nb.knn(X, 5, queries=queries, metric='sqeuclidean')
    copied = nb.knn(X, 5, queries=queries, metric='sqeuclidean', float32_copy=True)
    np.testing.assert_array_equal(copied[1], plain[1])
    np.testing.assert_allclose(copied[0], plain[0], rtol=1e-6)
    assert seen[0][:2] == (np.float16, np.float16)
    # the queries become float32; in a self-search X is that same copy, else X stays float16 (one copy at most)
    assert seen[1] == ((np.float32, np.float32, True) if self_search else (np.float32, np.float16, False))
