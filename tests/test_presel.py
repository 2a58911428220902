"""PreSel: fidelity to the official code's outputs (tests/golden) through preset='official', the paper allocation, the
cases the official code mishandles, the contract (budget, presets, registry, memory-mapped input), and bad inputs."""

import json
import tracemalloc
import numpy as np
import pytest

import datasel
from datasel.core import InputError, Selection
from datasel.registry import REGISTRY
from datasel.selectors.presel import (
    instruction_relevance,
    neighbor_centrality,
    presel,
    presel_cluster_split,
    presel_task_split,
    task_weights,
)


@pytest.fixture(scope='module')
def gold(golden):
    "The official PreSel inputs and outputs (round 3, N = 300)."
    irs = json.loads((golden / 'presel_task_irs.json').read_text())
    return {
        'pool': np.load(golden / 'pool.npy'),
        'tasks': np.load(golden / 'presel_task_labels.npy'),
        'labels': np.load(golden / 'presel_kmeans_labels.npy'),
        'reference': np.load(golden / 'presel_reference_set.npy'),
        'nc': np.load(golden / 'presel_nc.npy'),
        'irs': irs['task_mean_irs'],
        'tau': irs['tau'],
        'selected': json.loads((golden / 'presel_selected.json').read_text()),
        'budgets': json.loads((golden / 'presel_task_budgets.json').read_text()),
    }


def canonical_rows(X):
    "Map every row index to the smallest index of its identical-row group (the golden README's rule)."
    _, first, group = np.unique(X, axis=0, return_index=True, return_inverse=True)
    return first[group.reshape(-1)]


def run_gold(gold, **kw):
    return presel(
        gold['pool'],
        300,
        tasks=gold['tasks'],
        task_weights=task_weights(gold['irs']),
        reference_set=gold['reference'],
        labels=gold['labels'],
        **kw,
    )


def picks_of_task(sel, t):
    return sel.indices[sel.per_pick['task'] == t]


# ---------------------------------------------------------------- fidelity


def test_task_weights_match_official(gold):
    w = task_weights(gold['irs'])
    np.testing.assert_allclose(w, gold['budgets']['rounds']['3']['softmax_weights'], rtol=0, atol=1e-12)
    np.testing.assert_allclose(task_weights(gold['irs'], tau=gold['tau']), w, rtol=0, atol=1e-15)


@pytest.mark.parametrize('rnd', ['2', '3', '4'])
def test_task_budget_rules_match_official(gold, rnd):
    r = gold['budgets']['rounds'][rnd]
    w = task_weights(gold['irs'])
    roomy = np.full(5, 10_000)
    assert presel_task_split(w, r['N'], roomy, 'floor').tolist() == r['budget_inline_kmeans_clust_main']
    # the paper rule (capped largest remainder) is the official Vision-FLAN `allocate_samples` when no cap binds
    assert presel_task_split(w, r['N'], roomy, 'capped').tolist() == r['budget_allocate_samples']


def test_official_preset_reproduces_official_selection(gold):
    sel = run_gold(gold, preset='official')
    canon = canonical_rows(gold['pool'])
    for t, rows in gold['selected']['selected_per_task'].items():
        ours = picks_of_task(sel, int(t))
        assert len(ours) == len(rows)
        assert set(canon[ours].tolist()) == set(canon[rows].tolist()), f'task {t}'
    assert sel.info['task_budgets'].tolist() == gold['selected']['task_budget']
    assert [len(sel.info['cluster_budgets'][t]) for t in range(5)] == [gold['selected']['n_clusters'][str(t)] for t in range(5)]
    assert set(canon[sel.indices].tolist()) == set(canon[gold['selected']['selected_all_sorted']].tolist())
    assert sel.shortfall == 0 and len(sel.info['top_up']) == 0
    assert sel.params['task_split'] == 'floor' and sel.params['cluster_split'] == 'round_repair' and sel.params['preset'] == 'official'


def test_official_preset_neighbor_centrality(gold):
    sel = run_gold(gold, preset='official')
    nc = sel.info['centrality']
    ref = np.isnan(gold['nc'])
    assert np.array_equal(np.isnan(nc), ref)
    assert np.array_equal(np.flatnonzero(ref), gold['reference'])
    np.testing.assert_allclose(nc[~ref], gold['nc'][~ref], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(sel.scores, nc[sel.indices])
    np.testing.assert_array_equal(sel.per_pick['centrality'], nc[sel.indices])


def test_selection_is_the_new_picks_and_training_set_adds_reference(gold):
    sel = run_gold(gold, preset='official')
    assert isinstance(sel, Selection) and sel.method == 'presel'
    assert len(sel) == 300 == sel.params['budget']
    assert not np.isin(sel.indices, gold['reference']).any()
    assert sel.info['reference_set'].tolist() == gold['reference'].tolist()
    train = sel.training_set()
    assert train[:300].tolist() == sel.indices.tolist() and train[300:].tolist() == gold['reference'].tolist()
    assert len(np.unique(train)) == len(train) == 448


def test_paper_preset_on_golden_inputs(gold):
    sel = run_gold(gold)
    assert sel.params['preset'] == 'paper' and sel.params['task_split'] == 'capped'
    assert sel.info['task_budgets'].tolist() == gold['budgets']['rounds']['3']['budget_allocate_samples']
    assert len(sel) == 300 and sel.shortfall == 0
    assert not np.isin(sel.indices, gold['reference']).any()
    # every cluster keeps its highest-NC available members
    nc, lab, tasks = sel.info['centrality'], sel.info['labels'], gold['tasks']
    chosen = sel.mask(len(nc))
    for t in range(5):
        for c in range(len(sel.info['cluster_budgets'][t])):
            members = np.flatnonzero((tasks == t) & (lab == c) & np.isfinite(nc))
            assert chosen[members].sum() == sel.info['cluster_budgets'][t][c]
            if chosen[members].any() and (~chosen[members]).any():
                assert nc[members][chosen[members]].min() >= nc[members][~chosen[members]].max()
    assert (sel.per_pick['cluster'] == lab[sel.indices]).all() and (sel.per_pick['task'] == tasks[sel.indices]).all()


# ---------------------------------------------------------------- the contract


def blobs(n_per=40, n_blobs=6, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_blobs, d)) * 4
    comp = np.repeat(np.arange(n_blobs), n_per)
    return (centres[comp] + rng.normal(size=(len(comp), d))).astype(np.float32), comp


def test_explicit_option_beats_preset():
    X, comp = blobs()
    tasks = np.where(np.arange(len(X)) < 20, 'rare', 'common')
    w = {'rare': 0.9, 'common': 0.1}
    mixed = presel(X, 50, tasks=tasks, task_weights=w, clusters=2, preset='official', task_split='capped')
    assert mixed.params['task_split'] == 'capped' and mixed.params['cluster_split'] == 'round_repair'
    assert mixed.info['task_budgets'].tolist() == presel(X, 50, tasks=tasks, task_weights=w, clusters=2).info['task_budgets'].tolist()
    assert presel.presets['official'] == {'task_split': 'floor', 'cluster_split': 'round_repair', 'top_up': 'random'}


def test_registered_with_inputs():
    info = REGISTRY['presel']
    assert info.function is presel and set(info.required) == {'tasks', 'task_weights'}
    assert info.inputs == {'tasks': 'labels', 'task_weights': 'task_weights'}
    assert info.presets['official']['task_split'] == 'floor' and info.summary.startswith('PreSel')
    X, comp = blobs()
    via = datasel.select('presel', X, 12, tasks=comp % 2, task_weights=[0.5, 0.5], clusters=2)
    assert np.array_equal(via.indices, presel(X, 12, tasks=comp % 2, task_weights=[0.5, 0.5], clusters=2).indices)
    with pytest.raises(InputError, match='task_weights'):
        datasel.select('presel', X, 12, tasks=comp % 2)


def test_fraction_budget_and_determinism():
    X, comp = blobs(n_per=110, n_blobs=4)  # one task of 440 -> 4 clusters
    tasks = np.zeros(len(X), int)
    a = presel(X, 40, tasks=tasks, task_weights=[1.0], seed=3)
    assert len(a.info['cluster_budgets'][0]) == 4 and a.params['clusters'] == [4]
    assert np.array_equal(a.indices, presel(X, 40, tasks=tasks, task_weights=[1.0], seed=3).indices)
    # k-means finds the four blobs, so each gets 10 picks
    assert sorted(np.bincount(comp[a.indices]).tolist()) == [10, 10, 10, 10]
    assert len(presel(X, 0.1, tasks=tasks, task_weights=[1.0])) == 44
    capped = presel(X[:5], 2, tasks=np.zeros(5, int), task_weights=[1.0], clusters=50)
    assert len(capped.info['cluster_budgets'][0]) == 5


def test_memory_mapped_float16_is_not_loaded_whole(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 8_000, 256
    X = np.lib.format.open_memmap(tmp_path / 'X.npy', mode='w+', dtype=np.float16, shape=(n, d))
    X[:] = rng.normal(size=(n, d)).astype(np.float16)
    X.flush()
    del X
    mm = np.load(tmp_path / 'X.npy', mmap_mode='r')
    tasks = np.repeat(np.arange(8), n // 8)
    kw = dict(tasks=tasks, task_weights=np.full(8, 1 / 8), labels=np.arange(n) // 100)  # given clusters: no k-means memory
    tracemalloc.start()
    sel = presel(mm, 80, **kw)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(sel) == 80
    assert peak < 1.0 * mm.nbytes, peak / mm.nbytes  # one task in float32 is 1/8 x 2 = 0.25 X; float32 X would be 2 X
    assert np.array_equal(sel.indices, presel(np.asarray(mm), 80, **kw).indices)


# ---------------------------------------------------------------- cases the official code mishandles


def test_one_member_clusters_are_defined():
    X, comp = blobs()
    labels = comp.copy()
    labels[[0, 50, 100]] = [10, 11, 12]  # three singleton clusters
    tasks = np.zeros(len(X), int)
    for preset in ('paper', 'official'):
        sel = presel(X, 60, tasks=tasks, task_weights=[1.0], labels=labels, preset=preset)
        nc = sel.info['centrality']
        assert np.isfinite(nc).all() and (nc[[0, 50, 100]] == 0).all() and len(sel) == 60
    assert neighbor_centrality(X[:1]).tolist() == [0.0]
    # a singleton cluster that earns a pick keeps its member: shares 5/6*5 -> 4 and 1/6*5 -> 1 under both rules
    small_labels = np.array([0, 0, 0, 0, 0, 1])
    for preset in ('paper', 'official'):
        sel = presel(X[:6], 5, tasks=np.zeros(6, int), task_weights=[1.0], labels=small_labels, preset=preset)
        assert sel.info['cluster_budgets'][0].tolist() == [4, 1]
        assert 5 in sel.indices.tolist() and sel.info['centrality'][5] == 0.0


def test_task_budget_larger_than_task():
    X, comp = blobs()
    tasks = np.where(np.arange(len(X)) < 20, 'rare', 'common')
    ref = np.array([0, 1, 100, 101])
    kw = dict(tasks=tasks, task_weights={'rare': 0.9, 'common': 0.1}, reference_set=ref, clusters=2, seed=0)
    paper = presel(X, 50, **kw)
    assert paper.info['task_budgets'].tolist() == [32, 18]  # rare capped at its 18 available, rest to common
    assert len(paper.info['top_up']) == 0 and len(paper) == 50
    official = presel(X, 50, preset='official', **kw)
    assert official.info['task_budgets'].tolist() == [5, 45]  # floor(0.1*50)=5, remainder to the top task
    top = official.info['top_up']
    assert len(top) == 27 and len(official) == 50 and official.shortfall == 0
    assert not np.isin(top, ref).any()
    assert official.indices[-27:].tolist() == top.tolist()
    assert len(np.unique(official.indices)) == 50
    assert (tasks[top] == 'common').all()  # rare is exhausted, so the top-up comes from common
    assert np.array_equal(presel(X, 50, preset='official', **kw).indices, official.indices)
    other = presel(X, 50, preset='official', **dict(kw, seed=1))
    assert not np.array_equal(np.sort(other.info['top_up']), np.sort(top))
    central = presel(X, 50, preset='official', top_up='central', **kw)
    nc = central.info['centrality']
    rest = np.setdiff1d(np.flatnonzero(np.isfinite(nc)), central.indices)
    assert nc[central.info['top_up']].min() >= nc[rest].max()  # the most central of what was left
    none = presel(X, 50, preset='official', top_up='none', **kw)
    assert len(none) == 23 and none.shortfall == 27 and 'top_up' in none.shortfall_reason


def test_deficit_larger_than_number_of_clusters():
    # official rule: clusters capped at 3 + 3, one +1 pass cannot place a deficit of 4 with two clusters
    assert presel_cluster_split([3, 3], [3, 3], 10, 'round_repair').tolist() == [3, 3]
    X, comp = blobs(n_per=30, n_blobs=4)
    tasks = np.where(comp < 1, 'small', 'big')  # small: 30 items, 2 clusters
    labels = np.where(comp < 1, np.arange(len(X)) % 2, comp)
    kw = dict(tasks=tasks, task_weights={'small': 0.8, 'big': 0.2}, labels=labels, seed=0)
    official = presel(X, 40, preset='official', **kw)
    assert official.info['task_budgets'][1] == 32 > 30
    assert official.info['cluster_budgets']['small'].tolist() == [15, 15]
    assert len(official.info['top_up']) == 2 and len(official) == 40
    paper = presel(X, 40, **kw)
    assert len(paper.info['top_up']) == 0 and paper.info['task_budgets'].tolist() == [10, 30]
    assert sum(b.sum() for b in paper.info['cluster_budgets'].values()) == 40 == len(paper)


def test_cluster_split_rules():
    # banker's rounding: 2.5 -> 2 each, deficit 2 goes to the two largest clusters (full size, stable)
    assert presel_cluster_split([5, 5, 5, 5], [6, 5, 7, 5], 10, 'round_repair').tolist() == [3, 2, 3, 2]
    lr = presel_cluster_split([5, 5, 5, 5], [6, 5, 7, 5], 10, 'largest_remainder')
    assert lr.sum() == 10 and lr.max() - lr.min() <= 1
    assert presel_cluster_split([0, 0], [4, 4], 5, 'round_repair').tolist() == [0, 0]
    with pytest.raises(InputError, match='cluster_split'):
        presel_cluster_split([1], [1], 1, 'floor')


def test_lower_irs_gets_more_weight_and_budget():
    w = task_weights([0.8, 1.0, 0.9])
    assert w[0] > w[2] > w[1] and abs(w.sum() - 1) < 1e-12
    np.testing.assert_allclose(np.log(w[0] / w[1]), 0.2 * np.sqrt(3))
    X, comp = blobs()
    tasks = np.where(comp < 3, 0, 1)
    sel = presel(X, 60, tasks=tasks, task_weights=task_weights([0.8, 1.0]), clusters=2)
    assert sel.info['task_budgets'][0] > sel.info['task_budgets'][1]
    flipped = presel(X, 60, tasks=tasks, task_weights=task_weights([1.0, 0.8]), clusters=2)
    assert flipped.info['task_budgets'][0] < flipped.info['task_budgets'][1]


def test_mapping_weights_and_string_tasks():
    X, comp = blobs()
    tasks = np.array(['x', 'y'])[comp % 2]
    by_list = presel(X, 30, tasks=tasks, task_weights=[0.3, 0.7], clusters=1)
    by_map = presel(X, 30, tasks=tasks, task_weights={'y': 0.7, 'x': 0.3}, clusters=1)
    assert np.array_equal(by_list.indices, by_map.indices)
    assert by_map.info['task_names'] == ['x', 'y'] and set(by_map.per_pick['task'].tolist()) == {'x', 'y'}
    assert np.array_equal(presel(X, 30, tasks=tasks, task_weights=[3.0, 7.0], clusters=1).indices, by_list.indices)


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    'kwargs, match',
    [
        (dict(task_weights={0: 0.5, 1: 0.3, 2: 0.2}), 'task_weights: task'),
        (dict(task_weights={0: 1.0}), 'task_weights: no weight'),
        (dict(budget=231, reference_set=np.arange(10)), 'only 230 lie outside'),
        (dict(budget=0), 'budget'),
        (dict(budget=1.5), 'budget'),
        (dict(task_weights=[0.2, 0.3, 0.5]), 'task_weights: expected 2 values'),
        (dict(task_weights=[np.nan, 1.0]), 'task_weights.*NaN'),
        (dict(task_weights=[-0.5, 1.5]), 'task_weights: expected non-negative'),
        (dict(reference_set=[0, 240]), 'reference_set: indices'),
        (dict(reference_set=[1, 1]), 'repeated'),
        (dict(reference_set=np.ones(240, bool)), 'whole pool'),
        (dict(neighbors=0), 'neighbors'),
        (dict(restarts=0), 'restarts'),
        (dict(labels=np.zeros(5, int)), 'labels: expected 240'),
        (dict(clusters=[1, 0]), 'clusters'),
        (dict(task_split='equal'), 'task_split'),
        (dict(top_up='best'), 'top_up'),
        (dict(preset='reference'), 'preset'),
        (dict(seed=-1), 'seed'),
    ],
)
def test_bad_inputs(kwargs, match):
    X, comp = blobs()
    args = dict(budget=10, tasks=comp % 2, task_weights=[0.5, 0.5])
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        presel(X, args.pop('budget'), **args)


def test_bad_arrays():
    X, comp = blobs()
    tasks = comp % 2
    Xbad = X.copy()
    Xbad[3, 2] = np.nan
    with pytest.raises(InputError, match='X.*NaN'):
        presel(Xbad, 10, tasks=tasks, task_weights=[0.5, 0.5])
    with pytest.raises(InputError, match='tasks: expected 240'):
        presel(X, 10, tasks=tasks[:-1], task_weights=[0.5, 0.5])
    with pytest.raises(InputError, match='X'):
        presel(np.zeros((0, 4)), 1, tasks=[], task_weights=[])
    with pytest.raises(InputError, match='either labels or clusters'):
        presel(X, 10, tasks=tasks, task_weights=[0.5, 0.5], labels=comp, clusters=2)
    with pytest.raises(InputError, match='tau'):
        task_weights([1.0, 2.0], tau=-1)
    with pytest.raises(InputError, match='mean_irs_per_task'):
        task_weights([])


# ---------------------------------------------------------------- IRS and centrality


def test_instruction_relevance():
    np.testing.assert_allclose(instruction_relevance([1.0, 3.0], [2.0, 2.0]), [0.5, 1.5])
    assert instruction_relevance(2.0, 4.0).tolist() == [0.5]
    for bad in ([0.0, 1.0], [-1.0, 1.0], [np.nan, 1.0], [np.inf, 1.0]):
        with pytest.raises(InputError, match='loss_with_question'):
            instruction_relevance(bad, [1.0, 1.0])
        with pytest.raises(InputError, match='loss_without_question'):
            instruction_relevance([1.0, 1.0], bad)
    with pytest.raises(InputError, match='expected 2 values'):
        instruction_relevance([1.0, 1.0], [1.0])


def test_neighbor_centrality_matches_brute_force():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(30, 6)).astype(np.float32)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Xn.astype(np.float64) @ Xn.T.astype(np.float64)
    np.fill_diagonal(S, -np.inf)
    for k in (1, 5, 29, 100):
        expected = np.sort(S, axis=1)[:, ::-1][:, : min(k, 29)].mean(1)
        np.testing.assert_allclose(neighbor_centrality(X, k), expected, atol=1e-6)
