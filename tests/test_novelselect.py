"""NovelSelect: the official orders (preset='official', seed 42), the incremental algorithm against the literal official
step, presets, quality weighting, float16 storage, memory-mapped input, the memory model, the torch path and bad inputs."""

import numpy as np
import pytest

from datasel.core import InputError, Selection
from datasel.registry import method_info, select
from datasel.geometry.neighbors import knn_density, l2_normalize
from datasel.selectors.novelselect import memory_needed, novelselect, novelty_scores


@pytest.fixture(scope='module')
def canonical(pool):
    "Map every pool index to the smallest index of its identical-row group."
    _, group = np.unique(pool, axis=0, return_inverse=True)
    smallest = np.full(group.max() + 1, len(pool))
    np.minimum.at(smallest, group, np.arange(len(pool)))
    return lambda idx: smallest[group[np.asarray(idx)]]


def clustered(seed, n=400, d=16, centers=8):
    rng = np.random.default_rng(seed)
    mean, C = rng.standard_normal(d), 2 * rng.standard_normal((centers, d))
    comp = rng.integers(0, centers, n)
    X = mean + C[comp] + rng.uniform(0.3, 1.2, centers)[comp, None] * rng.standard_normal((n, d))
    return X.astype(np.float32), comp


# ---------------------------------------------------------------- golden fidelity


@pytest.mark.parametrize('run, params', [('default', {}), ('density0', {'density_power': 0.0}), ('distance0', {'distance_power': 0.0})])
def test_official_orders(pool, golden, canonical, run, params):
    gold = np.load(golden / f'novelselect_{run}_order.npy')
    sel = novelselect(pool, 200, preset='official', seed=42, **params)
    assert sel.indices[0] == gold[0] == np.random.RandomState(42).randint(0, len(pool))
    np.testing.assert_array_equal(canonical(sel.indices), canonical(gold))


def test_official_step_reproduces_official_order(pool, golden, canonical):
    gold = np.load(golden / 'novelselect_default_order.npy')
    ref = novelselect(pool, 120, preset='official', seed=42, algorithm='official')
    np.testing.assert_array_equal(canonical(ref.indices), canonical(gold[:120]))


# ---------------------------------------------------------------- incremental == official step


@pytest.mark.parametrize('alpha, beta', [(1.0, 0.5), (0.0, 0.5), (2.0, 0.5), (0.5, 0.25), (1.0, 0.0), (3.0, 0.5)])
def test_incremental_equals_official_step(alpha, beta):
    X, _ = clustered(int(alpha * 10 + beta * 100))
    opts = dict(density_power=beta, distance_power=alpha, neighbors=5, seed=3, preset='official')
    fast = novelselect(X, 60, **opts)
    ref = novelselect(X, 60, algorithm='official', **opts)
    np.testing.assert_array_equal(fast.indices, ref.indices)
    np.testing.assert_allclose(fast.scores, ref.scores, rtol=1e-5, atol=1e-7)
    assert len(set(fast.indices.tolist())) == 60


def test_each_step_is_the_argmax_of_the_official_scores():
    X, _ = clustered(5, n=300)
    sel = novelselect(X, 40, neighbors=5, preset='official')
    U, density = l2_normalize(X), knn_density(X, None, 5, power=0.5)
    for t in (1, 2, 10, 39):
        scores = novelty_scores(U, density, sel.indices[:t])
        best = np.flatnonzero(scores == scores.max())
        assert sel.indices[t] == best[0]
        assert sel.scores[t] == pytest.approx(scores.max(), rel=1e-5)


def test_selected_pair_density_and_quality_also_agree():
    X, comp = clustered(6)
    q = np.random.default_rng(0).uniform(0.2, 3, len(X))
    for kw in ({'pair_density': 'selected'}, {'quality': q}, {'quality': q, 'distance_power': 0.0}, {'lookahead': 1}, {'lookahead': 64}):
        fast, ref = novelselect(X, 50, **kw), novelselect(X, 50, algorithm='official', **kw)
        np.testing.assert_array_equal(fast.indices, ref.indices)
        np.testing.assert_allclose(fast.scores, ref.scores, rtol=1e-5, atol=1e-7)


def test_torch_path_matches_numpy():
    X, _ = clustered(7)
    base = novelselect(X, 50, device='numpy')
    np.testing.assert_array_equal(novelselect(X, 50, device='cpu').indices, base.indices)
    np.testing.assert_array_equal(novelselect(X, 50, device='cpu', algorithm='official').indices, base.indices)
    assert base.info['device'] == 'numpy' and novelselect(X, 5, device='cpu').info['device'] == 'cpu'


@pytest.mark.gpu
def test_cuda_path_matches_numpy():
    X, _ = clustered(8, n=2000, d=64)
    np.testing.assert_array_equal(novelselect(X, 100, device='cuda').indices, novelselect(X, 100, device='numpy').indices)


# ---------------------------------------------------------------- quality


def test_quality_pulls_picks_towards_high_quality():
    X, comp = clustered(9, n=600)
    quality = np.where(comp == 2, 3.0, 1.0)
    plain, weighted = novelselect(X, 60), novelselect(X, 60, quality=quality)
    assert (comp[weighted.indices] == 2).sum() > (comp[plain.indices] == 2).sum()
    np.testing.assert_allclose(weighted.scores[1:], weighted.per_pick['novelty'][1:] * quality[weighted.indices[1:]], rtol=1e-12)
    np.testing.assert_array_equal(weighted.per_pick['quality'], quality[weighted.indices])
    # a constant quality changes nothing
    np.testing.assert_array_equal(novelselect(X, 60, quality=np.full(600, 0.7)).indices, plain.indices)
    # zero quality is picked only once every positive-quality row is taken
    zero = np.zeros(600)
    zero[:30] = 1
    picks = novelselect(X, 40, quality=zero, first=0).indices
    assert set(picks[:30].tolist()) == set(range(30))


# ---------------------------------------------------------------- the Selection and the contract


def test_selection_record():
    X, _ = clustered(10, n=200)
    sel = novelselect(X, 0.1, first=17)
    assert isinstance(sel, Selection) and len(sel) == 20 and sel.indices[0] == 17 and sel.method == 'novelselect'
    assert sel.scores[0] == 0 and np.all(sel.scores[1:] > 0)
    assert sel.params['algorithm'] == 'incremental' and sel.params['budget'] == 20 and sel.params['first'] == 17
    assert sel.params['preset'] == 'paper' and sel.params['pair_density'] == 'selected' and sel.params['average'] is False
    assert np.all(np.diff(sel.info['elapsed_s']) >= 0) and len(sel.info['elapsed_s']) == 20
    assert len(sel.info['reranked_per_step']) == 20 and 1 <= sel.info['column_passes'] < 20
    assert {'density_s', 'rows_s', 'select_s', 'total_s'} <= set(sel.timings)
    np.testing.assert_array_equal(sel.per_pick['density'], knn_density(X, None, 10, power=0.5)[sel.indices])
    np.testing.assert_array_equal(sel.scores, sel.per_pick['novelty'])
    assert novelselect(X, 1).indices.tolist() == [np.random.RandomState(0).randint(0, 200)]
    everything = novelselect(X, 200)
    assert sorted(everything.indices.tolist()) == list(range(200))
    np.testing.assert_array_equal(novelselect(X, 20, seed=5).indices, novelselect(X, 20, seed=5).indices)


def test_presets_and_explicit_options():
    X, _ = clustered(11, n=300)
    paper, official = novelselect(X, 40, seed=1), novelselect(X, 40, seed=1, preset='official')
    assert (official.params['pair_density'], official.params['average']) == ('sum', True)
    np.testing.assert_array_equal(novelselect(X, 40, seed=1, pair_density='sum', average=True).indices, official.indices)
    explicit = novelselect(X, 40, seed=1, preset='official', pair_density='selected', average=False)
    np.testing.assert_array_equal(explicit.indices, paper.indices)
    assert explicit.params['pair_density'] == 'selected' and explicit.params['preset'] == 'official'
    # average only rescales: the official mean is the weighted sum over t
    summed = novelselect(X, 40, seed=1, preset='official', average=False)
    np.testing.assert_array_equal(summed.indices, official.indices)
    np.testing.assert_allclose(summed.per_pick['novelty'][1:], official.per_pick['novelty'][1:] * np.arange(1, 40), rtol=1e-9)
    info = method_info('novelselect')
    assert info.presets['official'] == {'pair_density': 'sum', 'average': True}
    np.testing.assert_array_equal(select('novelselect', X, 40, seed=1, preset='official').indices, official.indices)


def test_float16_storage_and_memory_mapped_input(tmp_path):
    X, _ = clustered(12, n=600, d=32)
    base = novelselect(X, 60, preset='official')
    for kw in ({'values_dtype': 'float16'}, {'rows_dtype': 'float16'}):
        half = novelselect(X, 60, preset='official', **kw)
        assert len(set(half.indices.tolist()) & set(base.indices.tolist())) >= 50, kw  # near-ties may swap, most picks stay
    path = tmp_path / 'X16.npy'
    np.save(path, X.astype(np.float16))
    mm = np.load(path, mmap_mode='r')
    sigma = knn_density(np.asarray(mm, dtype=np.float32), None, 10, power=0.5)
    from_file = novelselect(mm, 60, density=sigma, preset='official')
    np.testing.assert_array_equal(
        from_file.indices, novelselect(np.asarray(mm, dtype=np.float32), 60, density=sigma, preset='official').indices
    )
    assert isinstance(mm, np.memmap) and not mm.flags.writeable  # read in place, never copied as a whole by validation


def test_memory_model_refuses_before_any_work(monkeypatch):
    need = memory_needed(396_000, 4096, 10_000)
    assert need['values'] == 396_000 * 9_999 * 4 + 64 * 396_000 * 4 and need['unit_rows'] == 396_000 * 4096 * 4
    assert memory_needed(396_000, 4096, 10_000, values_dtype='float16')['values'] * 2 == need['values']
    X, _ = clustered(13, n=400)
    sigma = knn_density(X, None, 10, power=0.5)
    import datasel.selectors.novelselect as ns

    called = []
    monkeypatch.setattr(ns, '_unit_rows', lambda *a, **k: called.append(1))  # the first copy of X
    fits = lambda **kw: memory_needed(400, 16, **{'budget': 399, 'index': 'given', **kw})['total'] + 1
    with pytest.raises(InputError, match="memory: NovelSelect on 400 x 16.*values_dtype='float16'"):
        novelselect(X, 399, density=sigma, memory_limit=fits(values_dtype='float16'))
    with pytest.raises(InputError, match="algorithm='official'"):
        novelselect(X, 399, density=sigma, max_bytes=2**16, memory_limit=fits(algorithm='official', max_bytes=2**16))
    with pytest.raises(InputError, match=r'budget=\d+'):
        novelselect(X, 399, density=sigma, memory_limit=fits(budget=100))
    assert memory_needed(400, 16, 399, index='hnsw')['density'] == 400 * 16 * 4 + 12 * 400 * 400
    assert memory_needed(400, 16, 399, index='ivf')['density'] == 512 * 400 + 12 * 400 * 400  # the IVF search holds no copy of X
    assert not called


def test_progress_callback():
    X, _ = clustered(14, n=500)
    seen = []
    novelselect(X, 250, progress=lambda picks, seconds: seen.append(picks))
    assert seen == [100, 200]


def test_bad_inputs(pool):
    with pytest.raises(InputError, match='needs more than 10 rows'):
        novelselect(pool[:10], 3)
    with pytest.raises(InputError, match='needs more than 4 rows'):
        novelselect(pool[:4], 2, neighbors=4)
    with pytest.raises(InputError, match='out of range 1..3000'):
        novelselect(pool, 3001)
    with pytest.raises(InputError, match='budget'):
        novelselect(pool, 0)
    bad = pool.copy()
    bad[11] = np.nan
    with pytest.raises(InputError, match='NaN'):
        novelselect(bad, 5)
    with pytest.raises(InputError, match='quality: expected 3000 values'):
        novelselect(pool, 5, quality=np.ones(2999))
    with pytest.raises(InputError, match='quality: expected values >= 0'):
        novelselect(pool, 5, quality=np.r_[-1.0, np.ones(2999)])
    with pytest.raises(InputError, match='quality: 1 value'):
        novelselect(pool, 5, quality=np.r_[np.nan, np.ones(2999)])
    with pytest.raises(InputError, match='density_power'):
        novelselect(pool, 5, density_power=np.nan)
    with pytest.raises(InputError, match='distance_power'):
        novelselect(pool, 5, distance_power=-1)
    with pytest.raises(InputError, match='neighbors'):
        novelselect(pool, 5, neighbors=0)
    with pytest.raises(InputError, match='first'):
        novelselect(pool, 5, first=-1)
    with pytest.raises(InputError, match='seed'):
        novelselect(pool, 5, seed=-3)
    with pytest.raises(InputError, match='pair_density'):
        novelselect(pool, 5, pair_density='product')
    with pytest.raises(InputError, match='algorithm'):
        novelselect(pool, 5, algorithm='reference')
    with pytest.raises(InputError, match='values_dtype'):
        novelselect(pool, 5, values_dtype='bfloat16')
    with pytest.raises(InputError, match='lookahead'):
        novelselect(pool, 5, lookahead=0)
    with pytest.raises(InputError, match='preset'):
        novelselect(pool, 5, preset='reference')
    with pytest.raises(InputError, match='device'):
        novelselect(pool, 5, device='quantum')
    with pytest.raises(InputError, match='density_pool needs more than 10 rows'):
        novelselect(pool, 5, density_pool=pool[:10])
    with pytest.raises(TypeError):
        novelselect(pool, 5, 10)  # options are keyword-only


def test_memory_model_counts_the_deduplicated_reference(monkeypatch):
    X, _ = clustered(15, n=400, d=16)
    X = np.concatenate([X, X[:100]])  # 100 duplicate rows: the density searches a copy of the 400 distinct ones
    plain = memory_needed(500, 16, 2, index='exact')
    sel = novelselect(X, 2, index='exact')
    assert sel.info['memory_bytes']['density'] == plain['density'] + 400 * 16 * 4
    np.testing.assert_array_equal(sel.per_pick['density'], knn_density(X, None, 10, power=0.5)[sel.indices])
    distinct = novelselect(X[:400], 2, index='exact').info['memory_bytes']['density']
    assert distinct == memory_needed(400, 16, 2, index='exact')['density']  # no duplicates: no copy
    import datasel.geometry.neighbors as nb

    hashed, original = [], nb._distinct_rows  # the density's reference is hashed once, with or without duplicates
    monkeypatch.setattr(nb, '_distinct_rows', lambda R: hashed.append(1) or original(R))
    for rows in (X, X[:400]):
        hashed.clear()
        novelselect(rows, 2, index='exact')
        assert hashed == [1]

    searched = []
    monkeypatch.setattr(nb, '_knn_arrays', lambda *a, **k: searched.append(1))
    limit = plain['total'] + 400 * 16 * 4 - 1  # fits without the copy, not with it
    assert plain['total'] <= limit
    with pytest.raises(InputError, match='memory: NovelSelect on 500 x 16'):
        novelselect(X, 2, index='exact', memory_limit=limit)
    assert not searched  # refused before the density's search
    with pytest.raises(InputError, match='needs more than 10 distinct rows, got 5'):
        novelselect(np.tile(X[:5], (4, 1)), 2)
