"""NovelSum against the official CSV, its paper variant, and the diversity-metric suite on data with a known answer."""

import json
import numpy as np
import pandas as pd
import pytest

from datasel.core import InputError
from datasel.metrics import (
    METRICS,
    TEXT_METRICS,
    cluster_inertia,
    diversity,
    distsum_cosine,
    distsum_l2,
    facility_location_value,
    knn_distance,
    list_metrics,
    log_determinant,
    novelsum,
    novelsum_grid,
    partition_entropy,
    radius,
    sorted_row_averages,
    token_codes,
    ttr,
    vendi_score,
    vocd_d,
    word_tokenize,
)
from datasel.geometry.neighbors import assign, kmeans


@pytest.fixture(scope='module')
def official(golden):
    return pd.read_csv(golden / 'novelsum_reference.csv', index_col=0)


@pytest.fixture(scope='module')
def subsets(golden):
    return json.loads((golden / 'novelsum_subsets.json').read_text())


def mixture(rng, n=300, d=16, centers=6, scale=3.0, spread=0.5):
    "Gaussian mixture whose centres are `scale` apart on average."
    mu = rng.standard_normal((centers, d))
    comp = rng.integers(0, centers, n)
    return (scale * mu[comp] + spread * rng.standard_normal((n, d))).astype(np.float32)


# ---------------------------------------------------------------- NovelSum: golden fidelity


def test_grid_matches_every_official_value(pool, official, subsets):
    assert list(subsets) == list(official.index)
    for name, idx in subsets.items():
        grid = novelsum_grid(pool[idx], density_pool=pool)
        assert list(grid) == list(official.columns)
        ours, ref = np.array(list(grid.values())), official.loc[name].to_numpy(dtype=np.float64)
        np.testing.assert_allclose(ours, ref, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize('name', ['small_40', 'with_duplicates_150'])
def test_single_setting_matches_official(pool, official, subsets, name):
    for k in (5, 10):
        for beta in (0, 0.25, 0.5):
            for alpha in (0, 1, 2):
                value = novelsum(
                    pool[subsets[name]], density_pool=pool, neighbors=k, density_power=beta, distance_power=alpha, preset='official'
                )
                assert value == pytest.approx(official.loc[name, f'neighbor_{k}_density_{beta}_distance_{alpha}'], rel=1e-5)


def test_grid_without_pool_is_self_density(pool):
    X = pool[:200]
    grid = novelsum_grid(X, neighbors=(10,), density_powers=(0.5,), distance_powers=(1,))
    assert grid['neighbor_10_density_0.5_distance_1'] == pytest.approx(novelsum(X, density_pool=X, preset='official'), rel=1e-6)


# ---------------------------------------------------------------- NovelSum: definitions


def brute_novelsum(X, sigma, alpha, density_on, include_self, normalize, aggregate):
    "Straight from the definition, float64."
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    D = 1 - Xn @ Xn.T
    n = len(X)
    out = []
    for i in range(n):
        row = D[i] * (sigma if density_on == 'neighbor' else 1)
        if not include_self:
            row = np.delete(row, i)
        row = np.sort(row)
        w = 1 / np.arange(1, len(row) + 1) ** alpha
        v = (row * w).sum() / (w.sum() if normalize else 1)
        out.append(v * (sigma[i] if density_on == 'row' else 1))
    out = np.array(out)
    return out.mean() if aggregate == 'mean' else out.sum()


def test_variants_follow_their_definitions():
    rng = np.random.default_rng(0)
    X = mixture(rng, n=80, d=8).astype(np.float64)
    P = mixture(rng, n=400, d=8)
    X32 = X.astype(np.float32)
    U = np.unique(P.astype(np.float64), axis=0)
    sq = ((X[:, None, :] - U[None]) ** 2).sum(-1)
    a = np.sort(sq, axis=1)[:, 1:6].mean(1)
    sigma = 1 / (a + 1e-9) ** 0.5
    for preset, opts in [('official', ('row', True, True, 'mean')), ('paper', ('neighbor', False, False, 'sum'))]:
        for alpha in (0, 1, 2):
            ours = novelsum(X32, density_pool=P, neighbors=5, density_power=0.5, distance_power=alpha, preset=preset)
            assert ours == pytest.approx(brute_novelsum(X, sigma, alpha, *opts), rel=1e-4), (preset, alpha)
    assert novelsum(X32, density_pool=P, neighbors=5) == novelsum(X32, density_pool=P, neighbors=5, preset='paper')  # paper by default
    # one option at a time on top of the official preset: the explicit option wins
    off = dict(density_pool=P, neighbors=5, preset='official')
    assert novelsum(X32, **off, density_on='neighbor') == pytest.approx(
        brute_novelsum(X, sigma, 1, 'neighbor', True, True, 'mean'), rel=1e-4
    )
    assert novelsum(X32, **off, include_self=False) == pytest.approx(brute_novelsum(X, sigma, 1, 'row', False, True, 'mean'), rel=1e-4)
    assert novelsum(X32, **off, aggregate='sum') == pytest.approx(80 * novelsum(X32, **off), rel=1e-9)


def test_row_blocks_do_not_change_the_result():
    X = mixture(np.random.default_rng(1), n=150)
    whole = sorted_row_averages(X, (0, 1, 2))
    tiny_blocks = sorted_row_averages(X, (0, 1, 2), max_bytes=150 * 4 * 7)  # 7 rows per block
    np.testing.assert_allclose(tiny_blocks, whole, rtol=1e-5)  # float32 products of other shapes round differently


def test_duplicating_samples_lowers_novelsum_and_vendi(pool):
    rng = np.random.default_rng(3)
    for _ in range(3):
        distinct = rng.choice(len(pool), 200, replace=False)
        copies = np.repeat(distinct[:20], 10)  # 20 samples, ten copies each: same size, fewer distinct rows
        for preset in ('official', 'paper'):
            assert novelsum(pool[copies], density_pool=pool, preset=preset) < novelsum(pool[distinct], density_pool=pool, preset=preset)
        assert vendi_score(pool[copies]) < vendi_score(pool[distinct])


def test_spreading_clusters_apart_raises_distsum():
    "Clusters around a common mean direction (as embeddings are), pushed further apart."
    rng = np.random.default_rng(4)
    mean, centers = 2 * rng.standard_normal(16), rng.standard_normal((6, 16))
    comp, noise = rng.integers(0, 6, 300), 0.5 * rng.standard_normal((300, 16))
    values = [
        (distsum_cosine(X), distsum_l2(X), novelsum(X, density_power=0))
        for X in [(mean + scale * centers[comp] + noise).astype(np.float32) for scale in (0.5, 1, 2, 4)]
    ]
    for metric in zip(*values):
        assert np.all(np.diff(metric) > 0)


# ---------------------------------------------------------------- the suite


def test_vendi_known_values():
    v = np.random.default_rng(5).standard_normal(12)
    assert vendi_score(np.tile(v, (40, 1))) == pytest.approx(1.0, abs=1e-6)
    Q, _ = np.linalg.qr(np.random.default_rng(6).standard_normal((64, 64)))
    for n in (10, 64):
        assert vendi_score(Q[:n].astype(np.float32)) == pytest.approx(n, rel=1e-5)
        assert vendi_score(Q[:n].astype(np.float32), q=2) == pytest.approx(n, rel=1e-5)
        assert vendi_score(Q[:n].astype(np.float32), q=np.inf) == pytest.approx(n, rel=1e-5)
    X = mixture(np.random.default_rng(7), n=200, d=8)  # d < n: dual form against the n x n kernel
    Xn = X.astype(np.float64) / np.linalg.norm(X, axis=1, keepdims=True)
    lam = np.clip(np.linalg.eigvalsh(Xn @ Xn.T) / 200, 1e-300, None)
    assert vendi_score(X) == pytest.approx(np.exp(-(lam * np.log(lam)).sum()), rel=1e-6)


def test_log_determinant_dual_form():
    X = mixture(np.random.default_rng(8), n=60, d=6)
    Xn = X.astype(np.float64) / np.linalg.norm(X, axis=1, keepdims=True)
    ref = np.linalg.slogdet(Xn @ Xn.T + 1e-6 * np.eye(60))[1]
    assert log_determinant(X, eps=1e-6) == pytest.approx(ref, rel=1e-6)
    assert log_determinant(X[:5], eps=1e-6) == pytest.approx(np.linalg.slogdet(Xn[:5] @ Xn[:5].T + 1e-6 * np.eye(5))[1], rel=1e-6)


def test_distance_metrics_against_brute_force():
    X = mixture(np.random.default_rng(9), n=120, d=5)
    D = np.linalg.norm(X[:, None].astype(np.float64) - X[None], axis=-1)
    assert distsum_l2(X) == pytest.approx(D.mean(), rel=1e-5)
    assert distsum_l2(X, include_self=False) == pytest.approx(D.sum() / (120 * 119), rel=1e-5)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    C = 1 - Xn.astype(np.float64) @ Xn.T.astype(np.float64)
    assert distsum_cosine(X) == pytest.approx(C.mean(), abs=1e-6)
    np.fill_diagonal(C, np.inf)
    np.fill_diagonal(D, np.inf)
    assert knn_distance(X, neighbors=4) == pytest.approx(np.sort(C, 1)[:, :4].mean(), rel=1e-4)
    assert knn_distance(X, neighbors=4, metric='l2') == pytest.approx(np.sort(D, 1)[:, :4].mean(), rel=1e-4)
    assert radius(X) == pytest.approx(np.exp(np.log(X.astype(np.float64).std(0)).mean()), rel=1e-9)
    assert radius(X * 2) == pytest.approx(2 * radius(X), rel=1e-6)


def test_coverage_and_partition_metrics():
    rng = np.random.default_rng(10)
    R = mixture(rng, n=500, d=6)
    S = R[:30]
    Rn, Sn = R / np.linalg.norm(R, axis=1, keepdims=True), S / np.linalg.norm(S, axis=1, keepdims=True)
    best = (Rn @ Sn.T).max(1)
    assert facility_location_value(S, targets=R, kernel='cosine') == pytest.approx(best.sum(), rel=1e-4)
    assert facility_location_value(S, targets=R) == pytest.approx(np.maximum(best, 0).sum(), rel=1e-4)
    assert facility_location_value(R, indices=np.arange(30)) == pytest.approx(facility_location_value(S, targets=R), rel=1e-9)
    assert facility_location_value(S, targets=R, kernel='shift') == pytest.approx((1 + best).sum(), rel=1e-4)
    assert facility_location_value(S, targets=R, kernel='distance', reduce='mean') == pytest.approx((1 - best).mean(), abs=1e-5)
    assert facility_location_value(R[:200], targets=R) > facility_location_value(S, targets=R)  # a bigger subset covers more
    cells = kmeans(R, 12, seed=0).centroids
    p = np.bincount(assign(S, cells), minlength=12) / 30
    p = p[p > 0]
    assert partition_entropy(S, centroids=cells) == pytest.approx(-(p * np.log2(p)).sum(), rel=1e-9)
    assert partition_entropy(S, centroids=cells, normalize=True) == pytest.approx(-(p * np.log2(p)).sum() / np.log2(12), rel=1e-9)
    assert partition_entropy(S, R, clusters=12) <= np.log2(12) + 1e-12
    km = kmeans(S, 3, seed=1)
    assert cluster_inertia(S, clusters=3, seed=1) == pytest.approx(km.inertia, rel=1e-9)
    assert cluster_inertia(S, clusters=3, seed=1, reduce='mean') == pytest.approx(km.inertia / 30, rel=1e-9)


def test_text_metrics():
    assert word_tokenize("It's a Test, a TEST.") == ["it's", 'a', 'test', 'a', 'test']
    assert ttr(['a b c', 'a b d']) == pytest.approx(4 / 6)
    assert ttr(['x y x y x y'], window=2) == pytest.approx(1.0)
    assert ttr(['x x x y'], window=2) == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert ttr(['ab', 'ba'], tokenizer=list) == pytest.approx(2 / 4)
    hf_like = lambda text: {'input_ids': [len(w) for w in text.split()]}  # a tokenizer returning input_ids
    assert ttr(['aa bb c'], tokenizer=hf_like) == pytest.approx(2 / 3)
    rng = np.random.default_rng(11)
    texts = lambda vocab: [' '.join(rng.choice([f'w{i}' for i in range(vocab)], 300))]
    d10, d100, d1000 = vocd_d(texts(10)), vocd_d(texts(100)), vocd_d(texts(1000))
    assert d10 < d100 < d1000
    same = texts(50)
    assert vocd_d(same, seed=3) == vocd_d(same, seed=3)


def test_dispatcher():
    assert list_metrics() == list(METRICS) and len(METRICS) == 12
    assert set(TEXT_METRICS) <= set(METRICS)
    X = mixture(np.random.default_rng(12), n=100)
    assert diversity(X, 'vendi') == vendi_score(X)
    assert diversity(X, 'novelsum', neighbors=5) == novelsum(X, neighbors=5)
    assert diversity(['a b', 'b c'], 'ttr') == 0.75
    with pytest.raises(InputError, match='metric: expected one of'):
        diversity(X, 'simpson')
    with pytest.raises(InputError, match='embed the texts first'):
        diversity(['a b'], 'distsum_l2')
    with pytest.raises(InputError, match='list of strings'):
        diversity(X, 'vocd_d')
    with pytest.raises(InputError, match='single string'):
        diversity('one text', 'ttr')
    with pytest.raises(InputError, match='vendi'):
        diversity(X, 'vendi', k=3)


# ---------------------------------------------------------------- bad inputs


def test_bad_inputs(pool):
    with pytest.raises(InputError, match='neighbours need more than 10'):
        novelsum(pool[:10])
    with pytest.raises(InputError, match='neighbours need more than 10'):
        novelsum_grid(pool[:8])
    bad = pool[:50].copy()
    bad[3, 0] = np.nan
    with pytest.raises(InputError, match='NaN'):
        novelsum(bad, density_pool=pool)
    with pytest.raises(InputError, match='density_pool'):
        novelsum(pool[:50], density_pool=bad)
    with pytest.raises(InputError, match='NaN'):
        distsum_cosine(bad)
    with pytest.raises(InputError, match='density_power'):
        novelsum(pool[:50], density_power=-0.5)
    with pytest.raises(InputError, match='distance_powers'):
        novelsum_grid(pool[:50], distance_powers=(1, np.nan))
    with pytest.raises(InputError, match='preset'):
        novelsum(pool[:50], preset='reference')
    with pytest.raises(TypeError):
        novelsum(pool[:50], pool)  # the density pool is keyword-only
    with pytest.raises(InputError, match='density_on'):
        novelsum(pool[:50], density_on='column')
    with pytest.raises(InputError, match='dim|columns'):
        novelsum(pool[:50], density_pool=pool[:, :10])
    with pytest.raises(InputError, match='all-zero'):
        vendi_score(np.zeros((4, 3)))
    with pytest.raises(InputError, match='clusters: expected an int in 1..40'):
        partition_entropy(pool[:40])
    with pytest.raises(InputError, match='clusters:'):
        cluster_inertia(pool[:5], clusters=6)
    with pytest.raises(InputError, match='kernel'):
        facility_location_value(pool[:5], kernel='rbf')
    with pytest.raises(InputError, match='selection is empty'):
        facility_location_value(pool, indices=[])
    with pytest.raises(InputError, match='at least 50 tokens'):
        vocd_d(['only a few words here'])
    with pytest.raises(InputError, match='no tokens'):
        ttr(['...'])
    with pytest.raises(InputError, match='expected strings'):
        ttr(['ok', 3])


def peak_traced_bytes(fn, *args) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        fn(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_lexical_metrics_memory_is_linear_in_tokens():
    "vocd-D and TTR hold 4 bytes a token plus the vocabulary, whatever the longest token (issue 16 item 11)."
    rng = np.random.default_rng(13)
    words = [f'w{i}' for i in range(300)]
    texts = lambda m: [' '.join(rng.choice(words, 40)) + ' ' + 'y' * 5000 for _ in range(m)]  # one 5,000-character token a text
    small, large = texts(250), texts(1000)
    for fn in (vocd_d, ttr, lambda t: ttr(t, window=20)):
        fn(small)  # imports (scipy for the vocd fit) happen once, outside the measure
        a, b = peak_traced_bytes(fn, small), peak_traced_bytes(fn, large)
        assert b < 4.5 * a, (fn, a, b)  # 4x the tokens: at most about 4x the memory (linear)
        assert b < 16 * 2**20, (fn, b)  # a fixed-width string array of 41K x 5,000 characters would take 780 MiB
    assert ttr(large) == pytest.approx(len(set(' '.join(large).split())) / len(' '.join(large).split()))


def test_token_codes():
    codes, types = token_codes(['b a b', 'c a'])
    assert codes.tolist() == [0, 1, 0, 2, 1] and types == 3 and codes.dtype == np.int32
