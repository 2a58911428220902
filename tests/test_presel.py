"""PreSel: fidelity to the official code's outputs (tests/golden), the paper allocation, the cases the official code
mishandles, bad inputs, and the records pipeline with a fake scorer."""
import json
import numpy as np
import pytest

from datasel.core import InputError, Selection
from datasel.selectors.presel import (draw_reference_units, image_units, instruction_relevance, neighbor_centrality, presel,
                            presel_cluster_split, presel_pipeline, presel_task_split, question_free_record, task_weights)


@pytest.fixture(scope='module')
def gold(golden):
    "The official PreSel inputs and outputs (round 3, N = 300)."
    irs = json.loads((golden / 'presel_task_irs.json').read_text())
    return {'pool': np.load(golden / 'pool.npy'),
            'tasks': np.load(golden / 'presel_task_labels.npy'),
            'labels': np.load(golden / 'presel_kmeans_labels.npy'),
            'reference': np.load(golden / 'presel_reference_set.npy'),
            'nc': np.load(golden / 'presel_nc.npy'),
            'irs': irs['task_mean_irs'], 'tau': irs['tau'],
            'selected': json.loads((golden / 'presel_selected.json').read_text()),
            'budgets': json.loads((golden / 'presel_task_budgets.json').read_text())}


def canonical_rows(X):
    "Map every row index to the smallest index of its identical-row group (the golden README's rule)."
    _, first, group = np.unique(X, axis=0, return_index=True, return_inverse=True)
    return first[group.reshape(-1)]


def run_gold(gold, **kw):
    w = task_weights(gold['irs'])
    return presel(gold['pool'], gold['tasks'], 300, w, reference_set=gold['reference'], labels=gold['labels'], **kw)


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


def test_reference_preset_reproduces_official_selection(gold):
    sel = run_gold(gold, reference=True)
    canon = canonical_rows(gold['pool'])
    for t, rows in gold['selected']['selected_per_task'].items():
        ours = sel.info['selected_per_task'][int(t)]
        assert len(ours) == len(rows)
        assert set(canon[ours].tolist()) == set(canon[rows].tolist()), f'task {t}'
    assert sel.info['task_budgets'].tolist() == gold['selected']['task_budget']
    assert sel.info['n_clusters'].tolist() == [gold['selected']['n_clusters'][str(t)] for t in range(5)]
    assert set(canon[sel.info['selected']].tolist()) == set(canon[gold['selected']['selected_all_sorted']].tolist())
    assert sel.info['shortfall'] == 0 and len(sel.info['top_up']) == 0


def test_reference_preset_neighbor_centrality(gold):
    nc = run_gold(gold, reference=True).info['nc']
    ref = np.isnan(gold['nc'])
    assert np.array_equal(np.isnan(nc), ref)
    assert np.array_equal(np.flatnonzero(ref), gold['reference'])
    np.testing.assert_allclose(nc[~ref], gold['nc'][~ref], rtol=0, atol=1e-5)


def test_training_set_is_picks_then_reference_set(gold):
    sel = run_gold(gold, reference=True)
    assert isinstance(sel, Selection) and sel.info['method'] == 'presel'
    assert len(sel) == 300 + len(gold['reference'])
    assert sel.indices[:300].tolist() == sel.info['selected'].tolist()
    assert sel.indices[300:].tolist() == gold['reference'].tolist() == sel.info['reference_set'].tolist()
    assert len(np.unique(sel.indices)) == len(sel)


def test_paper_mode_on_golden_inputs(gold):
    sel = run_gold(gold)
    assert sel.info['task_budgets'].tolist() == gold['budgets']['rounds']['3']['budget_allocate_samples']
    assert len(sel.info['selected']) == 300 and sel.info['shortfall'] == 0
    assert not np.isin(sel.info['selected'], gold['reference']).any()
    # every cluster keeps its highest-NC available members
    nc, lab, tasks = sel.info['nc'], sel.info['labels'], gold['tasks']
    chosen = np.zeros(len(nc), bool); chosen[sel.info['selected']] = True
    for t in range(5):
        for c in range(sel.info['n_clusters'][t]):
            members = np.flatnonzero((tasks == t) & (lab == c) & np.isfinite(nc))
            assert chosen[members].sum() == sel.info['cluster_budgets'][t][c]
            if chosen[members].any() and (~chosen[members]).any():
                assert nc[members][chosen[members]].min() >= nc[members][~chosen[members]].max()


# ---------------------------------------------------------------- cases the official code mishandles

def blobs(n_per=40, n_blobs=6, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_blobs, d)) * 4
    comp = np.repeat(np.arange(n_blobs), n_per)
    return (centres[comp] + rng.normal(size=(len(comp), d))).astype(np.float32), comp


def test_one_member_clusters_are_defined():
    X, comp = blobs()
    labels = comp.copy()
    labels[[0, 50, 100]] = [10, 11, 12]      # three singleton clusters
    tasks = np.zeros(len(X), int)
    for reference in (False, True):
        sel = presel(X, tasks, 60, [1.0], labels=labels, reference=reference)
        nc = sel.info['nc']
        assert np.isfinite(nc).all()
        assert (nc[[0, 50, 100]] == 0).all()
        assert len(sel.info['selected']) == 60
    assert neighbor_centrality(X[:1]).tolist() == [0.0]
    # a singleton cluster that earns a pick keeps its member: shares 5/6*5 -> 4 and 1/6*5 -> 1 under both rules
    small_labels = np.array([0, 0, 0, 0, 0, 1])
    for reference in (False, True):
        sel = presel(X[:6], np.zeros(6, int), 5, [1.0], labels=small_labels, reference=reference)
        assert sel.info['cluster_budgets'][0].tolist() == [4, 1]
        assert 5 in sel.info['selected'].tolist() and sel.info['nc'][5] == 0.0


def test_task_budget_larger_than_task():
    X, comp = blobs()
    tasks = np.where(np.arange(len(X)) < 20, 'rare', 'common')
    ref = np.array([0, 1, 100, 101])
    w = {'rare': 0.9, 'common': 0.1}
    paper = presel(X, tasks, 50, w, reference_set=ref, clusters_per_task=2, seed=0)
    assert paper.info['task_budgets'].tolist() == [32, 18]          # rare capped at its 18 available, rest to common
    assert paper.info['shortfall'] == 0 and len(paper.info['top_up']) == 0
    assert len(paper.info['selected']) == 50
    official = presel(X, tasks, 50, w, reference=True, reference_set=ref, clusters_per_task=2, seed=0)
    assert official.info['task_budgets'].tolist() == [5, 45]        # floor(0.1*50)=5, remainder to the top task
    assert official.info['shortfall'] == 45 - 18
    top = official.info['top_up']
    assert len(top) == 27 and len(official.info['selected']) == 50
    assert not np.isin(top, ref).any()
    assert not np.isin(top, np.concatenate(list(official.info['selected_per_task'].values()))).any()
    assert (tasks[top] == 'common').all()                            # rare is exhausted, so the top-up comes from common
    again = presel(X, tasks, 50, w, reference=True, reference_set=ref, clusters_per_task=2, seed=0)
    assert np.array_equal(again.indices, official.indices)
    other = presel(X, tasks, 50, w, reference=True, reference_set=ref, clusters_per_task=2, seed=1)
    assert not np.array_equal(np.sort(other.info['top_up']), np.sort(top))


def test_deficit_larger_than_number_of_clusters():
    # official rule: clusters capped at 3 + 3, one +1 pass cannot place a deficit of 4 with two clusters
    assert presel_cluster_split([3, 3], [3, 3], 10, 'round_repair').tolist() == [3, 3]
    X, comp = blobs(n_per=30, n_blobs=4)
    tasks = np.where(comp < 1, 'small', 'big')                      # small: 30 items, 2 clusters
    labels = np.where(comp < 1, np.arange(len(X)) % 2, comp)
    w = {'small': 0.8, 'big': 0.2}
    official = presel(X, tasks, 40, w, reference=True, labels=labels, seed=0)
    b_small = official.info['task_budgets'][1]
    assert b_small == 32 > 30
    assert official.info['cluster_budgets']['small'].tolist() == [15, 15]
    assert official.info['shortfall'] == 2 and len(official.info['top_up']) == 2
    paper = presel(X, tasks, 40, w, labels=labels, seed=0)
    assert paper.info['shortfall'] == 0
    assert paper.info['task_budgets'].tolist() == [10, 30]
    assert sum(b.sum() for b in paper.info['cluster_budgets'].values()) == 40
    assert len(paper.info['selected']) == 40


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
    sel = presel(X, tasks, 60, task_weights([0.8, 1.0]), clusters_per_task=2)
    assert sel.info['task_budgets'][0] > sel.info['task_budgets'][1]
    flipped = presel(X, tasks, 60, task_weights([1.0, 0.8]), clusters_per_task=2)
    assert flipped.info['task_budgets'][0] < flipped.info['task_budgets'][1]


def test_kmeans_path_and_determinism():
    X, comp = blobs(n_per=110, n_blobs=4)                            # one task of 440 -> 4 clusters
    tasks = np.zeros(len(X), int)
    a = presel(X, tasks, 40, [1.0], seed=3)
    assert a.info['n_clusters'].tolist() == [4]
    assert np.array_equal(a.indices, presel(X, tasks, 40, [1.0], seed=3).indices)
    # k-means finds the four blobs, so each gets 10 picks
    assert sorted(np.bincount(comp[a.info['selected']]).tolist()) == [10, 10, 10, 10]
    capped = presel(X[:5], np.zeros(5, int), 2, [1.0], clusters_per_task=50)
    assert capped.info['n_clusters'].tolist() == [5]


def test_mapping_weights_and_string_tasks():
    X, comp = blobs()
    tasks = np.array(['x', 'y'])[comp % 2]
    by_list = presel(X, tasks, 30, [0.3, 0.7], clusters_per_task=1)
    by_map = presel(X, tasks, 30, {'y': 0.7, 'x': 0.3}, clusters_per_task=1)
    assert np.array_equal(by_list.indices, by_map.indices)
    assert by_map.info['tasks'] == ['x', 'y']
    unnormalised = presel(X, tasks, 30, [3.0, 7.0], clusters_per_task=1)
    assert np.array_equal(unnormalised.indices, by_list.indices)


# ---------------------------------------------------------------- bad inputs

def test_bad_inputs():
    X, comp = blobs()
    tasks = comp % 2
    with pytest.raises(InputError, match='weights: task'):                     # a task with no samples
        presel(X, tasks, 10, {0: 0.5, 1: 0.3, 2: 0.2})
    with pytest.raises(InputError, match='weights: no weight'):
        presel(X, tasks, 10, {0: 1.0})
    with pytest.raises(InputError, match='only 230 lie outside'):
        presel(X, tasks, 231, [0.5, 0.5], reference_set=np.arange(10))
    with pytest.raises(InputError, match='budget'):
        presel(X, tasks, 0, [0.5, 0.5])
    with pytest.raises(InputError, match='weights: expected 2 values'):
        presel(X, tasks, 10, [0.2, 0.3, 0.5])
    with pytest.raises(InputError, match='weights.*NaN'):
        presel(X, tasks, 10, [np.nan, 1.0])
    with pytest.raises(InputError, match='weights: expected non-negative'):
        presel(X, tasks, 10, [-0.5, 1.5])
    Xbad = X.copy(); Xbad[3, 2] = np.nan
    with pytest.raises(InputError, match='features.*NaN'):
        presel(Xbad, tasks, 10, [0.5, 0.5])
    with pytest.raises(InputError, match='tasks: expected 240'):
        presel(X, tasks[:-1], 10, [0.5, 0.5])
    with pytest.raises(InputError, match='features'):
        presel(np.zeros((0, 4)), [], 1, [])
    with pytest.raises(InputError, match='reference_set: indices'):
        presel(X, tasks, 10, [0.5, 0.5], reference_set=[0, 240])
    with pytest.raises(InputError, match='repeated'):
        presel(X, tasks, 10, [0.5, 0.5], reference_set=[1, 1])
    with pytest.raises(InputError, match='whole pool'):
        presel(X, tasks, 10, [0.5, 0.5], reference_set=np.ones(240, bool))
    with pytest.raises(InputError, match='neighbors'):
        presel(X, tasks, 10, [0.5, 0.5], neighbors=0)
    with pytest.raises(InputError, match='labels: expected 240'):
        presel(X, tasks, 10, [0.5, 0.5], labels=np.zeros(5, int))
    with pytest.raises(InputError, match='either labels or clusters_per_task'):
        presel(X, tasks, 10, [0.5, 0.5], labels=comp, clusters_per_task=2)
    with pytest.raises(InputError, match='clusters_per_task'):
        presel(X, tasks, 10, [0.5, 0.5], clusters_per_task=[1, 0])
    with pytest.raises(InputError, match='task_split'):
        presel(X, tasks, 10, [0.5, 0.5], task_split='equal')
    with pytest.raises(InputError, match='tau'):
        task_weights([1.0, 2.0], tau=-1)
    with pytest.raises(InputError, match='mean_irs_per_task'):
        task_weights([])


# ---------------------------------------------------------------- IRS and the question-free copy

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


def test_question_free_record_follows_remove_instruction():
    rec = {'id': 'r', 'image': None, 'format': 'llava', 'meta': {'k': 1},
           'messages': [{'role': 'system', 'content': 'sys'},
                        {'role': 'user', 'content': 'first, no image'}, {'role': 'assistant', 'content': 'A1'},
                        {'role': 'user', 'content': 'Look: <image>\nWhat?'}, {'role': 'assistant', 'content': 'A2'},
                        {'role': 'user', 'content': 'another <image>'}, {'role': 'assistant', 'content': 'A3'}]}
    out = question_free_record(rec)
    assert out['messages'] == [{'role': 'user', 'content': '<image>'}, {'role': 'assistant', 'content': 'A1 A2 A3'}]
    assert out['meta'] == {'k': 1, 'question_free': True} and rec['meta'] == {'k': 1}
    assert len(rec['messages']) == 7 and out['format'] == 'llava'
    with pytest.raises(InputError, match='messages'):
        question_free_record({'conversations': [{'from': 'human', 'value': '<image>'}]})
    with pytest.raises(InputError, match='no assistant turn'):
        question_free_record({'id': 'x', 'messages': [{'role': 'user', 'content': '<image>'}]})


def test_neighbor_centrality_matches_brute_force():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(30, 6)).astype(np.float32)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Xn.astype(np.float64) @ Xn.T.astype(np.float64)
    np.fill_diagonal(S, -np.inf)
    for k in (1, 5, 29, 100):
        kk = min(k, 29)
        expected = np.sort(S, axis=1)[:, ::-1][:, :kk].mean(1)
        np.testing.assert_allclose(neighbor_centrality(X, k), expected, atol=1e-6)


# ---------------------------------------------------------------- the pipeline

KIND_FACTOR = {'shape': 0.5, 'color': 0.7, 'yes_no': 0.95}


def fake_scorer(records):
    "Loss 2 without the question; the question divides it by a per-kind factor."
    return [2.0 * (1.0 if r['meta'].get('question_free') else KIND_FACTOR[r['meta']['question_kind']]) for r in records]


def vqa_record(img, kind, j):
    return {'id': f'{img}-{j}', 'image': f'img/{img}.png', 'format': 'llava',
            'meta': {'image_id': img, 'question_kind': kind},
            'messages': [{'role': 'user', 'content': f'<image>\nq{j}'}, {'role': 'assistant', 'content': f'a{j}'}]}


@pytest.fixture(scope='module')
def fake_pool():
    kinds = list(KIND_FACTOR)
    recs = [vqa_record(img, kinds[(img + j) % 3] if j < 2 else kinds[img % 3], j) for img in range(300) for j in range(3)]
    feats = np.random.default_rng(0).normal(size=(300, 12)).astype(np.float32)
    return recs, feats


def test_pipeline_by_image(fake_pool):
    recs, feats = fake_pool
    calls = []
    def scorer(batch):
        calls.append(len(batch)); return fake_scorer(batch)
    res = presel_pipeline(recs, 'question_kind', feats, scorer, 45, seed=0)
    units = res.units
    assert len(units) == 300 and units.image_ids == list(range(300))
    assert units.unit_task == [['shape', 'color', 'yes_no'][i % 3] for i in range(300)]   # majority of each image
    ref_units = res.selection.info['reference_set']
    assert np.bincount(np.arange(300)[ref_units] % 3).tolist() == [5, 5, 5]              # int(0.05 * 100) per task
    assert calls == [45, 45]                                                              # 15 images x 3 records, twice
    # IRS of a reference image mixes its record kinds; the task ranking follows the kind factors
    assert res.weights['shape'] > res.weights['color'] > res.weights['yes_no']
    assert len(res.selected_image_ids) == 45 and not set(res.selected_image_ids) & set(res.reference_image_ids)
    assert len(res.records) == 3 * (45 + 15)
    chosen = set(res.selected_image_ids) | set(res.reference_image_ids)
    assert {r['meta']['image_id'] for r in res.records} == chosen
    assert [r['meta']['image_id'] for r in res.records[:3]] == [res.selected_image_ids[0]] * 3
    again = presel_pipeline(recs, 'question_kind', feats, fake_scorer, 45, seed=0)
    assert again.selected_image_ids == res.selected_image_ids


def test_pipeline_by_image_task_and_feature_forms(fake_pool):
    recs, feats = fake_pool
    res = presel_pipeline(recs, 'question_kind', feats, fake_scorer, 30, unit='image_task', seed=1)
    np.testing.assert_allclose([res.task_irs[k] for k in KIND_FACTOR], list(KIND_FACTOR.values()))
    assert res.selection.info['task_budgets'].sum() == 30
    as_map = presel_pipeline(recs, 'question_kind', {i: feats[i] for i in range(300)}, fake_scorer, 30,
                             unit='image_task', seed=1)
    as_fn = presel_pipeline(recs, 'question_kind', lambda refs: feats[[int(p[4:-4]) for p in refs]], fake_scorer, 30,
                            unit='image_task', seed=1)
    assert as_map.selected_image_ids == res.selected_image_ids == as_fn.selected_image_ids
    official = presel_pipeline(recs, 'question_kind', feats, fake_scorer, 30, unit='image_task', seed=1, reference=True)
    assert len(official.selection.info['selected']) == 30


def test_pipeline_errors(fake_pool):
    recs, feats = fake_pool
    with pytest.raises(InputError, match='scorer\\(records\\)'):
        presel_pipeline(recs, 'question_kind', feats, lambda b: [1.0], 10)
    with pytest.raises(InputError, match='loss_without_question'):
        presel_pipeline(recs, 'question_kind', feats, lambda b: [1.0 if not r['meta'].get('question_free') else 0.0 for r in b], 10)
    with pytest.raises(InputError, match='image_features: expected 300 rows'):
        presel_pipeline(recs, 'question_kind', feats[:10], fake_scorer, 10)
    with pytest.raises(InputError, match='image_features: no vector'):
        presel_pipeline(recs, 'question_kind', {0: feats[0]}, fake_scorer, 10)
    with pytest.raises(InputError, match='reference_fraction'):
        presel_pipeline(recs, 'question_kind', feats, fake_scorer, 10, reference_fraction=0)
    with pytest.raises(InputError, match='tasks_or_key: expected 900'):
        presel_pipeline(recs, ['a'], feats, fake_scorer, 10)
    with pytest.raises(InputError, match='no image id'):
        image_units([{'messages': [], 'image': None, 'meta': {'question_kind': 'a'}}], 'question_kind')


def test_draw_reference_units():
    tasks = ['a'] * 100 + ['b'] * 40 + ['c'] * 3
    ref = draw_reference_units(tasks, 0.05, seed=0)
    assert np.bincount(np.array(tasks)[ref] == 'a').tolist()[1] == 5
    assert [int(np.sum(np.array(tasks)[ref] == t)) for t in 'abc'] == [5, 2, 1]
    assert np.array_equal(ref, draw_reference_units(tasks, 0.05, seed=0))
    assert not np.array_equal(ref, draw_reference_units(tasks, 0.05, seed=1))


def test_pipeline_on_easy_vqa():
    assets = pytest.importorskip('datasel.models.assets')
    records = assets.load_easy_vqa('train', max_records=1500)
    units = image_units(records, 'question_kind', unit='image_task')
    ids = units.image_ids
    feats = np.random.default_rng(0).normal(size=(len(ids), 16)).astype(np.float32)
    res = presel_pipeline(records, 'question_kind', feats, fake_scorer, 0.1, unit='image_task', seed=0)
    assert set(res.task_irs) == set(KIND_FACTOR)
    assert res.weights['shape'] > res.weights['yes_no']
    n_new = res.selection.info['params']['budget']
    assert n_new == round(0.1 * len(units)) and len(res.selection.info['selected']) == n_new
    assert set(res.selected_image_ids) <= set(ids)
    picked_units = set(res.selection.indices.tolist())
    expected = [i for u in res.selection.indices.tolist() for i in units.unit_records[u].tolist()]
    assert [id(r) for r in res.records] == [id(records[i]) for i in expected]
    assert all(r['meta']['question_kind'] == units.unit_task[u] for u in picked_units for r in
               (records[i] for i in units.unit_records[u]))
