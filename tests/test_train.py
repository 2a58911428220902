"""datasel.models.train: LoRA on the top layers from cached bottom states — exactness of the cache, learning, isolation, determinism."""

import numpy as np
import pytest
import torch

from datasel.core import InputError
from datasel.models import embed
from datasel.models.score import record_key, response_loss, tiny_causal_lm
from datasel.models.train import (
    answer_scores,
    clear_shared_prefix_states,
    evaluate_loss,
    finetune_lora,
    normalize_answer,
    prefix_states,
    replaying_bottom,
    shared_prefix_states,
    token_f1,
    top_token_nll,
)

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def qa(question, answer):
    return {'messages': [{'role': 'user', 'content': question}, {'role': 'assistant', 'content': answer}]}


RECORDS = [qa(f'what is {a} plus {b}', f'{a} plus {b} is {a + b}') for a in range(7) for b in range(7)]
ORDER = np.random.default_rng(0).permutation(len(RECORDS))
TRAIN, HELDOUT = [RECORDS[i] for i in ORDER[:32]], [RECORDS[i] for i in ORDER[32:]]


@pytest.fixture(autouse=True)
def default_cache(tmp_path_factory, monkeypatch):
    "The default score cache of each test lives in its own folder (model caches stay where they are)."
    monkeypatch.setattr(embed, 'cache_root', lambda: tmp_path_factory.mktemp('datasel-cache'))


@pytest.fixture(scope='module')
def tiny():
    return tiny_causal_lm(layers=3, hidden=64, seed=0)


@pytest.mark.parametrize('frozen', [0, 1, 2])
def test_cached_bottom_gives_the_full_models_loss(tiny, frozen):
    model, tok = tiny
    full = response_loss(HELDOUT, model, tok, max_tokens=256, progress=False)
    states = prefix_states(HELDOUT, model, tok, frozen_layers=frozen, progress=False)
    entries = [states.entries[record_key(r)] for r in HELDOUT]
    with torch.no_grad(), replaying_bottom(model, frozen) as replay:
        totals, counts = top_token_nll(model, replay, entries, tok.pad_token_id)
    np.testing.assert_allclose((totals / counts).numpy(), full, atol=1e-4)
    assert evaluate_loss(model, tok, HELDOUT, prefix=states) == pytest.approx(full.mean(), abs=1e-4)


def test_lora_lowers_heldout_loss_and_leaves_the_base_model_alone(tiny):
    model, tok = tiny
    before_weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = [p.requires_grad for p in model.parameters()]
    prefix = prefix_states(TRAIN + HELDOUT, model, tok, frozen_layers=1, progress=False)
    before = evaluate_loss(model, tok, HELDOUT, prefix=prefix)
    tuned = finetune_lora(TRAIN, model, tok, epochs=4, lr=3e-3, batch_size=4, train_layers=2, lora_r=4, prefix=prefix, progress=False)
    after = evaluate_loss(tuned, tok, HELDOUT, prefix=prefix)
    assert after < before - 0.1
    assert evaluate_loss(tuned, tok, HELDOUT) == pytest.approx(after, abs=1e-4)  # the merged full model agrees
    assert all(torch.equal(p, before_weights[n]) for n, p in model.named_parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    # frozen tensors are shared, the trained layers are new
    assert tuned.model.embed_tokens.weight is model.model.embed_tokens.weight
    assert tuned.model.layers[0].mlp.up_proj.weight is model.model.layers[0].mlp.up_proj.weight
    assert not torch.equal(tuned.model.layers[2].mlp.up_proj.weight, model.model.layers[2].mlp.up_proj.weight)
    info = tuned.finetune_info
    assert info['n_records'] == 32 and len(info['losses']) == 4 * 8 and info['params']['train_layers'] == 2


def test_shared_states_run_each_records_bottom_once(tiny):
    model, tok = tiny
    clear_shared_prefix_states()
    bottom_calls = []
    hook = model.model.layers[0].register_forward_hook(lambda *a: bottom_calls.append(1))
    try:
        first = finetune_lora(TRAIN, model, tok, epochs=1, batch_size=8, train_layers=1, progress=False)
        n_first = len(bottom_calls)
        assert n_first == 4  # 32 records in batches of 8
        finetune_lora(TRAIN[5:20], model, tok, epochs=1, batch_size=8, train_layers=1, seed=1, progress=False)
        assert len(bottom_calls) == n_first  # every record's bottom was cached
        loss = evaluate_loss(first, tok, HELDOUT)  # the held-out records join the shared states, through the tuned copy
        assert len(shared_prefix_states(model, 2)) == len(TRAIN) + len(HELDOUT)
        assert loss == pytest.approx(evaluate_loss(first, tok, HELDOUT, prefix=None), abs=1e-4)
    finally:
        hook.remove()
        clear_shared_prefix_states()


def test_runs_are_deterministic_and_seeded(tiny):
    model, tok = tiny
    kw = dict(epochs=1, lr=3e-3, batch_size=8, train_layers=1, progress=False)
    a, b, c = (finetune_lora(TRAIN[:16], model, tok, seed=s, **kw) for s in (3, 3, 4))
    assert a.finetune_info['losses'] == b.finetune_info['losses']
    assert torch.equal(a.model.layers[2].self_attn.q_proj.weight, b.model.layers[2].self_attn.q_proj.weight)
    assert not torch.equal(a.model.layers[2].self_attn.q_proj.weight, c.model.layers[2].self_attn.q_proj.weight)


def test_all_layers_and_errors(tiny):
    model, tok = tiny
    everywhere = finetune_lora(TRAIN[:8], model, tok, train_layers=None, batch_size=4, progress=False)
    assert everywhere.finetune_info['params']['train_layers'] == 3
    assert not torch.equal(everywhere.model.layers[0].self_attn.q_proj.weight, model.model.layers[0].self_attn.q_proj.weight)
    with pytest.raises(InputError, match='train_layers'):
        finetune_lora(TRAIN, model, tok, train_layers=0)
    with pytest.raises(InputError, match='lr'):
        finetune_lora(TRAIN, model, tok, lr=-1.0)
    prefix = prefix_states(TRAIN[:4], model, tok, frozen_layers=1, progress=False)
    with pytest.raises(InputError, match='another'):
        prefix_states(TRAIN[:4], model, tok, frozen_layers=1, max_tokens=64, states=prefix)
    with pytest.raises(InputError, match='another base model'):
        evaluate_loss(tiny_causal_lm(layers=3, hidden=64, seed=9)[0], tok, HELDOUT, prefix=prefix)


def test_answer_metrics():
    assert normalize_answer('  The Answer, is: 42!') == 'answer is 42'
    assert token_f1('a red car', 'the red bus') == pytest.approx(0.5)
    assert token_f1('blue', 'Blue.') == 1.0 and token_f1('green', 'blue') == 0.0


def test_answer_scores_on_own_generations(tiny):
    model, tok = tiny
    from datasel.models.score import generate, first_exchange

    own = generate(HELDOUT[:4], model, tok, max_new_tokens=4, progress=False)
    gold = [first_exchange(r, a) for r, a in zip(HELDOUT[:4], own)]
    result = answer_scores(model, tok, gold, max_new_tokens=4)
    assert result['exact_match'] == 1.0 and result['token_f1'] == 1.0 and result['n'] == 4


@pytest.mark.slow
def test_smollm_lora_lowers_heldout_loss():
    from datasel.models.assets import load_causal_lm

    model, tok = load_causal_lm(device='cpu')
    words = ['river', 'stone', 'cloud', 'apple', 'tiger', 'lemon', 'chair', 'piano', 'ocean', 'candle', 'garden', 'rocket']
    recs = [qa(f'Encode the word {w} in Zorbish.', f'Zorbish: {w[::-1].upper()}-zz') for w in words]
    train, heldout = recs[:9], recs[9:]
    prefix = prefix_states(recs, model, tok, frozen_layers=27, max_tokens=64, progress=False)
    before = evaluate_loss(model, tok, heldout, max_tokens=64, prefix=prefix)
    tuned = finetune_lora(train, model, tok, epochs=3, lr=2e-3, batch_size=3, max_tokens=64, train_layers=3, prefix=prefix, progress=False)
    after = evaluate_loss(tuned, tok, heldout, max_tokens=64, prefix=prefix)
    assert after < before - 0.1, (before, after)


@pytest.mark.slow
def test_gemma3_bottom_replay_is_exact_and_lora_trains():
    "Gemma 3's decoder (sliding-window and global layers, scaled embeddings) replays its cached bottom exactly."
    from datasel.models.assets import load_causal_lm
    from datasel.models.train import record_losses

    model, tok = load_causal_lm('gemma-3-270m', device='cpu', progress=False)
    recs = [
        qa(f'Encode the word {w} in Zorbish.', f'Zorbish: {w[::-1].upper()}-zz')
        for w in ['river', 'stone', 'cloud', 'apple', 'tiger', 'lemon']
    ]
    full = response_loss(recs, model, tok, max_tokens=64, progress=False, cache=False)
    prefix = prefix_states(recs, model, tok, frozen_layers=16, max_tokens=64, progress=False)
    np.testing.assert_allclose(record_losses(model, tok, recs, max_tokens=64, prefix=prefix), full, atol=1e-3)
    tuned = finetune_lora(recs, model, tok, epochs=3, lr=2e-3, batch_size=3, max_tokens=64, prefix=prefix, progress=False)
    assert tuned.finetune_info['losses'][-1] < tuned.finetune_info['losses'][0] - 0.1, tuned.finetune_info['losses']
    assert evaluate_loss(tuned, tok, recs, max_tokens=64, prefix=prefix) < full.mean() - 0.1
