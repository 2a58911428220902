"""DataTailor: fidelity to the official outputs (golden/dt_*), the informativeness maths, the clustering routes,
degenerate tasks and clusters, and input checks."""

import json
import numpy as np
import pytest
from scipy.cluster.hierarchy import linkage
from sklearn.metrics import adjusted_rand_score

import datasel
from datasel.core import InputError
from datasel.registry import REGISTRY
from datasel.selectors.datatailor import (
    cluster_representativeness,
    cluster_within_tasks,
    cut_ward,
    datatailor,
    exact_ward,
    fuse_scores,
    informativeness,
    last_token_features,
    rank_percentiles,
    representativeness,
    singular_value_entropy,
    task_codes,
    two_level_ward,
    uniqueness,
    weighted_ward,
)


@pytest.fixture(scope='module')
def dt(golden):
    "The golden DataTailor inputs and outputs."
    load = lambda name: np.load(golden / f'dt_{name}.npy')
    return {
        'X': load('features'),
        'tasks': load('task_labels'),
        's': load('informativeness'),
        'tau': load('tau'),
        'R': load('rounds'),
        'labels': load('cluster_labels'),
        'sd1': load('cluster_sd1'),
        'u': load('uniqueness'),
        'rep': load('representativeness'),
        'fused': load('fused_scores'),
        'selected': load('selected'),
        'budgets': json.loads((golden / 'dt_task_budgets.json').read_text()),
        'Z': [load(f'linkage_task{t}') for t in range(3)],
    }


def inputs(dt, **kw):
    "The golden per-sample inputs as datatailor keywords."
    return {'tasks': dt['tasks'], 'informativeness': dt['s'], 'tau': dt['tau'], 'rounds': dt['R'], **kw}


@pytest.fixture(scope='module')
def ref_run(dt):
    return datatailor(dt['X'], 0.15, preset='official', **inputs(dt))


# ---------------------------------------------------------------- golden fidelity
def test_ward_linkage_matches_official(dt):
    for t in range(3):
        Z = exact_ward(dt['X'][dt['tasks'] == t])
        np.testing.assert_array_equal(Z[:, [0, 1, 3]], dt['Z'][t][:, [0, 1, 3]])
        np.testing.assert_allclose(Z[:, 2], dt['Z'][t][:, 2], rtol=1e-12, atol=1e-10)
        offset = dt['labels'][dt['tasks'] < t].max() if t else 0
        np.testing.assert_array_equal(cut_ward(Z) + offset, dt['labels'][dt['tasks'] == t])


@pytest.mark.parametrize('method', ['exact', 'auto'])
def test_cluster_labels_match_official(dt, method):
    labels = cluster_within_tasks(dt['X'], dt['tasks'], method=method)
    np.testing.assert_array_equal(labels, dt['labels'])
    assert labels.dtype == np.int64 and labels.min() == 1 and len(np.unique(labels)) == labels.max() == 17


def test_values_match_official(dt):
    np.testing.assert_allclose(cluster_representativeness(dt['X'], dt['labels'], dt['tasks']), dt['sd1'], rtol=1e-6)
    np.testing.assert_allclose(representativeness(dt['X'], dt['labels'], dt['tasks'], dt['s'], variant='official'), dt['rep'], rtol=1e-6)
    np.testing.assert_allclose(uniqueness(dt['X'], dt['labels'], dt['s'], variant='official'), dt['u'], rtol=1e-3)


def test_reference_selection_matches_official(dt, ref_run):
    info = ref_run.info
    np.testing.assert_array_equal(info['labels'], dt['labels'])
    assert info['task_shares'].tolist() == dt['budgets']['final_num_cho']  # float32 arithmetic, bit for bit
    assert info['task_budgets'].tolist() == dt['budgets']['task_budget_int'] == [40, 29, 64]
    np.testing.assert_array_equal(np.sort(ref_run.indices), dt['selected'])
    assert (ref_run.params['budget'], len(ref_run), ref_run.shortfall) == (135, 133, 2)  # truncation, stated
    assert 'truncate' in ref_run.shortfall_reason and ref_run.params['preset'] == 'official'
    n_t = np.bincount(dt['tasks'])[dt['tasks']]
    step = 1.0 / (n_t * (dt['R'] + 2))
    diff = np.abs(info['fused_scores'] - dt['fused'])
    assert (diff <= step + 1e-6).all()
    assert (diff == 0).mean() > 0.98  # the rest: near-equal uniqueness values flipped by the reference's float32 cdist
    assert info['fused_scores'].dtype == np.float32


def test_selection_order_and_scores(dt, ref_run):
    tasks = dt['tasks'][ref_run.indices]
    assert (np.diff(tasks) >= 0).all()  # task by task
    for t in range(3):
        sc = ref_run.scores[tasks == t]
        assert (np.diff(sc) <= 0).all()  # descending score within a task
    np.testing.assert_array_equal(ref_run.scores, ref_run.info['fused_scores'][ref_run.indices])
    for key in ('uniqueness', 'representativeness'):
        np.testing.assert_array_equal(ref_run.per_pick[key], ref_run.info[key][ref_run.indices])
    np.testing.assert_array_equal(ref_run.per_pick['informativeness'], dt['s'][ref_run.indices])
    np.testing.assert_array_equal(ref_run.per_pick['cluster'], dt['labels'][ref_run.indices])
    np.testing.assert_array_equal(ref_run.per_pick['task'], dt['tasks'][ref_run.indices])


def test_paper_preset_and_options(dt, ref_run):
    paper = datatailor(dt['X'], 0.15, **inputs(dt))
    assert paper.info['task_budgets'].tolist() == [41, 30, 64] and len(paper) == 135 and paper.shortfall == 0
    assert paper.params['variant'] == 'paper' and paper.params['preset'] == 'paper'
    # the official preset is the sum of its options
    mixed = datatailor(
        dt['X'], 0.15, variant='official', budget_rounding='truncate', score_dtype='float32', cluster_method='exact', **inputs(dt)
    )
    np.testing.assert_array_equal(mixed.indices, ref_run.indices)
    # an explicit option beats the preset
    one = datatailor(dt['X'], 0.15, preset='official', variant='paper', **inputs(dt))
    assert one.params['variant'] == 'paper' and one.params['budget_rounding'] == 'truncate'
    assert not np.array_equal(np.sort(one.indices), np.sort(ref_run.indices))
    # given labels skip the clustering; index groups work as tasks
    given = datatailor(
        dt['X'], 0.15, preset='official', labels=dt['labels'], **inputs(dt, tasks=[range(0, 300), range(300, 520), range(520, 900)])
    )
    np.testing.assert_array_equal(given.indices, ref_run.indices)
    counted = datatailor(dt['X'], 50, **inputs(dt))
    assert counted.info['task_budgets'].sum() == len(counted) == 50


def test_registered_with_inputs(dt, ref_run):
    info = REGISTRY['datatailor']
    assert info.function is datatailor and set(info.required) == {'tasks', 'informativeness', 'tau'}
    assert info.inputs == {'tasks': 'labels', 'informativeness': 'scores', 'tau': 'scores', 'rounds': 'rounds'}
    assert info.presets['official']['variant'] == 'official' and info.presets['paper']['cluster_method'] == 'auto'
    via = datasel.select('datatailor', dt['X'], 0.15, preset='official', **inputs(dt))
    np.testing.assert_array_equal(via.indices, ref_run.indices)
    with pytest.raises(InputError, match='tau'):
        datasel.select('datatailor', dt['X'], 0.15, tasks=dt['tasks'], informativeness=dt['s'])


def test_memory_mapped_float16(dt, tmp_path):
    mm = np.lib.format.open_memmap(tmp_path / 'X.npy', mode='w+', dtype=np.float16, shape=dt['X'].shape)
    mm[:] = dt['X']
    mm.flush()
    del mm
    X16 = np.load(tmp_path / 'X.npy', mmap_mode='r')
    on_disk = datatailor(X16, 0.15, **inputs(dt))
    np.testing.assert_array_equal(on_disk.indices, datatailor(np.asarray(X16), 0.15, **inputs(dt)).indices)
    assert np.isfinite(on_disk.scores).all()


# ---------------------------------------------------------------- informativeness
def test_informativeness_known_values():
    rng = np.random.default_rng(0)
    rank1 = np.outer(rng.normal(size=9), rng.normal(size=6))
    info, tau = informativeness([rank1, rank1 * 3])
    np.testing.assert_allclose(info, 0, atol=1e-12)
    np.testing.assert_allclose(tau, 1, atol=1e-12)
    for m in (1, 2, 5, 17):
        Q = np.linalg.qr(rng.normal(size=(m, m)))[0]
        info, tau = informativeness([Q])
        np.testing.assert_allclose(info, np.log(m), atol=1e-10)
        np.testing.assert_allclose(tau, 1 / m, atol=1e-10)
    ent, top = singular_value_entropy(np.array([[2.0, 1.0, 1.0, 0.0]]))
    p = np.array([0.5, 0.25, 0.25])
    np.testing.assert_allclose(ent, -(p * np.log(p)).sum())
    np.testing.assert_allclose(top, 0.5)


def test_gram_route_equals_svd_route():
    rng = np.random.default_rng(1)
    H = [rng.normal(size=(L, 24)) * rng.uniform(0.01, 5, size=24) for L in (1, 2, 5, 23, 24, 25, 60, 7, 7)]
    H.append(rng.normal(size=(30, 3)) @ rng.normal(size=(3, 24)))  # rank 3
    g, s = informativeness(H), informativeness(H, route='svd')
    np.testing.assert_allclose(g[0], s[0], atol=1e-7)
    np.testing.assert_allclose(g[1], s[1], atol=1e-9)
    ref = np.array(
        [-(lambda p: (p * np.log(p)).sum())(np.linalg.svd(h, compute_uv=False) / np.linalg.svd(h, compute_uv=False).sum()) for h in H[:-1]]
    )
    np.testing.assert_allclose(g[0][:-1], ref, atol=1e-9)


def test_padding_and_batching_invariance():
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 50, size=40)
    H = [rng.normal(size=(L, 16)).astype(np.float32) for L in lengths]
    base = informativeness(H)
    padded = np.full((40, 50, 16), 7.0, dtype=np.float32)  # junk past each length is ignored
    for i, h in enumerate(H):
        padded[i, : len(h)] = h
    for other in (
        informativeness(padded, lengths=lengths),
        informativeness([np.vstack([h, np.zeros((13, 16), np.float32)]) for h in H]),
        informativeness(H, max_bytes=1),
    ):  # one sample per batch
        np.testing.assert_allclose(other[0], base[0], atol=1e-9)
        np.testing.assert_allclose(other[1], base[1], atol=1e-12)


def test_informativeness_accepts_torch_bfloat16():
    torch = pytest.importorskip('torch')
    rng = np.random.default_rng(3)
    H = [torch.tensor(rng.normal(size=(5, 8)), dtype=torch.bfloat16) for _ in range(3)]
    info, tau = informativeness(H)
    expect = informativeness([h.float().numpy() for h in H])
    np.testing.assert_allclose(info, expect[0])
    np.testing.assert_allclose(tau, expect[1])


def test_informativeness_bad_inputs():
    with pytest.raises(InputError, match=r'token_states\[1\]: contains NaN'):
        informativeness([np.ones((2, 3)), np.array([[np.nan, 1, 1]])])
    with pytest.raises(InputError, match=r'token_states\[1\]: expected 3 columns'):
        informativeness([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(InputError, match='has no token rows'):
        informativeness([np.ones((0, 3))])
    with pytest.raises(InputError, match='empty list'):
        informativeness([])
    with pytest.raises(InputError, match='all token states are zero'):
        informativeness([np.eye(3), np.zeros((2, 3))])
    with pytest.raises(InputError, match=r'lengths: expected integers in 1..4'):
        informativeness(np.ones((2, 4, 3)), lengths=[0, 2])
    with pytest.raises(InputError, match='lengths: expected 2 values'):
        informativeness(np.ones((2, 4, 3)), lengths=[1, 2, 3])
    with pytest.raises(InputError, match='only for a padded 3-D array'):
        informativeness([np.ones((2, 3))], lengths=[2])
    with pytest.raises(InputError, match='route'):
        informativeness([np.ones((2, 3))], route='qr')


# ---------------------------------------------------------------- clustering
def test_weighted_ward_is_ward():
    rng = np.random.default_rng(4)
    P = rng.normal(size=(80, 6))
    Z, Zs = weighted_ward(P), linkage(P, method='ward')
    np.testing.assert_array_equal(Z[:, [0, 1, 3]], Zs[:, [0, 1, 3]])
    np.testing.assert_allclose(Z[:, 2], Zs[:, 2], rtol=1e-10)
    w = rng.integers(1, 5, size=8)
    Zr = linkage(np.repeat(P[:8], w, axis=0), method='ward')
    np.testing.assert_allclose(weighted_ward(P[:8], w)[:, 2], Zr[Zr[:, 2] > 1e-12, 2], rtol=1e-10)


def test_two_level_agrees_with_exact_on_separated_data():
    rng = np.random.default_rng(5)
    centres = rng.normal(scale=10, size=(8, 12))
    truth = np.repeat(np.arange(8), 150)
    X = (centres[truth] + rng.normal(size=(1200, 12))).astype(np.float32)
    exact = cluster_within_tasks(X, np.zeros(1200), method='exact')
    two = cluster_within_tasks(X, np.zeros(1200), method='two_level', micro_clusters=100, seed=1)
    assert adjusted_rand_score(exact, truth) == 1.0
    assert adjusted_rand_score(two, exact) == 1.0
    np.testing.assert_array_equal(two, cluster_within_tasks(X, np.zeros(1200), method='two_level', micro_clusters=100, seed=1))
    Z, cell = two_level_ward(X, micro_clusters=100)
    assert len(Z) == cell.max() and np.allclose(Z[-1, 2], exact_ward(X)[-1, 2], rtol=1e-3)  # the top merge is the same two sets
    # 'auto' switches on n^2 d: forced two-level by a tiny cost limit
    auto = cluster_within_tasks(X, np.zeros(1200), max_exact_cost=1.0, micro_clusters=100, seed=1)
    np.testing.assert_array_equal(auto, two)


def test_two_level_warns_when_cells_are_too_coarse():
    noise = np.random.default_rng(8).normal(size=(800, 64)).astype(np.float32)
    exact = cluster_within_tasks(noise, np.zeros(800), method='exact')
    assert exact.max() > 400  # the official cut on unstructured data: mostly singletons
    with pytest.warns(RuntimeWarning, match='too coarse'):
        cluster_within_tasks(noise, np.zeros(800), method='two_level', micro_clusters=100)


def test_labels_global_in_task_order():
    rng = np.random.default_rng(6)
    X = np.vstack([rng.normal(size=(30, 3)), rng.normal(size=(20, 3)) + 50]).astype(np.float32)
    tasks = np.array(['b'] * 30 + ['a'] * 20)
    labels = cluster_within_tasks(X, tasks)
    first_b = labels[tasks == 'b'].min()
    assert labels[tasks == 'a'].min() == 1 and first_b == labels[tasks == 'a'].max() + 1  # task 'a' numbered first
    assert set(np.unique(labels)) == set(range(1, labels.max() + 1))


# ---------------------------------------------------------------- degenerate tasks and clusters
def test_degenerate_clusters_have_defined_values():
    X = np.array([[0.0], [1.0], [3.0], [10.0]], dtype=np.float32)
    s = np.array([1.0, 2.0, 3.0, 4.0])
    u = uniqueness(X, [0, 0, 0, 1], s, variant='official')
    np.testing.assert_allclose(u, [11 / 4, 7 / 4, 7 / 4, 4.0], rtol=1e-6)  # 1-member cluster: its mean s
    assert uniqueness(X, [0, 0, 0, 1], s)[3] == 0.0
    np.testing.assert_array_equal(uniqueness(np.ones((3, 2)), [0, 0, 0], s[:3], variant='official'), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(cluster_representativeness(X, [0, 0, 0, 1], [0, 0, 0, 1]), [1.0, 1.0])
    rep = representativeness(X, [0, 0, 1, 2], [0, 0, 0, 1], s, variant='official')
    assert np.isfinite(rep).all() and rep[3] == 4.0


def test_degenerate_tasks_give_finite_selection():
    rng = np.random.default_rng(7)
    X = np.vstack([np.ones((6, 4)), rng.normal(size=(10, 4)), [[5, 5, 5, 5]]]).astype(np.float32)
    tasks = [0] * 6 + [1] * 10 + [2]  # all-identical task (one cluster), a normal one, a 1-sample task
    for preset in ('paper', 'official'):
        sel = datatailor(
            X,
            0.5,
            tasks=tasks,
            informativeness=rng.gamma(2, size=17),
            tau=rng.uniform(0.3, 1, size=17),
            rounds=rng.integers(1, 4, size=17),
            preset=preset,
        )
        for key in ('uniqueness', 'representativeness', 'fused_scores'):
            assert np.isfinite(sel.info[key]).all(), key
        assert sel.info['labels'][:6].tolist() == [1] * 6 and sel.info['labels'][-1] == sel.info['labels'].max()
        assert len(np.unique(sel.indices)) == len(sel)


def test_rank_percentiles_and_fusion():
    np.testing.assert_array_equal(rank_percentiles([2, 1, 2, 0]), [0.5, 0.25, 0.75, 0.0])  # tie: lower row first
    s, u, rep = np.array([3.0, 1, 2, 5]), np.array([1.0, 2, 3, 4]), np.array([4.0, 3, 2, 1])
    R, codes = np.array([2, 1, 1, 3]), np.array([0, 0, 0, 1])
    f = fuse_scores(s, u, rep, R, codes)
    expect = [(2 * 2 / 3 + 0 + 2 / 3) / 4, (0 + 1 / 3 + 1 / 3) / 3, (1 / 3 + 2 / 3 + 0) / 3, 0.0]
    np.testing.assert_allclose(f, expect)
    assert fuse_scores(s, u, rep, R, codes, score_dtype='float32').dtype == np.float32
    np.testing.assert_allclose(fuse_scores(s, u, rep, R, codes, fusion='raw'), (R * s + u + rep) / (R + 2))


def test_tie_break_in_selection():
    X = np.zeros((4, 2), dtype=np.float32)
    sel = datatailor(X, 2, tasks=[0, 0, 0, 0], informativeness=np.ones(4), tau=np.ones(4))
    assert sel.indices.tolist() == [3, 2]  # all ranks tie at row order; the highest percentiles win, stable order


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    'change, match',
    [
        (dict(X='nan'), 'X: 1 row'),
        (dict(informativeness='nan'), 'informativeness: 1 value'),
        (dict(informativeness='negative'), 'informativeness: expected non-negative'),
        (dict(tau='short'), 'tau: expected 20 values'),
        (dict(tasks='short'), 'tasks: expected 20 values'),
        (dict(tasks=[range(0, 20), []]), 'task 1 is empty'),
        (dict(budget=0), 'budget'),
        (dict(budget=1.5), 'budget'),
        (dict(budget=-0.1), 'budget'),
        (dict(budget=21), 'budget'),
        (dict(rounds=np.full(20, -1)), 'rounds: expected non-negative integers'),
        (dict(variant='reference'), 'variant'),
        (dict(budget_rounding='floor'), 'budget_rounding'),
        (dict(cluster_method='single'), 'cluster_method'),
        (dict(threshold=0), 'threshold'),
        (dict(preset='reference'), 'preset'),
    ],
)
def test_bad_inputs(dt, change, match):
    X, args = dt['X'][:20].copy(), {'budget': 5, 'tasks': dt['tasks'][:20], 'informativeness': dt['s'][:20].copy(), 'tau': dt['tau'][:20]}
    for key, value in change.items():
        if isinstance(value, str) and value == 'nan' and key == 'X':
            X[3, 0] = np.nan
        elif isinstance(value, str) and value == 'nan':
            args[key] = np.where(np.arange(20) == 2, np.nan, args[key])
        elif isinstance(value, str) and value == 'negative':
            args[key] = -args[key]
        elif isinstance(value, str) and value == 'short':
            args[key] = args[key][:19]
        else:
            args[key] = value
    with pytest.raises(InputError, match=match):
        datatailor(X, args.pop('budget'), **args)


def test_bad_helper_inputs(dt):
    X, T = dt['X'][:20], dt['tasks'][:20]
    with pytest.raises(InputError, match='task 1 is empty'):
        task_codes([range(0, 20), range(20, 20)], 20)
    with pytest.raises(InputError, match='threshold'):
        cluster_within_tasks(X, T, threshold=0)
    with pytest.raises(InputError, match='method'):
        cluster_within_tasks(X, T, method='single')
    with pytest.raises(InputError, match='micro_clusters'):
        two_level_ward(X, micro_clusters=0)
    with pytest.raises(InputError, match='variant'):
        uniqueness(X, np.zeros(20, int), dt['s'][:20], variant='reference')


def test_last_token_features():
    rng = np.random.default_rng(9)
    H = [rng.normal(size=(L, 5)) for L in (1, 4, 7)]
    np.testing.assert_array_equal(last_token_features(H), np.stack([h[-1] for h in H]).astype(np.float32))
    padded = np.zeros((3, 7, 5))
    for i, h in enumerate(H):
        padded[i, : len(h)] = h
    np.testing.assert_array_equal(last_token_features(padded, lengths=[1, 4, 7]), last_token_features(H))
