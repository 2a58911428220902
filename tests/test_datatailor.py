"""DataTailor: fidelity to the official outputs (golden/dt_*), the informativeness maths, the clustering routes,
degenerate tasks and clusters, and input checks."""
import json
import numpy as np
import pytest
from scipy.cluster.hierarchy import linkage
from sklearn.metrics import adjusted_rand_score

from datasel.core import InputError
from datasel.selectors.datatailor import (cluster_representativeness, cluster_within_tasks, cut_ward, datatailor,
                                datatailor_from_records, exact_ward, fuse_scores, informativeness, qa_rounds,
                                rank_percentiles, representativeness, singular_value_entropy, task_codes,
                                two_level_ward, uniqueness, weighted_ward)


@pytest.fixture(scope='module')
def dt(golden):
    "The golden DataTailor inputs and outputs."
    load = lambda name: np.load(golden / f'dt_{name}.npy')
    return {'X': load('features'), 'tasks': load('task_labels'), 's': load('informativeness'), 'tau': load('tau'),
            'R': load('rounds'), 'labels': load('cluster_labels'), 'sd1': load('cluster_sd1'), 'u': load('uniqueness'),
            'rep': load('representativeness'), 'fused': load('fused_scores'), 'selected': load('selected'),
            'budgets': json.loads((golden / 'dt_task_budgets.json').read_text()),
            'Z': [load(f'linkage_task{t}') for t in range(3)]}


@pytest.fixture(scope='module')
def ref_run(dt):
    return datatailor(dt['X'], dt['tasks'], dt['s'], dt['tau'], dt['R'], budget=0.15, reference=True)


# ---------------------------------------------------------------- golden fidelity
def test_ward_linkage_matches_official(dt):
    for t in range(3):
        Z = exact_ward(dt['X'][dt['tasks'] == t])
        np.testing.assert_array_equal(Z[:, [0, 1, 3]], dt['Z'][t][:, [0, 1, 3]])
        np.testing.assert_allclose(Z[:, 2], dt['Z'][t][:, 2], rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize('method', ['exact', 'auto'])
def test_cluster_labels_match_official(dt, method):
    labels = cluster_within_tasks(dt['X'], dt['tasks'], method=method)
    np.testing.assert_array_equal(labels, dt['labels'])
    assert labels.dtype == np.int64 and labels.min() == 1 and len(np.unique(labels)) == labels.max() == 17


def test_values_match_official(dt):
    np.testing.assert_allclose(cluster_representativeness(dt['X'], dt['labels'], dt['tasks']), dt['sd1'], rtol=1e-6)
    np.testing.assert_allclose(representativeness(dt['X'], dt['labels'], dt['tasks'], dt['s']), dt['rep'], rtol=1e-6)
    np.testing.assert_allclose(uniqueness(dt['X'], dt['labels'], dt['s']), dt['u'], rtol=1e-3)


def test_reference_selection_matches_official(dt, ref_run):
    info = ref_run.info
    np.testing.assert_array_equal(info['labels'], dt['labels'])
    assert info['task_shares'].tolist() == dt['budgets']['final_num_cho']   # float32 arithmetic, bit for bit
    assert info['task_budgets'].tolist() == dt['budgets']['task_budget_int'] == [40, 29, 64]
    np.testing.assert_array_equal(np.sort(ref_run.indices), dt['selected'])
    n_t = np.bincount(dt['tasks'])[dt['tasks']]
    step = 1.0 / (n_t * (dt['R'] + 2))
    diff = np.abs(info['fused_scores'] - dt['fused'])
    assert (diff <= step + 1e-6).all()
    assert (diff == 0).mean() > 0.98   # the rest: near-equal uniqueness values flipped by the reference's float32 cdist
    assert info['fused_scores'].dtype == np.float32


def test_selection_order_and_scores(dt, ref_run):
    tasks = dt['tasks'][ref_run.indices]
    assert (np.diff(tasks) >= 0).all()   # task by task
    for t in range(3):
        sc = ref_run.scores[tasks == t]
        assert (np.diff(sc) <= 0).all()   # descending score within a task
    np.testing.assert_array_equal(ref_run.scores, ref_run.info['fused_scores'][ref_run.indices])


def test_paper_preset_and_options(dt, ref_run):
    paper = datatailor(dt['X'], dt['tasks'], dt['s'], dt['tau'], dt['R'], budget=0.15)
    assert paper.info['task_budgets'].tolist() == [41, 30, 64] and len(paper) == 135
    assert paper.info['params']['variant'] == 'paper'
    # the reference preset is the sum of its options
    mixed = datatailor(dt['X'], dt['tasks'], dt['s'], dt['tau'], dt['R'], variant='reference', budget_rounding='truncate',
                       score_dtype='float32', cluster_method='exact')
    np.testing.assert_array_equal(mixed.indices, ref_run.indices)
    # given labels skip the clustering; index groups work as tasks
    given = datatailor(dt['X'], [range(0, 300), range(300, 520), range(520, 900)], dt['s'], dt['tau'], dt['R'],
                       reference=True, labels=dt['labels'])
    np.testing.assert_array_equal(given.indices, ref_run.indices)
    counted = datatailor(dt['X'], dt['tasks'], dt['s'], dt['tau'], dt['R'], budget=50)
    assert counted.info['task_budgets'].sum() == len(counted) == 50


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
    np.testing.assert_allclose(ent, -(p * np.log(p)).sum()); np.testing.assert_allclose(top, 0.5)


def test_gram_route_equals_svd_route():
    rng = np.random.default_rng(1)
    H = [rng.normal(size=(L, 24)) * rng.uniform(0.01, 5, size=24) for L in (1, 2, 5, 23, 24, 25, 60, 7, 7)]
    H.append(rng.normal(size=(30, 3)) @ rng.normal(size=(3, 24)))   # rank 3
    g, s = informativeness(H), informativeness(H, route='svd')
    np.testing.assert_allclose(g[0], s[0], atol=1e-7)
    np.testing.assert_allclose(g[1], s[1], atol=1e-9)
    ref = np.array([-(lambda p: (p * np.log(p)).sum())(np.linalg.svd(h, compute_uv=False) / np.linalg.svd(h, compute_uv=False).sum())
                    for h in H[:-1]])
    np.testing.assert_allclose(g[0][:-1], ref, atol=1e-9)


def test_padding_and_batching_invariance():
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 50, size=40)
    H = [rng.normal(size=(L, 16)).astype(np.float32) for L in lengths]
    base = informativeness(H)
    padded = np.full((40, 50, 16), 7.0, dtype=np.float32)   # junk past each length is ignored
    for i, h in enumerate(H): padded[i, :len(h)] = h
    for other in (informativeness(padded, lengths=lengths),
                  informativeness([np.vstack([h, np.zeros((13, 16), np.float32)]) for h in H]),
                  informativeness(H, max_bytes=1)):   # one sample per batch
        np.testing.assert_allclose(other[0], base[0], atol=1e-9)
        np.testing.assert_allclose(other[1], base[1], atol=1e-12)


def test_informativeness_accepts_torch_bfloat16():
    torch = pytest.importorskip('torch')
    rng = np.random.default_rng(3)
    H = [torch.tensor(rng.normal(size=(5, 8)), dtype=torch.bfloat16) for _ in range(3)]
    info, tau = informativeness(H)
    expect = informativeness([h.float().numpy() for h in H])
    np.testing.assert_allclose(info, expect[0]); np.testing.assert_allclose(tau, expect[1])


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
    assert len(Z) == cell.max() and np.allclose(Z[-1, 2], exact_ward(X)[-1, 2], rtol=1e-3)   # the top merge is the same two sets
    # 'auto' switches on n^2 d: forced two-level by a tiny cost limit
    auto = cluster_within_tasks(X, np.zeros(1200), max_exact_cost=1.0, micro_clusters=100, seed=1)
    np.testing.assert_array_equal(auto, two)


def test_two_level_warns_when_cells_are_too_coarse():
    noise = np.random.default_rng(8).normal(size=(800, 64)).astype(np.float32)
    exact = cluster_within_tasks(noise, np.zeros(800), method='exact')
    assert exact.max() > 400   # the official cut on unstructured data: mostly singletons
    with pytest.warns(RuntimeWarning, match='too coarse'):
        cluster_within_tasks(noise, np.zeros(800), method='two_level', micro_clusters=100)


def test_labels_global_in_task_order():
    rng = np.random.default_rng(6)
    X = np.vstack([rng.normal(size=(30, 3)), rng.normal(size=(20, 3)) + 50]).astype(np.float32)
    tasks = np.array(['b'] * 30 + ['a'] * 20)
    labels = cluster_within_tasks(X, tasks)
    first_b = labels[tasks == 'b'].min()
    assert labels[tasks == 'a'].min() == 1 and first_b == labels[tasks == 'a'].max() + 1   # task 'a' numbered first
    assert set(np.unique(labels)) == set(range(1, labels.max() + 1))


# ---------------------------------------------------------------- degenerate tasks and clusters
def test_degenerate_clusters_have_defined_values():
    X = np.array([[0.], [1.], [3.], [10.]], dtype=np.float32)
    s = np.array([1., 2., 3., 4.])
    u = uniqueness(X, [0, 0, 0, 1], s)
    np.testing.assert_allclose(u, [11 / 4, 7 / 4, 7 / 4, 4.0], rtol=1e-6)   # 1-member cluster: its mean s
    assert uniqueness(X, [0, 0, 0, 1], s, variant='paper')[3] == 0.0
    np.testing.assert_array_equal(uniqueness(np.ones((3, 2)), [0, 0, 0], s[:3]), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(cluster_representativeness(X, [0, 0, 0, 1], [0, 0, 0, 1]), [1.0, 1.0])
    rep = representativeness(X, [0, 0, 1, 2], [0, 0, 0, 1], s)
    assert np.isfinite(rep).all() and rep[3] == 4.0


def test_degenerate_tasks_give_finite_selection():
    rng = np.random.default_rng(7)
    X = np.vstack([np.ones((6, 4)), rng.normal(size=(10, 4)), [[5, 5, 5, 5]]]).astype(np.float32)
    tasks = [0] * 6 + [1] * 10 + [2]   # all-identical task (one cluster), a normal one, a 1-sample task
    for reference in (False, True):
        sel = datatailor(X, tasks, rng.gamma(2, size=17), rng.uniform(0.3, 1, size=17), rng.integers(1, 4, size=17),
                         budget=0.5, reference=reference)
        for key in ('uniqueness', 'representativeness', 'fused_scores'):
            assert np.isfinite(sel.info[key]).all(), key
        assert sel.info['labels'][:6].tolist() == [1] * 6 and sel.info['labels'][-1] == sel.info['labels'].max()
        assert len(np.unique(sel.indices)) == len(sel)


def test_rank_percentiles_and_fusion():
    np.testing.assert_array_equal(rank_percentiles([2, 1, 2, 0]), [0.5, 0.25, 0.75, 0.0])   # tie: lower row first
    s, u, rep = np.array([3., 1, 2, 5]), np.array([1., 2, 3, 4]), np.array([4., 3, 2, 1])
    R, codes = np.array([2, 1, 1, 3]), np.array([0, 0, 0, 1])
    f = fuse_scores(s, u, rep, R, codes)
    expect = [(2 * 2 / 3 + 0 + 2 / 3) / 4, (0 + 1 / 3 + 1 / 3) / 3, (1 / 3 + 2 / 3 + 0) / 3, 0.0]
    np.testing.assert_allclose(f, expect)
    assert fuse_scores(s, u, rep, R, codes, score_dtype='float32').dtype == np.float32
    np.testing.assert_allclose(fuse_scores(s, u, rep, R, codes, fusion='raw'), (R * s + u + rep) / (R + 2))


def test_tie_break_in_selection():
    X = np.zeros((4, 2), dtype=np.float32)
    sel = datatailor(X, [0, 0, 0, 0], np.ones(4), np.ones(4), budget=2)
    assert sel.indices.tolist() == [3, 2]   # all ranks tie at row order; the highest percentiles win, stable order


# ---------------------------------------------------------------- bad inputs
def test_bad_inputs(dt):
    X, T, s, tau = dt['X'][:20], dt['tasks'][:20], dt['s'][:20], dt['tau'][:20]
    bad_X = X.copy(); bad_X[3, 0] = np.nan
    with pytest.raises(InputError, match='features: 1 row'):
        datatailor(bad_X, T, s, tau)
    with pytest.raises(InputError, match='info: 1 value'):
        datatailor(X, T, np.where(np.arange(20) == 2, np.nan, s), tau)
    with pytest.raises(InputError, match='tau: expected 20 values'):
        datatailor(X, T, s, tau[:19])
    with pytest.raises(InputError, match='tasks: expected 20 values'):
        datatailor(X, T[:19], s, tau)
    with pytest.raises(InputError, match='task 1 is empty'):
        datatailor(X, [range(0, 20), []], s, tau)
    with pytest.raises(InputError, match='task 1 is empty'):
        task_codes([range(0, 20), range(20, 20)], 20)
    for ratio in (0, 1.5, -0.1, 21):
        with pytest.raises(InputError, match='budget'):
            datatailor(X, T, s, tau, budget=ratio)
    with pytest.raises(InputError, match='rounds: expected non-negative integers'):
        datatailor(X, T, s, tau, rounds=np.full(20, -1))
    with pytest.raises(InputError, match='info: expected non-negative'):
        datatailor(X, T, -s, tau)
    with pytest.raises(InputError, match='variant'):
        datatailor(X, T, s, tau, variant='both')
    with pytest.raises(InputError, match='threshold'):
        cluster_within_tasks(X, T, threshold=0)
    with pytest.raises(InputError, match='method'):
        cluster_within_tasks(X, T, method='single')
    with pytest.raises(InputError, match='micro_clusters'):
        two_level_ward(X, micro_clusters=0)


# ---------------------------------------------------------------- from records
def _records(n=24):
    kinds = ['shape', 'color', 'yes_no']
    return [{'id': str(i), 'image': f'{i}.png', 'meta': {'question_kind': kinds[i % 3]},
             'messages': ([{'role': 'system', 'content': 'be brief'}] if i % 4 == 0 else []) +
                         [{'role': 'user', 'content': 'q ' * (1 + i % 5)}, {'role': 'assistant', 'content': 'a'}] * (1 + i % 3)}
            for i in range(n)]


def _states(records):
    return [np.random.default_rng(int(r['id'])).normal(size=(8 + int(r['id']) % 6, 12)) for r in records]


def test_from_records_matches_arrays():
    recs = _records()
    sel = datatailor_from_records(recs, tasks='question_kind', budget=0.25, states_fn=_states, reference=True)
    states = _states(recs)
    info, tau = informativeness(states)
    X = np.stack([h[-1] for h in states]).astype(np.float32)
    rounds = [1 + i % 3 for i in range(24)]
    assert sel.info['rounds'].tolist() == rounds
    direct = datatailor(X, [r['meta']['question_kind'] for r in recs], info, tau, rounds, budget=0.25, reference=True)
    np.testing.assert_array_equal(sel.indices, direct.indices)
    np.testing.assert_array_equal(sel.info['tau'], tau)
    by_function = datatailor_from_records(recs, tasks=lambda r: r['meta']['question_kind'], budget=0.25, states_fn=_states,
                                          reference=True)
    np.testing.assert_array_equal(by_function.indices, sel.indices)
    assert qa_rounds({'conversations': [{'from': 'human'}, {'from': 'gpt'}] * 3}) == 3
    with pytest.raises(InputError, match="no meta field 'task'"):
        datatailor_from_records(recs, tasks='task', states_fn=_states)
    with pytest.raises(InputError, match='states_fn: expected a list of 24'):
        datatailor_from_records(recs, states_fn=lambda r: _states(r)[:-1])
    with pytest.raises(InputError, match='records: got an empty list'):
        datatailor_from_records([], states_fn=_states)


@pytest.mark.slow
def test_from_records_with_a_causal_lm():
    from datasel.models.assets import load_causal_lm
    model, tokenizer = load_causal_lm()
    recs = _records(12)
    sel = datatailor_from_records(recs, model, tokenizer, tasks='question_kind', budget=0.25, progress=False)
    assert len(sel) == 3 and np.isfinite(sel.info['fused_scores']).all()
    assert (sel.info['informativeness'] > 0).all() and ((sel.info['tau'] > 0) & (sel.info['tau'] <= 1)).all()
