"""NovelSelect: the official orders, the incremental algorithm against the literal official step, quality weighting,
the torch path and bad inputs."""
import numpy as np
import pytest

from datasel.core import InputError, Selection
from datasel.geometry.neighbors import knn_density, l2_normalize
from datasel.selectors.novelselect import novelselect, novelty_scores


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

@pytest.mark.parametrize('run, params', [('default', {}), ('density0', {'density_power': 0.0}),
                                         ('distance0', {'distance_power': 0.0})])
def test_official_orders(pool, golden, canonical, run, params):
    gold = np.load(golden / f'novelselect_{run}_order.npy')
    sel = novelselect(pool, 200, **params)
    assert sel.indices[0] == gold[0] == np.random.RandomState(42).randint(0, len(pool))
    np.testing.assert_array_equal(canonical(sel.indices), canonical(gold))


def test_reference_step_reproduces_official_order(pool, golden, canonical):
    gold = np.load(golden / 'novelselect_default_order.npy')
    ref = novelselect(pool, 120, reference=True)
    np.testing.assert_array_equal(canonical(ref.indices), canonical(gold[:120]))


# ---------------------------------------------------------------- incremental == official step

@pytest.mark.parametrize('alpha, beta', [(1.0, 0.5), (0.0, 0.5), (2.0, 0.5), (0.5, 0.25), (1.0, 0.0), (3.0, 0.5)])
def test_incremental_equals_reference(alpha, beta):
    X, _ = clustered(int(alpha * 10 + beta * 100))
    fast = novelselect(X, 60, density_power=beta, distance_power=alpha, neighbors=5, seed=3)
    ref = novelselect(X, 60, density_power=beta, distance_power=alpha, neighbors=5, seed=3, reference=True)
    np.testing.assert_array_equal(fast.indices, ref.indices)
    np.testing.assert_allclose(fast.scores, ref.scores, rtol=1e-5, atol=1e-7)
    assert len(set(fast.indices.tolist())) == 60


def test_each_step_is_the_argmax_of_the_official_scores():
    X, _ = clustered(5, n=300)
    sel = novelselect(X, 40, neighbors=5)
    U, density = l2_normalize(X), knn_density(X, None, 5, power=0.5)
    for t in (1, 2, 10, 39):
        scores = novelty_scores(U, density, sel.indices[:t])
        best = np.flatnonzero(scores == scores.max())
        assert sel.indices[t] == best[0]
        assert sel.scores[t] == pytest.approx(scores.max(), rel=1e-5)


def test_selected_pair_density_and_quality_also_agree():
    X, comp = clustered(6)
    q = np.random.default_rng(0).uniform(0.2, 3, len(X))
    for kw in ({'pair_density': 'selected'}, {'quality': q}, {'quality': q, 'distance_power': 0.0}):
        fast, ref = novelselect(X, 50, **kw), novelselect(X, 50, reference=True, **kw)
        np.testing.assert_array_equal(fast.indices, ref.indices)


def test_torch_path_matches_numpy():
    X, _ = clustered(7)
    base = novelselect(X, 50, device='numpy')
    np.testing.assert_array_equal(novelselect(X, 50, device='cpu').indices, base.indices)
    np.testing.assert_array_equal(novelselect(X, 50, device='cpu', reference=True).indices, base.indices)
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
    np.testing.assert_allclose(weighted.scores[1:], weighted.info['novelty'][1:] * quality[weighted.indices[1:]], rtol=1e-12)
    # a constant quality changes nothing
    np.testing.assert_array_equal(novelselect(X, 60, quality=np.full(600, 0.7)).indices, plain.indices)
    # zero quality is picked only once every positive-quality row is taken
    zero = np.zeros(600); zero[:30] = 1
    picks = novelselect(X, 40, quality=zero, first=0).indices
    assert set(picks[:30].tolist()) == set(range(30))


# ---------------------------------------------------------------- the Selection

def test_selection_record():
    X, _ = clustered(10, n=200)
    sel = novelselect(X, 0.1, first=17)
    assert isinstance(sel, Selection) and len(sel) == 20 and sel.indices[0] == 17
    assert sel.scores[0] == 0 and np.all(sel.scores[1:] > 0)
    assert sel.info['method'] == 'novelselect' and sel.info['algorithm'] == 'incremental'
    assert sel.info['params']['budget'] == 20 and sel.info['params']['first'] == 17
    assert np.all(np.diff(sel.info['elapsed_s']) >= 0) and len(sel.info['elapsed_s']) == 20
    assert len(sel.info['reranked_per_step']) == 20
    assert set(sel.info['timings']) == {'density_s', 'select_s', 'total_s'}
    assert novelselect(X, 1).indices.tolist() == [np.random.RandomState(42).randint(0, 200)]
    everything = novelselect(X, 200)
    assert sorted(everything.indices.tolist()) == list(range(200))
    np.testing.assert_array_equal(novelselect(X, 20, seed=5).indices, novelselect(X, 20, seed=5).indices)


def test_bad_inputs(pool):
    with pytest.raises(InputError, match='needs more than 10 rows'): novelselect(pool[:10], 3)
    with pytest.raises(InputError, match='needs more than 4 rows'): novelselect(pool[:4], 2, neighbors=4)
    with pytest.raises(InputError, match='out of range 1..3000'): novelselect(pool, 3001)
    with pytest.raises(InputError, match='budget'): novelselect(pool, 0)
    bad = pool.copy(); bad[11] = np.nan
    with pytest.raises(InputError, match='NaN'): novelselect(bad, 5)
    with pytest.raises(InputError, match='quality: expected 3000 values'): novelselect(pool, 5, quality=np.ones(2999))
    with pytest.raises(InputError, match='quality: expected values >= 0'): novelselect(pool, 5, quality=np.r_[-1.0, np.ones(2999)])
    with pytest.raises(InputError, match='quality: 1 value'): novelselect(pool, 5, quality=np.r_[np.nan, np.ones(2999)])
    with pytest.raises(InputError, match='density_power'): novelselect(pool, 5, density_power=np.nan)
    with pytest.raises(InputError, match='distance_power'): novelselect(pool, 5, distance_power=-1)
    with pytest.raises(InputError, match='neighbors'): novelselect(pool, 5, neighbors=0)
    with pytest.raises(InputError, match='first'): novelselect(pool, 5, first=-1)
    with pytest.raises(InputError, match='seed'): novelselect(pool, 5, seed=-3)
    with pytest.raises(InputError, match='pair_density'): novelselect(pool, 5, pair_density='product')
    with pytest.raises(InputError, match='device'): novelselect(pool, 5, device='quantum')
