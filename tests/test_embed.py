"""datasel.models.embed: pooling with masks, length-sorted batching in input order, the on-disk cache (on by default,
reuse, resume, flush by time and on Ctrl-C), images pooled and spatial, per-token states of a causal LM, warnings for
empty texts and zero rows, quiet loading, and clear errors."""

import warnings
import numpy as np
import pytest
import torch

from datasel.core import DataselError, InputError, AssetError
from datasel.models import embed
from datasel.models.embed import (
    embed_texts,
    embed_images,
    token_states,
    pool_hidden,
    length_sorted_batches,
    fixed_shape_passes,
    shaped_passes,
    cached_map,
    padded_width,
    ShardCache,
    model_fingerprint,
    content_key,
)
from datasel.models.assets import load_text_encoder, load_digits_images, load_easy_vqa


pytestmark = pytest.mark.usefixtures('default_cache')


@pytest.fixture(scope='module')
def minilm():
    return load_text_encoder(device='cpu')


@pytest.fixture(scope='module')
def tiny_lm(minilm):
    "A tiny random Llama that uses MiniLM's tokenizer (fast, no download), with a simple chat template."
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(minilm[1]),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ).eval()
    from transformers import AutoTokenizer
    from datasel.models.assets import text_encoder_path

    tokenizer = AutoTokenizer.from_pretrained(text_encoder_path())
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    return model, tokenizer


class ForwardCounter:
    "Count forward passes of a module by wrapping its `forward`."

    def __init__(self, module, attr='forward'):
        self.module, self.attr, self.calls = module, attr, 0
        self.real = getattr(module, attr)

    def __enter__(self):
        def counted(*a, **k):
            self.calls += 1
            return self.real(*a, **k)

        setattr(self.module, self.attr, counted)
        return self

    def __exit__(self, *exc):
        setattr(self.module, self.attr, self.real)


TEXTS = [f'sentence {i}: ' + 'word ' * (i % 9) + f'topic {i % 5}' for i in range(30)]


# ---------------------------------------------------------------- pooling and batching


@pytest.mark.parametrize('pooling', ['mean', 'cls', 'last'])
def test_pooling_ignores_padding_on_either_side(pooling):
    g = torch.Generator().manual_seed(0)
    lengths = [5, 2, 4]
    states = [torch.randn(n, 3, generator=g) for n in lengths]
    right, left = torch.zeros(3, 6, 3), torch.full((3, 6, 3), 99.0)
    mask_r, mask_l = torch.zeros(3, 6, dtype=torch.long), torch.zeros(3, 6, dtype=torch.long)
    for i, s in enumerate(states):
        right[i, : len(s)], mask_r[i, : len(s)] = s, 1
        left[i, 6 - len(s) :], mask_l[i, 6 - len(s) :] = s, 1
    expect = torch.stack([{'mean': s.mean(0), 'cls': s[0], 'last': s[-1]}[pooling] for s in states])
    assert torch.allclose(pool_hidden(right, mask_r, pooling), expect, atol=1e-6)
    assert torch.allclose(pool_hidden(left, mask_l, pooling), expect, atol=1e-6)


def test_length_sorted_batches_cover_every_index_once_longest_first():
    lengths = np.random.default_rng(0).integers(1, 100, 53)
    batches = length_sorted_batches(lengths, 8)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(53)) and max(map(len, batches)) == 8
    assert (np.diff(lengths[flat]) <= 0).all()


def test_length_sorted_batches_do_not_mix_padded_widths():
    lengths = np.random.default_rng(1).integers(1, 100, 200)
    batches = length_sorted_batches(lengths, 8, multiple=16)
    assert sorted(np.concatenate(batches).tolist()) == list(range(200)) and max(map(len, batches)) == 8
    assert all(len(set(padded_width(lengths[b], 16).tolist())) == 1 for b in batches)
    assert len(batches) > len(length_sorted_batches(lengths, 8))  # the widths' last batches are short


def test_fixed_shape_passes_group_rows_by_their_own_width():
    assert padded_width([1, 16, 17, 32, 33], 16).tolist() == [16, 16, 32, 32, 48]
    passes = fixed_shape_passes([40, 3, 20, 16, 33, 47, 1], rows=2, multiple=16)
    assert passes == [([0, 4], 48), ([5], 48), ([2], 32), ([1, 3], 16), ([6], 16)]
    assert shaped_passes([40, 3, 47], rows=2)[:2] == [([0, 2], [0, 2], 48), ([1], [1, 1], 16)]
    assert shaped_passes([40, 3], rows=None) == [([0, 1], [0, 1], None)]


def test_a_ray_shard_is_batched_by_token_widths_as_the_local_path(tiny_lm):
    "With `token_counts`, a shard's batches hold texts of one padded width, so no pass is padded for a shorter neighbour."
    import pickle

    from datasel.models.embed import ShardJob, ShardWorker, text_token_counts

    texts = [' '.join(['word'] * n) for n in (1, 30, 2, 14, 15, 40, 3, 17)]
    seen = []

    def compute(loaded, batch):
        seen.append(sorted({int(w) for w in embed.padded_width(text_token_counts(loaded, batch))}))
        return [np.zeros(2)] * len(batch)

    for counts, mixed in ((text_token_counts, False), (None, True)):
        seen.clear()
        job = ShardJob(lambda: tiny_lm, compute, lambda loaded: {}, batch_size=4, token_counts=counts)
        out = ShardWorker(job)({'shard': np.array([0]), 'payload': [pickle.dumps(([str(i) for i in range(8)], texts))]})
        assert out['error'].tolist() == ['']
        assert any(len(widths) > 1 for widths in seen) == mixed, seen


def test_cached_map_measures_only_the_uncached_inputs(tmp_path):
    "A lengths function is called on the inputs still to compute, so a cached call does no tokenising."
    store, measured = ShardCache(tmp_path / 'c'), []

    def sizes(batch):
        measured.append(list(batch))
        return [len(x) for x in batch]

    compute = lambda batch: [np.array([len(x)], dtype=np.float32) for x in batch]
    items = ['a', 'bbb', 'cc', 'dddd']
    cached_map(items[:2], [content_key(x) for x in items[:2]], compute, sizes, 2, store, progress=False)
    out = cached_map(items, [content_key(x) for x in items], compute, sizes, 2, store, progress=False)
    assert measured == [['a', 'bbb'], ['cc', 'dddd']] and [float(v[0]) for v in out] == [1, 3, 2, 4]
    cached_map(items, [content_key(x) for x in items], compute, sizes, 2, store, progress=False)
    assert len(measured) == 2  # all cached: not called


# ---------------------------------------------------------------- real text encoder


@pytest.mark.slow
def test_minilm_ranks_a_paraphrase_above_an_unrelated_sentence():
    E = embed_texts(
        ['How do I bake bread at home?', 'What is a simple recipe for homemade bread?', 'The central bank raised interest rates.'],
        progress=False,
    )
    assert E.shape == (3, 384) and E.dtype == np.float32
    assert E[0] @ E[1] > E[0] @ E[2] + 0.3


@pytest.mark.slow
@pytest.mark.parametrize('pooling', ['mean', 'cls', 'last'])
@pytest.mark.parametrize('normalize', [True, False])
def test_pooling_options_give_the_right_shapes(minilm, pooling, normalize):
    E = embed_texts(TEXTS[:5], *minilm, pooling=pooling, normalize=normalize, progress=False)
    assert E.shape == (5, 384) and E.dtype == np.float32 and E.flags.c_contiguous
    norms = np.linalg.norm(E, axis=1)
    assert np.allclose(norms, 1, atol=1e-5) == normalize


@pytest.mark.slow
def test_results_do_not_depend_on_batching_or_order(minilm):
    one_by_one = np.stack([embed_texts([t], *minilm, progress=False)[0] for t in TEXTS[:6]])
    batched = embed_texts(TEXTS[:6][::-1], *minilm, batch_size=4, progress=False)[::-1]
    assert np.allclose(one_by_one, batched, atol=1e-5)


@pytest.mark.slow
def test_max_tokens_truncates(minilm):
    long = 'alpha beta gamma delta ' * 50
    a = embed_texts([long], *minilm, max_tokens=8, progress=False)
    b = embed_texts([' '.join(long.split()[:6])], *minilm, max_tokens=8, progress=False)  # [CLS] + 6 words + [SEP]
    assert np.allclose(a, b, atol=1e-6)
    assert not np.allclose(a, embed_texts([long], *minilm, max_tokens=64, progress=False), atol=1e-3)


def test_model_name_strings_load_offline_models(minilm):
    from datasel.models.assets import text_encoder_path

    by_path = embed_texts(TEXTS[:2], model=str(text_encoder_path()), progress=False)
    assert np.allclose(by_path, embed_texts(TEXTS[:2], *minilm, progress=False), atol=1e-6)


# ---------------------------------------------------------------- the cache


def test_cache_is_reused_on_the_next_call(minilm, tmp_path):
    model, tok = minilm
    with ForwardCounter(model) as c:
        first = embed_texts(TEXTS, model, tok, batch_size=8, cache_dir=tmp_path, progress=False)
        assert c.calls == 4
        again = embed_texts(TEXTS[::-1], model, tok, batch_size=8, cache_dir=tmp_path, progress=False)
        assert c.calls == 4  # no model work
        assert np.array_equal(again, first[::-1])
        embed_texts(TEXTS + ['one new text'], model, tok, batch_size=8, cache_dir=tmp_path, progress=False)
        assert c.calls == 5  # only the new text
        embed_texts(TEXTS, model, tok, batch_size=8, pooling='cls', cache_dir=tmp_path, progress=False)
        assert c.calls == 9  # another pooling is another cache
        embed_texts(TEXTS, model, tok, batch_size=8, max_tokens=16, cache_dir=tmp_path, progress=False)
        assert c.calls == 13  # and so is another max_tokens
    assert len(list(tmp_path.glob('texts-*'))) == 3


def test_duplicate_texts_are_embedded_once(minilm):
    model, tok = minilm
    with ForwardCounter(model) as c:
        E = embed_texts(['same', 'same', 'other', 'same'], model, tok, batch_size=1, progress=False)
    assert c.calls == 2 and np.array_equal(E[0], E[3])


def test_changed_weights_get_their_own_cache(tiny_lm, tmp_path):
    model, tok = tiny_lm
    before = model_fingerprint(model)
    embed_texts(TEXTS[:4], model, tok, cache_dir=tmp_path, progress=False)
    with torch.no_grad():
        model.model.norm.weight.add_(0.5)
    try:
        assert model_fingerprint(model) != before
        with ForwardCounter(model.model) as c:
            embed_texts(TEXTS[:4], model, tok, cache_dir=tmp_path, progress=False)
        assert c.calls == 1
    finally:
        with torch.no_grad():
            model.model.norm.weight.sub_(0.5)
    assert model_fingerprint(model) == before


def test_interrupted_run_resumes_from_finished_shards(minilm, tmp_path, monkeypatch):
    model, tok = minilm
    monkeypatch.setattr(embed, 'FLUSH_ROWS', 8)
    reference = embed_texts(TEXTS, model, tok, batch_size=8, progress=False)
    real = model.forward
    calls = {'n': 0}

    def dies_on_third(*a, **k):
        calls['n'] += 1
        if calls['n'] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(model, 'forward', dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        embed_texts(TEXTS, model, tok, batch_size=8, cache_dir=tmp_path, progress=False)
    monkeypatch.setattr(model, 'forward', real)
    (folder,) = tmp_path.glob('texts-*')
    assert len(list(folder.glob('shard-*.npz'))) == 2  # two finished batches were kept
    assert not [p for p in folder.iterdir() if p.name.endswith('.tmp')]
    with ForwardCounter(model) as c:
        resumed = embed_texts(TEXTS, model, tok, batch_size=8, cache_dir=tmp_path, progress=False)
    assert c.calls == 2  # 30 texts - 16 cached = 14 -> 2 batches of 8
    assert np.allclose(resumed, reference, atol=1e-5)


def test_shard_cache_skips_foreign_files(tmp_path):
    cache = ShardCache(tmp_path, {'what': 'test'})
    cache.put([content_key('a')], np.ones((1, 3), np.float32))
    (tmp_path / 'shard-broken.npz').write_bytes(b'garbage')
    assert list(cache.get([content_key('a'), content_key('b')])) == [content_key('a')]


# ---------------------------------------------------------------- decoders


def test_decoder_last_and_mean_pooling_match_each_text_alone(tiny_lm):
    model, tok = tiny_lm
    texts = ['tiny', 'a somewhat longer text with more tokens', 'medium length text']
    with torch.inference_mode():
        alone = [model(torch.tensor([tok(t)['input_ids']]), output_hidden_states=True).hidden_states[-1][0] for t in texts]
    for pooling, expect in [('last', [h[-1] for h in alone]), ('mean', [h.mean(0) for h in alone])]:
        E = embed_texts(texts, model, tok, pooling=pooling, normalize=False, batch_size=3, progress=False)
        assert np.allclose(E, torch.stack(expect).numpy(), atol=1e-4), pooling


def test_model_is_left_in_its_training_mode(tiny_lm):
    model, tok = tiny_lm
    model.train()
    try:
        embed_texts(['x y'], model, tok, progress=False)
        assert model.training
    finally:
        model.eval()


# ---------------------------------------------------------------- token states


def test_token_states_are_per_token_and_unpadded(tiny_lm):
    model, tok = tiny_lm
    texts = ['short', 'a considerably longer text than the first one is', 'mid sized text']
    record = {
        'id': 'r',
        'messages': [{'role': 'user', 'content': 'hello'}, {'role': 'assistant', 'content': 'hi there'}],
        'image': None,
        'meta': {},
        'format': 'openai',
    }
    states = token_states(texts + [record], model, tok, batch_size=2, progress=False)
    for t, s in zip(texts, states):
        ids = tok(t)['input_ids']
        with torch.inference_mode():
            alone = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0].numpy()
        assert s.dtype == np.float32 and s.shape == (len(ids), 32) and np.allclose(s, alone, atol=1e-4)
    rendered = tok('user: hello\nassistant: hi there\n', add_special_tokens=False)['input_ids']
    assert states[3].shape == (len(rendered), 32)
    raw_sharegpt = {'conversations': [{'from': 'human', 'value': 'hello'}, {'from': 'gpt', 'value': 'hi there'}]}
    assert np.allclose(token_states([raw_sharegpt], model, tok, progress=False)[0], states[3], atol=1e-5)
    assert [len(s) for s in token_states(texts, model, tok, max_tokens=3, progress=False)] == [3, 3, 3]


def test_token_states_bad_inputs(tiny_lm):
    model, tok = tiny_lm
    with pytest.raises(InputError, match='empty list'):
        token_states([], model, tok)
    with pytest.raises(InputError, match='wrap'):
        token_states('one text', model, tok)
    with pytest.raises(InputError, match=r'texts_or_records\[1\]'):
        token_states(['ok', 3.5], model, tok)
    with pytest.raises(InputError, match=r"texts_or_records\[0\]: 'messages'"):
        token_states([{'messages': [{'role': 'user'}]}], model, tok)
    with pytest.raises(InputError, match='max_tokens'):
        token_states(['x'], model, tok, max_tokens=0)
    with pytest.raises(InputError, match=r'texts_or_records\[0\]: .*unknown format'):
        token_states([{'question': 'x'}], model, tok)


@pytest.mark.slow
def test_smollm2_token_states_of_a_record():
    from datasel.models.assets import load_sharegpt

    records = load_sharegpt(max_records=2)
    states = token_states(records, max_tokens=48, device='cpu', progress=False)
    assert [s.shape for s in states] == [(48, 576), (48, 576)] and all(np.isfinite(s).all() for s in states)


def random_texts(vocabulary: str, n: int, shortest: int, longest: int, seed: int = 0) -> list[str]:
    "n distinct texts of shortest..longest-1 words drawn from a vocabulary (each ends with its number)."
    rng, words = np.random.default_rng(seed), vocabulary.split()
    return [' '.join(rng.choice(words, int(rng.integers(shortest, longest)))) + f' {i}' for i in range(n)]


@pytest.mark.slow
def test_token_states_do_not_depend_on_the_other_inputs_of_the_call(minilm):
    "A text's token states are the same to the bit alone, among a few others, or in the whole set (MiniLM, as `vqa_features` runs it)."
    texts = random_texts('what shape is in the image is there a red blue green circle rectangle triangle not', 90, 3, 40, seed=1)
    model, tok = minilm
    whole = token_states(texts, model, tok, max_tokens=64, batch_size=16, progress=False)
    for part in (texts[5:6], texts[::7], texts[40:70]):
        for text, states in zip(part, token_states(part, model, tok, max_tokens=64, batch_size=16, progress=False)):
            np.testing.assert_array_equal(states, whole[texts.index(text)])


# ---------------------------------------------------------------- images


@pytest.fixture(scope='module')
def digits():
    return load_digits_images()[0][:10]


@pytest.mark.slow
def test_image_features_pooled_and_spatial(digits):
    F = embed_images(digits[:5], batch_size=2, device='cpu', progress=False)
    P = embed_images(list(digits[:5]), spatial=True, device='cpu', progress=False)
    assert F.shape == (5, 1280) and P.shape == (5, 49, 1280) and F.dtype == P.dtype == np.float32
    assert np.allclose(P.mean(1), F, atol=1e-4)
    assert np.allclose(embed_images(digits[3:4], device='cpu', progress=False), F[3:4], atol=1e-5)  # batch independent


@pytest.mark.slow
def test_image_cache_and_paths(tmp_path):
    from datasel.models.embed import _cached_image_encoder

    records = load_easy_vqa('test', max_records=200)
    paths = sorted({r['image'] for r in records})[:6]
    model, _ = _cached_image_encoder(None, 'cpu')
    with ForwardCounter(model, 'extract_features') as c:
        first = embed_images(paths, batch_size=4, device='cpu', cache_dir=tmp_path, progress=False)
        assert c.calls == 2
        again = embed_images(paths, batch_size=4, device='cpu', cache_dir=tmp_path, progress=False)
        assert c.calls == 2 and np.array_equal(first, again)
        embed_images(paths, batch_size=4, device='cpu', cache_dir=tmp_path, spatial=True, progress=False)
        assert c.calls == 4


@pytest.mark.slow
def test_image_features_do_not_depend_on_what_the_cache_held(tmp_path):
    "An image's features are the same whether it was embedded alone, in a short batch or in a full one."
    records = load_easy_vqa('test', max_records=600)
    paths = sorted({r['image'] for r in records})[:64]
    opts = dict(batch_size=32, device='cpu', spatial=True, progress=False)
    fresh = embed_images(paths, cache=False, **opts)  # two full forward passes
    embed_images(paths[:12], cache_dir=tmp_path, **opts)  # short batches first: below 16 rows convolutions take another
    embed_images(paths[40:52], cache_dir=tmp_path, **opts)  # code path on this CPU, so these rows were once cached apart
    np.testing.assert_array_equal(embed_images(paths, cache_dir=tmp_path, **opts), fresh)
    np.testing.assert_array_equal(embed_images(paths[5:6], cache=False, **opts), fresh[5:6])


@pytest.mark.slow
def test_text_vectors_do_not_depend_on_what_the_cache_held(tmp_path):
    "A text's vector is the same to the bit whether it was embedded alone, with a few others, or with the whole set."
    texts = random_texts('the quick brown fox jumps over a lazy dog while data selection picks tokens and models embed text', 120, 2, 90)
    opts = dict(batch_size=32, device='cpu', progress=False)
    fresh = embed_texts(texts, cache=False, **opts)
    embed_texts(texts[::7], cache_dir=tmp_path, **opts)  # a seventh of the texts cached first, in other batches
    np.testing.assert_array_equal(embed_texts(texts, cache_dir=tmp_path, **opts), fresh)
    np.testing.assert_array_equal(embed_texts(texts[5:6], cache=False, **opts), fresh[5:6])
    raw = embed_texts(texts, cache=False, normalize=False, **opts)
    loaded = embed.text_model(None, device='cpu', progress=False)
    for size in (5, 120):  # batches of other sizes and mixes of lengths, every pass of 32 rows
        batches = [embed.text_vectors(loaded, texts[i : i + size], rows=32) for i in range(0, 120, size)]
        np.testing.assert_array_equal(np.concatenate(batches), raw)


def test_hf_vision_model_folder(tmp_path):
    from transformers import ViTConfig, ViTModel
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    torch.manual_seed(0)
    ViTModel(
        ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
    ).save_pretrained(tmp_path)
    ViTImageProcessorPil(size={'height': 32, 'width': 32}).save_pretrained(tmp_path)
    images = [np.random.default_rng(i).integers(0, 255, (20, 30, 3)).astype(np.uint8) for i in range(3)]
    F = embed_images(images, model=str(tmp_path), device='cpu', progress=False)
    P = embed_images(images, model=str(tmp_path), device='cpu', spatial=True, progress=False)
    assert F.shape == (3, 32) and P.shape == (3, 16, 32)  # 4x4 patches, the class token dropped


def test_image_bad_inputs():
    with pytest.raises(InputError, match='empty list'):
        embed_images([])
    with pytest.raises(InputError, match=r'images\[1\]: contains NaN'):
        embed_images([np.zeros((8, 8)), np.full((8, 8), np.nan)])
    with pytest.raises(InputError, match='no image file'):
        embed_images(['/no/such/picture.png'])
    with pytest.raises(InputError, match='single path'):
        embed_images('/no/such/picture.png')
    with pytest.raises(AssetError, match='no weights file'):
        embed_images([np.zeros((8, 8))], model='/no/such/weights.pth')


# ---------------------------------------------------------------- text errors


def test_text_bad_inputs(minilm, tmp_path):
    model, tok = minilm
    with pytest.raises(InputError, match='texts: got an empty list'):
        embed_texts([], model, tok)
    with pytest.raises(InputError, match=r'texts\[1\]: expected a string, got float nan'):
        embed_texts(['ok', float('nan')], model, tok)
    with pytest.raises(InputError, match=r'texts\[0\]: expected a string, got NoneType'):
        embed_texts([None], model, tok)
    with pytest.raises(InputError, match='single string'):
        embed_texts('just one', model, tok)
    with pytest.raises(InputError, match='pooling'):
        embed_texts(['x'], model, tok, pooling='max')
    with pytest.raises(InputError, match='batch_size'):
        embed_texts(['x'], model, tok, batch_size=0)
    with pytest.raises(InputError, match='max_tokens'):
        embed_texts(['x'], model, tok, max_tokens=-3)
    with pytest.raises(InputError, match='model: expected'):
        embed_texts(['x'], model=42)
    with pytest.raises(AssetError, match='no such folder'):
        embed_texts(['x'], model=str(tmp_path / 'missing-model'))
    with pytest.raises(InputError, match='device'):
        embed_texts(['x'], model, tok, device='tpu9')


def test_nan_from_the_model_is_reported(tiny_lm):
    model, tok = tiny_lm
    with torch.no_grad():
        saved = model.model.norm.weight.clone()
        model.model.norm.weight.fill_(float('nan'))
    try:
        with pytest.raises(DataselError, match='NaN or inf'):
            embed_texts(['a b', 'c'], model, tok, progress=False)
    finally:
        with torch.no_grad():
            model.model.norm.weight.copy_(saved)


# ---------------------------------------------------------------- caches on by default, flushing, warnings, quiet loading


def test_cache_is_on_by_default_and_can_be_turned_off(minilm, default_cache):
    model, tok = minilm
    first = embed_texts(TEXTS[:5], model, tok, progress=False)
    (folder,) = (default_cache / 'embeddings').glob('texts-*')
    with ForwardCounter(model) as c:
        assert np.array_equal(embed_texts(TEXTS[:5], model, tok, progress=False), first)
        assert c.calls == 0
        embed_texts(TEXTS[:5], model, tok, progress=False, cache=False)
        assert c.calls == 1
    assert len(list(folder.glob('shard-*.npz'))) == 1


def test_time_based_flush_writes_a_shard_per_batch(minilm, tmp_path, monkeypatch):
    model, tok = minilm
    monkeypatch.setattr(embed, 'FLUSH_SECONDS', 0.0)  # every batch is older than the limit
    embed_texts(TEXTS, model, tok, batch_size=8, cache_dir=tmp_path, progress=False)
    (folder,) = tmp_path.glob('texts-*')
    assert len(list(folder.glob('shard-*.npz'))) == 4  # 30 texts in batches of 8, each flushed at once


def test_a_kill_after_the_flush_interval_keeps_the_work(minilm, tmp_path, monkeypatch):
    "A SIGKILL runs no `finally`: what survives is what the time-based flush wrote."
    model, tok = minilm
    monkeypatch.setattr(embed, 'FLUSH_SECONDS', 0.0)
    real = model.forward
    calls, writes = {'n': 0, 'on_disk_at_kill': None}, []

    def killed_on_third(*a, **k):
        calls['n'] += 1
        if calls['n'] == 3:
            calls['on_disk_at_kill'] = len(writes)
            raise SystemExit('killed')
        return real(*a, **k)

    monkeypatch.setattr(model, 'forward', killed_on_third)
    put = embed.ShardCache.put
    monkeypatch.setattr(embed.ShardCache, 'put', lambda self, *a, **k: writes.append(1) or put(self, *a, **k))
    with pytest.raises(SystemExit):
        embed_texts(TEXTS, model, tok, batch_size=8, cache_dir=tmp_path, progress=False)
    assert calls['on_disk_at_kill'] == 2  # both finished batches were on disk before the kill


def test_empty_texts_warn_and_fail_when_strict(minilm):
    model, tok = minilm
    with pytest.warns(UserWarning, match=r'texts \[1, 3\]: 2 empty texts'):
        embed_texts(['a', '', 'b', ' \n'], model, tok, progress=False, cache=False)
    with pytest.raises(InputError, match=r'texts \[0\]: 1 empty texts'):
        embed_texts([''], model, tok, progress=False, cache=False, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        embed_texts(['a', 'b'], model, tok, progress=False, cache=False)  # nothing to say about clean texts


def test_all_zero_rows_warn_and_fail_when_strict(digits):
    class Dead(torch.nn.Module):
        def extract_features(self, x):
            return torch.zeros(len(x), 4, 2, 2)

    with pytest.warns(UserWarning, match=r'rows of the image features \[0, 1\]: 2 all-zero rows'):
        embed_images(digits[:2], Dead(), progress=False, cache=False)
    with pytest.raises(InputError, match='all-zero rows'):
        embed_images(digits[:2], Dead(), progress=False, cache=False, strict=True)


def test_progress_false_hides_transformers_loading_bar(capsys):
    from transformers.utils import logging as hf_logging
    from datasel.models.assets import text_encoder_path

    hf_logging.enable_progress_bar()  # an earlier in-process `datasel --quiet` turns the bars off for the process
    hf_logging.set_verbosity_warning()

    load_text_encoder(str(text_encoder_path()), device='cpu', progress=False)
    assert 'Loading weights' not in capsys.readouterr().err
    load_text_encoder(str(text_encoder_path()), device='cpu', progress=True)
    assert 'Loading weights' in capsys.readouterr().err  # the check above could fail


def test_bad_executor_is_named(minilm):
    with pytest.raises(InputError, match='executor'):
        embed_texts(['x'], *minilm, executor='spark')
