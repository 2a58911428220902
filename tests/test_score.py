"""datasel.models.score: response-token masking, padding invariance, caching, IFD / IRS, generation and the generation gap."""

import numpy as np
import pytest
import torch

from datasel.core import InputError
from datasel.models.embed import WIDTH_MULTIPLE, length_sorted_batches
from datasel.models.score import (
    IGNORE_INDEX,
    batch_response_loss,
    encode_record,
    first_exchange,
    generate,
    generation_gap,
    ifd,
    irs_losses,
    perplexity,
    question_free_record,
    response_loss,
    score_records,
    tiny_causal_lm,
)

pytestmark = pytest.mark.usefixtures('one_torch_thread', 'default_cache')


@pytest.fixture(scope='module')
def tiny():
    return tiny_causal_lm(layers=2, hidden=64, seed=0)


def qa(question, answer, system=None):
    messages = ([{'role': 'system', 'content': system}] if system else []) + [
        {'role': 'user', 'content': question},
        {'role': 'assistant', 'content': answer},
    ]
    return {'id': question[:20], 'messages': messages, 'image': None, 'meta': {}, 'format': 'openai'}


POOL = [qa(f'question number {i} ' + 'with some padding words ' * (i % 7), 'an answer ' * (1 + i % 4) + str(i)) for i in range(13)]


def n_passes(records, tok, batch_size=8):
    "Forward passes `response_loss` makes for these uncached records: one per batch, batches of one padded width."
    lengths = [len(encode_record(r, tok)['input_ids']) for r in records]
    return len(length_sorted_batches(lengths, batch_size, WIDTH_MULTIPLE))


class CountForwards:
    def __init__(self, model):
        self.calls = 0
        self.hook = model.get_decoder().register_forward_hook(self)

    def __call__(self, *args):
        self.calls += 1

    def remove(self):
        self.hook.remove()


def labelled_tokens(enc, tokenizer):
    ids = enc['input_ids'][enc['labels'] != IGNORE_INDEX]
    return tokenizer.convert_ids_to_tokens(ids.tolist())


def test_labels_are_exactly_the_assistant_tokens(tiny):
    _, tok = tiny
    rec = {
        'messages': [
            {'role': 'system', 'content': 'be brief'},
            {'role': 'user', 'content': 'first question'},
            {'role': 'assistant', 'content': 'alpha beta'},
            {'role': 'user', 'content': 'second'},
            {'role': 'assistant', 'content': 'gamma'},
        ]
    }
    enc = encode_record(rec, tok)
    tokens = tok.convert_ids_to_tokens(enc['input_ids'].tolist())
    # the template: <|im_start|> role ... <|im_end|> per message; the answers follow each `<|im_start|> assistant`
    starts = [i + 1 for i, t in enumerate(tokens) if t == 'assistant' and tokens[i - 1] == '<|im_start|>']
    expected = list(range(starts[0], starts[0] + 3)) + list(range(starts[1], starts[1] + 2))
    assert np.flatnonzero(enc['labels'] != IGNORE_INDEX).tolist() == expected
    assert labelled_tokens(enc, tok) == ['alpha', 'beta', '<|im_end|>', 'gamma', '<|im_end|>']
    assert (enc['labels'][enc['labels'] != IGNORE_INDEX] == enc['input_ids'][enc['labels'] != IGNORE_INDEX]).all()
    assert labelled_tokens(encode_record(rec, tok, end_of_turn=False), tok) == ['alpha', 'beta', 'gamma']


def test_long_prompt_is_cut_from_the_left(tiny):
    _, tok = tiny
    enc = encode_record(qa('filler ' * 300, 'the end'), tok, max_tokens=32)
    assert len(enc['input_ids']) == 32
    assert labelled_tokens(enc, tok) == ['the', 'end', '<|im_end|>']
    long_answer = encode_record(qa('short', 'word ' * 300), tok, max_tokens=32)
    assert len(long_answer['input_ids']) == 32
    assert (long_answer['labels'] != IGNORE_INDEX).sum() >= 16  # the response keeps at least half the window


def test_loss_matches_transformers_own_loss(tiny):
    model, tok = tiny
    enc = encode_record(POOL[3], tok)
    with torch.no_grad():
        ref = model(input_ids=torch.as_tensor(enc['input_ids'])[None], labels=torch.as_tensor(enc['labels'])[None]).loss.item()
    assert response_loss([POOL[3]], model, tok, progress=False)[0] == pytest.approx(ref, abs=1e-5)


def test_padding_invariance(tiny):
    model, tok = tiny
    alone = np.array([response_loss([r], model, tok, progress=False)[0] for r in POOL])
    for batch_size in (2, 5, 13):
        batched = response_loss(POOL, model, tok, batch_size=batch_size, progress=False)
        np.testing.assert_allclose(batched, alone, atol=1e-4, rtol=0)
    np.testing.assert_allclose(perplexity(POOL, model, tok, progress=False), np.exp(alone), rtol=1e-4)


def test_cache_reuses_results_without_model_work(tiny, tmp_path):
    model, tok = tiny
    counter = CountForwards(model)
    try:
        first = response_loss(POOL[:8], model, tok, batch_size=4, cache_dir=tmp_path, progress=False)
        calls = n_passes(POOL[:8], tok, 4)
        assert counter.calls == calls
        again = response_loss(POOL[:8][::-1], model, tok, batch_size=4, cache_dir=tmp_path, progress=False)
        assert counter.calls == calls
        np.testing.assert_array_equal(again, first[::-1])
        more = response_loss(POOL, model, tok, batch_size=4, cache_dir=tmp_path, progress=False)
        calls += n_passes(POOL[8:], tok, 4)  # only the 5 new records
        assert counter.calls == calls
        np.testing.assert_array_equal(more[:8], first)
        # the IRS losses reuse the cached losses of the records themselves
        irs_losses(POOL[:8], model, tok, batch_size=4, cache_dir=tmp_path, progress=False)
        assert counter.calls == calls + n_passes([question_free_record(r) for r in POOL[:8]], tok, 4)
    finally:
        counter.remove()
    assert list(tmp_path.iterdir()), 'no cache written'


def test_cache_is_keyed_by_the_weights(tiny, tmp_path):
    model, tok = tiny
    other, _ = tiny_causal_lm(layers=2, hidden=64, seed=1)
    a = response_loss(POOL[:3], model, tok, cache_dir=tmp_path, progress=False)
    b = response_loss(POOL[:3], other, tok, cache_dir=tmp_path, progress=False)
    assert not np.allclose(a, b)
    np.testing.assert_allclose(b, response_loss(POOL[:3], other, tok, progress=False), atol=1e-6)


def test_irs_and_ifd_use_the_question_free_copy(tiny):
    model, tok = tiny
    with_q, without_q = irs_losses(POOL[:4], model, tok, progress=False)
    np.testing.assert_allclose(with_q, response_loss(POOL[:4], model, tok, progress=False), atol=1e-6)
    np.testing.assert_allclose(without_q, response_loss([question_free_record(r) for r in POOL[:4]], model, tok, progress=False), atol=1e-6)
    np.testing.assert_allclose(ifd(POOL[:4], model, tok, progress=False), with_q / without_q, rtol=1e-9)
    np.testing.assert_allclose(score_records(POOL[:4], 'irs', model, tok, progress=False), with_q / without_q, rtol=1e-9)


def test_generation_is_batch_invariant_and_deterministic(tiny):
    model, tok = tiny
    batched = generate(POOL[:6], model, tok, max_new_tokens=8, batch_size=6, progress=False)
    assert batched == [generate([r], model, tok, max_new_tokens=8, progress=False)[0] for r in POOL[:6]]
    assert batched == generate(POOL[:6], model, tok, max_new_tokens=8, batch_size=4, progress=False)
    sampled = [generate(POOL[:3], model, tok, max_new_tokens=8, do_sample=True, seed=s, progress=False) for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] and sampled[0] != sampled[2]


def test_generation_gap_follows_eq7(tiny):
    model, tok = tiny
    own = generate(POOL[:4], model, tok, max_new_tokens=6, progress=False)
    gap = generation_gap(POOL[:4], model, tok, generations=own, progress=False)
    gold_loss = response_loss(POOL[:4], model, tok, progress=False)
    gen_loss = response_loss([first_exchange(r, a) for r, a in zip(POOL[:4], own)], model, tok, progress=False)
    # S = -log(PPL(x+y_gen) / PPL(x+y_gold)) = loss_gold - loss_gen
    np.testing.assert_allclose(gap, -np.log(np.exp(gen_loss) / np.exp(gold_loss)), atol=1e-6)
    np.testing.assert_allclose(generation_gap(POOL[:4], model, tok, max_new_tokens=6, progress=False), gap, atol=1e-9)
    length = lambda recs: [float(len(r['messages'][-1]['content'])) for r in recs]
    np.testing.assert_allclose(
        generation_gap(POOL[:2], model, tok, scorer=length, generations=['x', 'y' * 30]),
        [len(POOL[0]['messages'][1]['content']) - 1, len(POOL[1]['messages'][1]['content']) - 30],
    )


def test_errors_name_the_argument(tiny):
    model, tok = tiny
    with pytest.raises(InputError, match='records\\[1\\]: has no assistant turn'):
        response_loss([POOL[0], {'messages': [{'role': 'user', 'content': 'hi'}]}], model, tok)
    with pytest.raises(InputError, match='kind: expected one of'):
        score_records(POOL, 'bleu', model, tok)
    with pytest.raises(InputError, match='tokenizer'):
        response_loss(POOL, model)
    with pytest.raises(InputError, match='max_tokens'):
        response_loss(POOL, model, tok, max_tokens=0)


@pytest.fixture(scope='module')
def smollm():
    from datasel.models.assets import load_causal_lm

    return load_causal_lm(device='cpu')


@pytest.mark.slow
def test_smollm_template_masks_only_the_answer(smollm):
    _, tok = smollm
    enc = encode_record(qa('What is 2+2?', 'Four.'), tok)
    assert tok.decode(enc['input_ids'][enc['labels'] != IGNORE_INDEX]) == 'Four.<|im_end|>'
    text = tok.decode(enc['input_ids'])
    assert 'You are a helpful AI assistant' in text  # the template's default system prompt is there, and not labelled


@pytest.mark.slow
def test_ifd_of_a_copied_response_is_lower_than_an_unrelated_one(smollm):
    model, tok = smollm
    sentence = 'The old lighthouse keeper painted seven blue boats before the winter storm arrived.'
    question = f'Repeat this sentence exactly: {sentence}'
    copy_ifd, unrelated_ifd = ifd(
        [qa(question, sentence), qa(question, 'Photosynthesis turns light, water and carbon dioxide into sugar.')],
        model,
        tok,
        progress=False,
    )
    assert copy_ifd < 0.5 * unrelated_ifd
    assert copy_ifd < 0.5 < unrelated_ifd


@pytest.mark.slow
def test_losses_do_not_depend_on_what_the_cache_held(smollm, tmp_path):
    "A record's loss is the same to the bit whether it was scored alone, with a few others, or with the whole set."
    model, tok = smollm
    rng = np.random.default_rng(0)
    words = 'the quick brown fox jumps over a lazy dog while data selection picks tokens and models embed text'.split()
    text = lambda: ' '.join(rng.choice(words, int(rng.integers(3, 60))))
    records = [qa(text(), text()) for _ in range(40)]
    opts = dict(batch_size=8, progress=False)
    fresh = response_loss(records, model, tok, cache=False, **opts)
    response_loss(records[::5], model, tok, cache_dir=tmp_path, **opts)  # a fifth of the records cached first, in other batches
    np.testing.assert_array_equal(response_loss(records, model, tok, cache_dir=tmp_path, **opts), fresh)
    np.testing.assert_array_equal(response_loss(records[3:4], model, tok, cache=False, **opts), fresh[3:4])
    encoded = [encode_record(r, tok) for r in records]
    chunks = [batch_response_loss(model, encoded[i : i + 3], tok.pad_token_id, rows=8) for i in range(0, 40, 3)]
    np.testing.assert_array_equal(np.concatenate(chunks), fresh)  # other batches, every pass of 8 rows


def test_scores_are_cached_by_default_and_not_with_cache_false(tiny, default_cache):
    model, tok = tiny
    first = response_loss(POOL[:4], model, tok, progress=False)
    (folder,) = (default_cache / 'scores').glob('loss-*')
    counter = CountForwards(model)
    try:
        assert np.array_equal(response_loss(POOL[:4], model, tok, progress=False), first)
        assert counter.calls == 0
        response_loss(POOL[:4], model, tok, progress=False, cache=False)
        assert counter.calls == n_passes(POOL[:4], tok)
    finally:
        counter.remove()
    assert len(list(folder.glob('shard-*.npz'))) == 1


def test_vocabulary_head_runs_only_on_response_positions(tiny):
    "No (b, L, V) logit tensor: the head sees as many rows as there are labelled next tokens."
    model, tok = tiny
    encoded = [encode_record(r, tok) for r in POOL[:3]]
    rows = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    try:
        batch_response_loss(model, encoded, tok.pad_token_id)
    finally:
        hook.remove()
    assert rows == [sum(int((e['labels'][1:] != IGNORE_INDEX).sum()) for e in encoded)]


def test_question_free_record_lives_in_score():
    rec = {
        'id': 'v',
        'image': 'x.png',
        'messages': [{'role': 'user', 'content': '<image>\nWhat shape?'}, {'role': 'assistant', 'content': 'circle'}],
    }
    free = question_free_record(rec)
    assert free['messages'] == [{'role': 'user', 'content': '<image>'}, {'role': 'assistant', 'content': 'circle'}]
    assert free['meta'] == {'question_free': True} and rec['messages'][0]['content'].startswith('<image>')
    import ast, inspect, datasel.models.score as score_module

    imported = [node.module or '' for node in ast.walk(ast.parse(inspect.getsource(score_module))) if isinstance(node, ast.ImportFrom)]
    assert imported and not [m for m in imported if 'selectors' in m]  # score imports no selector
