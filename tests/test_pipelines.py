"""The records-to-selection glue: PreSel over image units (each image at most once, units vs records reported), the
reference draw, IRS -> task weights, DataTailor from records, QA rounds; fake scorers and states, no model."""

import numpy as np
import pytest

from datasel.core import InputError
from datasel.selectors.datatailor import datatailor, informativeness
from datasel.selectors.presel import task_weights
from datasel.pipelines import (
    datatailor_from_records,
    draw_reference_units,
    image_units,
    presel_pipeline,
    presel_weights,
    qa_rounds,
    record_tasks,
)

KIND_FACTOR = {'shape': 0.5, 'color': 0.7, 'yes_no': 0.95}


def fake_scorer(records):
    "Loss 2 without the question; the question divides it by a per-kind factor."
    return [2.0 * (1.0 if r['meta'].get('question_free') else KIND_FACTOR[r['meta']['question_kind']]) for r in records]


def vqa_record(img, kind, j):
    return {
        'id': f'{img}-{j}',
        'image': f'img/{img}.png',
        'format': 'llava',
        'meta': {'image_id': img, 'question_kind': kind},
        'messages': [{'role': 'user', 'content': f'<image>\nq{j}'}, {'role': 'assistant', 'content': f'a{j}'}],
    }


@pytest.fixture(scope='module')
def fake_pool():
    "300 images with 3 records each (LLaVA-like: several conversations per image); kinds mixed within an image."
    kinds = list(KIND_FACTOR)
    recs = [vqa_record(img, kinds[(img + j) % 3] if j < 2 else kinds[img % 3], j) for img in range(300) for j in range(3)]
    feats = np.random.default_rng(0).normal(size=(300, 12)).astype(np.float32)
    return recs, feats


def run(recs, feats, budget, **kw):
    return presel_pipeline(recs, budget, tasks='question_kind', image_features=feats, scorer=kw.pop('scorer', fake_scorer), **kw)


# ---------------------------------------------------------------- PreSel over images


def test_each_image_at_most_once_and_counts(fake_pool):
    recs, feats = fake_pool
    calls = []

    def scorer(batch):
        calls.append(len(batch))
        return fake_scorer(batch)

    res = run(recs, feats, 45, scorer=scorer, seed=0)
    units, sel = res.units, res.selection
    assert len(units) == 300 and units.image_ids == list(range(300))
    assert units.unit_task == [['shape', 'color', 'yes_no'][i % 3] for i in range(300)]  # majority of each image
    images = [units.unit_image[u] for u in sel.indices.tolist()]
    assert len(images) == len(set(images)) == 45  # never the same image twice
    assert not set(res.selected_image_ids) & set(res.reference_image_ids)
    ref_units = sel.info['reference_set']
    assert np.bincount(np.arange(300)[ref_units] % 3).tolist() == [5, 5, 5]  # int(0.05 * 100) per task
    assert calls == [45, 45]  # 15 images x 3 records, twice
    info = sel.info
    assert (info['n_units'], info['n_images'], info['n_records']) == (45, 45, 135)
    assert (info['n_reference_units'], info['n_reference_records'], info['n_training_records']) == (15, 45, 180)
    assert len(res.records) == 180 and len({id(r) for r in res.records}) == 180  # no record twice
    assert {r['meta']['image_id'] for r in res.records} == set(res.selected_image_ids) | set(res.reference_image_ids)
    assert [r['meta']['image_id'] for r in res.records[:3]] == [res.selected_image_ids[0]] * 3
    assert res.weights['shape'] > res.weights['color'] > res.weights['yes_no']
    assert run(recs, feats, 45, seed=0).selected_image_ids == res.selected_image_ids


def test_units_vs_records_differ_when_images_carry_different_numbers_of_questions():
    kinds = list(KIND_FACTOR)
    recs = [vqa_record(img, kinds[img % 3], j) for img in range(90) for j in range(1 + img % 4)]  # 1 to 4 questions an image
    feats = np.random.default_rng(1).normal(size=(90, 8)).astype(np.float32)
    sel = run(recs, feats, 30, seed=0).selection
    picked_records = sum(1 + sel.indices[i] % 4 for i in range(30))  # unit u is image u here
    assert sel.info['n_units'] == 30 and sel.info['n_records'] == picked_records != 30


def test_image_task_units(fake_pool):
    recs, feats = fake_pool
    res = run(recs, feats, 30, unit='image_task', seed=1)
    np.testing.assert_allclose([res.task_irs[k] for k in KIND_FACTOR], list(KIND_FACTOR.values()))
    assert res.selection.info['task_budgets'].sum() == 30 == len(res.selection)
    pairs = [(res.units.unit_image[u], res.units.unit_task[u]) for u in res.selection.indices.tolist()]
    assert len(set(pairs)) == 30  # a pair at most once
    as_map = run(recs, {i: feats[i] for i in range(300)}, 30, unit='image_task', seed=1)
    as_fn = run(recs, lambda refs: feats[[int(p[4:-4]) for p in refs]], 30, unit='image_task', seed=1)
    assert as_map.selected_image_ids == res.selected_image_ids == as_fn.selected_image_ids
    official = run(recs, feats, 30, unit='image_task', seed=1, preset='official', top_up='none')
    assert official.selection.params['task_split'] == 'floor' and official.selection.params['top_up'] == 'none'


def test_pipeline_errors(fake_pool):
    recs, feats = fake_pool
    with pytest.raises(InputError, match='scorer\\(records\\)'):
        run(recs, feats, 10, scorer=lambda b: [1.0])
    with pytest.raises(InputError, match='loss_without_question'):
        run(recs, feats, 10, scorer=lambda b: [1.0 if not r['meta'].get('question_free') else 0.0 for r in b])
    with pytest.raises(InputError, match='image_features: expected 300 rows'):
        run(recs, feats[:10], 10)
    with pytest.raises(InputError, match='image_features: no vector'):
        run(recs, {0: feats[0]}, 10)
    with pytest.raises(InputError, match='reference_fraction'):
        run(recs, feats, 10, reference_fraction=0)
    with pytest.raises(InputError, match='tasks: expected 900'):
        presel_pipeline(recs, 10, tasks=['a'], image_features=feats, scorer=fake_scorer)
    with pytest.raises(InputError, match='no image id'):
        image_units([{'messages': [], 'image': None, 'meta': {'question_kind': 'a'}}], 'question_kind')
    with pytest.raises(InputError, match='unit'):
        run(recs, feats, 10, unit='pixel')


def test_draw_reference_units():
    tasks = ['a'] * 100 + ['b'] * 40 + ['c'] * 3
    ref = draw_reference_units(tasks, 0.05, seed=0)
    assert [int(np.sum(np.array(tasks)[ref] == t)) for t in 'abc'] == [5, 2, 1]
    assert np.array_equal(ref, draw_reference_units(tasks, 0.05, seed=0))
    assert not np.array_equal(ref, draw_reference_units(tasks, 0.05, seed=1))


def test_presel_weights_aggregates_per_task():
    tasks = np.array(['b', 'a', 'b', 'a', 'c', 'c'])
    per_record = [0.9, 0.7, 1.1, 0.9, 1.0, 1.0]
    expected = task_weights([0.8, 1.0, 1.0])
    np.testing.assert_allclose(presel_weights(per_record, tasks), expected)
    np.testing.assert_allclose(presel_weights({'a': 0.8, 'b': 1.0, 'c': 1.0}, tasks), expected)
    np.testing.assert_allclose(presel_weights({'task_mean_irs': [0.8, 1.0, 1.0], 'tau': 0.3}, tasks), task_weights([0.8, 1.0, 1.0], 0.3))
    np.testing.assert_allclose(
        presel_weights({'task_mean_irs': [0.8, 1.0, 1.0], 'tau': 0.3}, tasks, tau=2.0), task_weights([0.8, 1.0, 1.0], 2.0)
    )
    with pytest.raises(InputError, match='--irs: no IRS'):
        presel_weights({'a': 1.0}, tasks, name='--irs')
    with pytest.raises(InputError, match='irs: expected 3 per-task means or 6'):
        presel_weights([1.0, 1.0], tasks)


def test_on_easy_vqa_image_units():
    from datasel.models.assets import load_easy_vqa

    records = load_easy_vqa('train', max_records=1500)
    units = image_units(records, 'question_kind', unit='image_task')
    feats = np.random.default_rng(0).normal(size=(len(units.image_ids), 16)).astype(np.float32)
    res = presel_pipeline(records, 0.1, tasks='question_kind', image_features=feats, scorer=fake_scorer, unit='image_task', seed=0)
    assert set(res.task_irs) == set(KIND_FACTOR) and res.weights['shape'] > res.weights['yes_no']
    sel = res.selection
    assert sel.params['budget'] == round(0.1 * len(units)) == len(sel)
    expected = [i for u in sel.training_set().tolist() for i in units.unit_records[u].tolist()]
    assert [id(r) for r in res.records] == [id(records[i]) for i in expected]
    assert all(records[i]['meta']['question_kind'] == units.unit_task[u] for u in sel.indices.tolist() for i in units.unit_records[u])
    by_image = presel_pipeline(records, 0.1, tasks='question_kind', image_features=feats, scorer=fake_scorer, seed=0)
    assert len(set(by_image.selected_image_ids)) == len(by_image.selection) == by_image.selection.info['n_images']


# ---------------------------------------------------------------- records helpers


def test_record_tasks_and_qa_rounds():
    recs = [{'meta': {'k': 'x'}, 'source': 's'}, {'meta': {'k': 'y'}, 'source': 't'}]
    assert record_tasks(recs, 'k') == ['x', 'y'] and record_tasks(recs, 'source') == ['s', 't']
    assert record_tasks(recs, None) == [0, 0] and record_tasks(recs, lambda r: 1) == [1, 1]
    with pytest.raises(InputError, match="record 0 has no 'task'"):
        record_tasks(recs, 'task')
    msg = lambda role: {'role': role, 'content': 'x'}
    assert qa_rounds({'messages': [msg('system'), msg('user'), msg('assistant')] + [msg('user'), msg('assistant')] * 2}) == 3
    assert qa_rounds({'conversations': [{'from': 'human'}, {'from': 'gpt'}] * 3}) == 3
    assert qa_rounds({'conversations': [{'from': 'human'}, {'from': 'gpt'}, {'from': 'human'}]}) == 1
    with pytest.raises(InputError, match='messages'):
        qa_rounds({'text': 'x'})


# ---------------------------------------------------------------- DataTailor from records


def _records(n=24):
    kinds = ['shape', 'color', 'yes_no']
    return [
        {
            'id': str(i),
            'image': f'{i}.png',
            'meta': {'question_kind': kinds[i % 3]},
            'messages': ([{'role': 'system', 'content': 'be brief'}] if i % 4 == 0 else [])
            + [{'role': 'user', 'content': 'q ' * (1 + i % 5)}, {'role': 'assistant', 'content': 'a'}] * (1 + i % 3),
        }
        for i in range(n)
    ]


def _states(records):
    return [np.random.default_rng(int(r['id'])).normal(size=(8 + int(r['id']) % 6, 12)) for r in records]


def test_datatailor_from_records_matches_arrays():
    recs = _records()
    sel = datatailor_from_records(recs, 0.25, tasks='question_kind', states_fn=_states, preset='official')
    states = _states(recs)
    info, tau = informativeness(states)
    X = np.stack([h[-1] for h in states]).astype(np.float32)
    rounds = [1 + i % 3 for i in range(24)]
    assert sel.info['rounds'].tolist() == rounds and sel.method == 'datatailor' and sel.params['preset'] == 'official'
    direct = datatailor(
        X, 0.25, tasks=[r['meta']['question_kind'] for r in recs], informativeness=info, tau=tau, rounds=rounds, preset='official'
    )
    np.testing.assert_array_equal(sel.indices, direct.indices)
    np.testing.assert_array_equal(sel.info['tau'], tau)
    assert 'states_s' in sel.timings
    by_function = datatailor_from_records(recs, 0.25, tasks=lambda r: r['meta']['question_kind'], states_fn=_states, preset='official')
    np.testing.assert_array_equal(by_function.indices, sel.indices)
    given_rounds = datatailor_from_records(recs, 0.25, tasks='question_kind', states_fn=_states, rounds=np.ones(24, int))
    assert given_rounds.info['rounds'].tolist() == [1] * 24
    with pytest.raises(InputError, match="record 0 has no 'task'"):
        datatailor_from_records(recs, 0.25, tasks='task', states_fn=_states)
    with pytest.raises(InputError, match='states_fn: expected a list of 24'):
        datatailor_from_records(recs, 0.25, states_fn=lambda r: _states(r)[:-1])
    with pytest.raises(InputError, match='records: got an empty list'):
        datatailor_from_records([], 0.25, states_fn=_states)


def test_selectors_do_not_import_models_or_records():
    import ast, inspect
    import datasel.selectors.datatailor as dt_module, datasel.selectors.presel as ps_module

    for module in (dt_module, ps_module):
        tree = ast.parse(inspect.getsource(module))
        names = [n.module or '' for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in names if 'models' in m or 'data' == m.split('.')[-1] or 'pipelines' in m], (module.__name__, names)


@pytest.mark.slow
def test_datatailor_from_records_with_a_causal_lm():
    from datasel.models.assets import load_causal_lm

    model, tokenizer = load_causal_lm()
    sel = datatailor_from_records(_records(12), 0.25, model=model, tokenizer=tokenizer, tasks='question_kind', progress=False)
    assert len(sel) == 3 and np.isfinite(sel.info['fused_scores']).all()
    assert (sel.per_pick['informativeness'] > 0).all() and ((sel.info['tau'] > 0) & (sel.info['tau'] <= 1)).all()
