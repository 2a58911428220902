"""One contract for every registered selection method: budget honoured, deterministic by seed, an explicit option
beats the preset, bad budgets rejected, resolved options recorded, strict-JSON results, memory-mapped input."""

import json
import numpy as np
import pytest

import datasel
from datasel.core import InputError, PRESETS, Selection, dumps_json
from datasel.registry import methods, method_info, select

N, D, TASKS = 240, 12, 3


def pool(seed=0, n=N, d=D):
    "A clustered pool: 8 well-separated blobs."
    rng = np.random.default_rng(seed)
    centres = 4 * rng.standard_normal((8, d))
    return (centres[rng.integers(0, 8, n)] + rng.standard_normal((n, d))).astype(np.float32)


def make_input(kind, n=N, seed=1):
    rng = np.random.default_rng(seed)
    if kind == 'scores':
        return rng.uniform(0.1, 1.0, n)
    if kind == 'labels':
        return np.arange(n) % TASKS
    if kind == 'task_weights':
        return np.full(TASKS, 1 / TASKS)
    if kind == 'rounds':
        return rng.integers(1, 4, n)
    raise AssertionError(f'no test input for kind {kind!r}')


def inputs_for(info, n=N):
    return {k: make_input(kind, n) for k, kind in info.inputs.items() if k in info.required or kind != 'callback'}


NAMES = [m.name for m in methods()]


def test_registry_lists_the_papers_methods():
    expected = {
        'novelselect',
        'random',
        'kcenter',
        'kmeans_closest',
        'kmeans_random',
        'deita',
        'kmq',
        'iterative_kmq',
        'facility_location',
        'qdit',
        'presel',
        'datatailor',
    }
    assert expected <= set(NAMES), sorted(expected - set(NAMES))
    for m in methods():
        assert m.summary and m.paper and m.scores, m.name
        assert set(m.required) <= set(m.inputs), m.name
        assert set(m.presets) == set(PRESETS), m.name


def run(name, X=None, budget=20, **extra):
    info = method_info(name)
    X = pool() if X is None else X
    return select(name, X, budget, **{**inputs_for(info, len(X)), **extra})


@pytest.mark.parametrize('name', NAMES)
def test_budget_honoured_and_result_typed(name):
    for budget in (7, 20, 0.1):
        sel = run(name, budget=budget)
        b = sel.params['budget']
        assert b == (budget if isinstance(budget, int) else round(budget * N))
        assert isinstance(sel, Selection) and sel.method == name
        assert len(sel) == b, f'{name}: {len(sel)} picks for a budget of {b} (shortfall {sel.shortfall}: {sel.shortfall_reason})'
        assert len(np.unique(sel.indices)) == len(sel), f'{name}: repeated picks'
        assert sel.indices.min() >= 0 and sel.indices.max() < N
        assert 'total_s' in sel.timings and sel.params['preset'] == 'paper'
        assert {'seed', 'budget'} <= set(sel.params)
        json.loads(dumps_json(sel.to_dict()))  # strict JSON: no NaN / Infinity


@pytest.mark.parametrize('name', NAMES)
def test_deterministic_by_seed(name):
    a, b = run(name, seed=3), run(name, seed=3)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.params == b.params


@pytest.mark.parametrize('name', NAMES)
def test_preset_fills_only_what_is_not_passed(name):
    info = method_info(name)
    paper, official = info.presets['paper'], info.presets['official']
    sel = run(name, preset='official')
    for k, v in official.items():
        assert sel.params[k] == v, f'{name}: preset official should set {k}={v!r}, params has {sel.params[k]!r}'
    explicit = {k: paper[k] for k in paper if paper[k] != official[k]}
    if not explicit:
        pytest.skip(f'{name}: its presets do not differ')
    sel = run(name, preset='official', **explicit)
    for k, v in explicit.items():
        assert sel.params[k] == v, f'{name}: explicit {k}={v!r} lost to the preset ({sel.params[k]!r})'
    assert sel.params['preset'] == 'official'


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('budget', [0, N + 1, -0.5, 1.5, '10', True])
def test_bad_budget_rejected(name, budget):
    with pytest.raises(InputError, match='budget'):
        run(name, budget=budget)


@pytest.mark.parametrize('name', NAMES)
def test_bad_preset_and_unknown_option_rejected(name):
    with pytest.raises(InputError, match='preset'):
        run(name, preset='reference')
    with pytest.raises(InputError, match='unknown option'):
        run(name, no_such_option=1)


@pytest.mark.parametrize('name', NAMES)
def test_nan_rows_rejected(name):
    X = pool()
    X[5, 2] = np.nan
    with pytest.raises(InputError, match='NaN'):
        run(name, X=X)


@pytest.mark.parametrize('name', NAMES)
def test_memory_mapped_float16_pool(name, tmp_path):
    X = pool()
    path = tmp_path / 'X.npy'
    np.save(path, X.astype(np.float16))
    mm = np.load(path, mmap_mode='r')
    sel = run(name, X=mm, budget=15)
    assert len(sel) == 15


def test_top_level_names_resolve():
    for name in datasel.PUBLIC_NAMES:
        assert getattr(datasel, name) is not None, name
