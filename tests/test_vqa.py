"""datasel.models.vqa: the fusion network, training on a selection, PreSel's losses, DataTailor's token states, and easy-vqa."""

import numpy as np
import pytest
import torch

from datasel.core import InputError, Selection
from datasel.models.vqa import (
    FusionVQA,
    VQAFeatures,
    VQAScorer,
    VQAStates,
    train_vqa,
    vqa_accuracy,
    vqa_embeddings,
    vqa_irs_losses,
    vqa_losses,
    vqa_predict,
    vqa_states_fn,
    vqa_token_states,
)

SHAPES, COLOURS = [0, 7, 9], [1, 2, 3, 5, 6, 8, 10, 11]

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def synthetic(n=1200, images=300, seed=0):
    """Images carry a shape code in 8 patches and a colour code in 8 others; questions ask shape / colour / is-there."""
    rng = np.random.default_rng(seed)
    shape, colour = rng.integers(0, 3, images), rng.integers(0, 8, images)
    codes = rng.normal(size=(11, 32)).astype(np.float32)
    feats = rng.normal(scale=0.5, size=(images, 16, 32)).astype(np.float32)
    feats[:, :8] += codes[shape][:, None]
    feats[:, 8:] += codes[3 + colour][:, None]
    questions = rng.normal(size=(5, 6, 24)).astype(np.float32)
    lengths = np.array([6, 6, 4, 5, 3])
    for q, L in enumerate(lengths):
        questions[q, L:] = 0
    img, q = rng.integers(0, images, n), rng.integers(0, 5, n)
    answers = np.where(
        q == 0, np.array(SHAPES)[shape[img]], np.where(q == 1, np.array(COLOURS)[colour[img]], np.where(shape[img] == q - 2, 4, 12))
    )
    kinds = np.array(['shape', 'color', 'yes_no', 'yes_no', 'yes_no'])[q]
    return VQAFeatures(feats, questions, lengths, img, q, answers.astype(np.int64), kinds, [f'r{i}' for i in range(n)])


@pytest.fixture(scope='module')
def data():
    return synthetic()


@pytest.fixture(scope='module')
def trained(data):
    return train_vqa(data, np.arange(900), epochs=8, width=64, seed=0)


def test_fusion_padding_and_null_question():
    torch.manual_seed(0)
    net = FusionVQA(8, 6, 4, width=16).eval()
    img, q = torch.randn(2, 4, 8), torch.randn(2, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        logits, states, valid = net(img, q, mask)
        alone = net(img[:1], q[:1, :3], mask[:1, :3])[0]
        torch.testing.assert_close(alone, logits[:1], atol=1e-5, rtol=0)
        assert valid.sum(1).tolist() == [1 + 4 + 3, 1 + 4 + 5]
        # the null question ignores the question tokens entirely
        a = net(img, q, mask, drop_question=torch.tensor([True, True]))
        b = net(img, torch.randn(2, 5, 6), mask, drop_question=torch.tensor([True, True]))
        torch.testing.assert_close(a[0], b[0])
        assert a[2].sum(1).tolist() == [6, 6]


def test_training_beats_chance_and_the_question_matters(data, trained):
    test_rows = np.arange(900, 1200)
    result = vqa_accuracy(trained, data, test_rows)
    assert result['accuracy'] > result['majority_rate'] + 0.3
    assert set(result['per_kind']) == {'shape', 'color', 'yes_no'}
    with_q, without_q = vqa_irs_losses(trained, data, test_rows)
    assert with_q.mean() < 0.5 * without_q.mean()
    assert with_q.dtype == np.float64 and (with_q > 0).all() and (without_q > 0).all()  # PreSel's IRS divides by these
    # yes/no answers cannot be read off the image alone: the question matters least... for the image-only loss it is the hardest
    yes_no = data.kinds[test_rows] == 'yes_no'
    assert without_q[yes_no].mean() > 0.5
    pred, probs = vqa_predict(trained, data, test_rows[:10])
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert (pred == probs.argmax(1)).all()


def test_training_is_deterministic_and_takes_selections(data, trained):
    again = train_vqa(data, Selection(np.arange(900)), epochs=8, width=64, seed=0)
    assert again.history['loss'] == trained.history['loss']
    other = train_vqa(data, np.arange(900), epochs=8, width=64, seed=1)
    assert other.history['loss'] != trained.history['loss']
    small = train_vqa(data, np.arange(40), epochs=2, width=16)
    assert small.params['n_train'] == 40
    with pytest.raises(InputError, match='indices must be in'):
        train_vqa(data, [len(data)])
    with pytest.raises(InputError, match='epochs'):
        train_vqa(data, epochs=0)


def test_fixed_steps_whatever_the_selection_size(data):
    small = train_vqa(data, np.arange(50), steps=7, batch_size=16, width=16)  # 4 batches a pass: 2 passes
    large = train_vqa(data, np.arange(500), steps=7, batch_size=16, width=16)  # 32 batches a pass: part of one
    assert (small.params['steps'], small.params['epochs'], len(small.history['loss'])) == (7, 2, 2)
    assert (large.params['steps'], large.params['epochs']) == (7, 1)
    with pytest.raises(InputError, match='steps'):
        train_vqa(data, steps=0)


def test_token_states_feed_datatailor(data, trained):
    from datasel.selectors.datatailor import informativeness

    rows = np.arange(20)
    states = vqa_token_states(trained, data, rows)
    lengths = data.question_lengths[data.question_index[rows]]
    assert [s.shape for s in states] == [(16 + L, 64) for L in lengths]
    info, tau = informativeness(states)
    assert np.isfinite(info).all() and ((tau > 0) & (tau <= 1)).all()
    assert vqa_embeddings(trained, data, rows).shape == (20, 64)


def test_outputs_do_not_depend_on_the_other_records_of_the_call(data, trained):
    "A record's probabilities, losses, token states and embedding are the same to the bit alone, in a subset, in any order."
    rows = np.arange(900, 1200)
    probs = vqa_predict(trained, data, rows)[1]
    losses, states, emb = (
        vqa_losses(trained, data, rows, question=False),
        vqa_token_states(trained, data, rows),
        vqa_embeddings(trained, data, rows),
    )
    for part in ([7], np.arange(0, 300, 7), np.arange(299, 100, -3)):
        np.testing.assert_array_equal(vqa_predict(trained, data, rows[part], batch_size=512)[1], probs[part])
        np.testing.assert_array_equal(vqa_losses(trained, data, rows[part], question=False), losses[part])
        np.testing.assert_array_equal(vqa_embeddings(trained, data, rows[part]), emb[part])
        for got, i in zip(vqa_token_states(trained, data, rows[part]), part):
            np.testing.assert_array_equal(got, states[i])


def test_scorer_trains_on_the_reference_records_then_scores_both_ways(data):
    from datasel.models.score import question_free_record

    records = [
        {
            'id': f'r{i}',
            'image': 'img.png',
            'meta': {},
            'messages': [{'role': 'user', 'content': '<image>\nq'}, {'role': 'assistant', 'content': 'a'}],
        }
        for i in range(len(data))
    ]
    scorer = VQAScorer(data, epochs=3, width=32)
    ref = records[100:400]
    with_q = scorer(ref)
    without_q = scorer([question_free_record(r) for r in ref])
    assert scorer.model.params['n_train'] == 300
    np.testing.assert_allclose(with_q, vqa_losses(scorer.model, data, np.arange(100, 400)), atol=1e-6)
    np.testing.assert_allclose(without_q, vqa_losses(scorer.model, data, np.arange(100, 400), question=False), atol=1e-6)
    with pytest.raises(InputError, match='not in the features'):
        scorer([{'id': 'missing', 'messages': []}])


def _records(data):
    kinds = data.kinds
    return [
        {
            'id': rid,
            'image': 'img.png',
            'meta': {'question_kind': str(kinds[i])},
            'messages': [{'role': 'user', 'content': '<image>\nq'}, {'role': 'assistant', 'content': 'a'}],
        }
        for i, rid in enumerate(data.ids)
    ]


def test_states_fn_gives_each_record_its_token_states(data, trained):
    records = _records(data)
    picked = [records[i] for i in (7, 3, 500)]
    states = vqa_states_fn(trained, data)(picked)
    lengths = data.question_lengths[data.question_index[[7, 3, 500]]]
    assert [s.shape for s in states] == [(16 + L, 64) for L in lengths]
    for got, want in zip(states, vqa_token_states(trained, data, [7, 3, 500])):
        np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(VQAStates(data, trained).embeddings(picked), vqa_embeddings(trained, data, [7, 3, 500]), atol=1e-6)
    with pytest.raises(InputError, match=r"ids \['ghost'\] are not in the features"):
        vqa_states_fn(trained, data)([records[3], {'id': 'ghost'}])
    with pytest.raises(InputError, match=r"ids \[None\]"):
        vqa_states_fn(trained, data)([{'messages': []}])
    with pytest.raises(InputError, match='only used to train a reference model'):
        VQAStates(data, trained, reference=[0, 1])


def test_states_fn_trains_its_reference_model_once(data):
    fn = VQAStates(data, reference=np.arange(200), steps=5, width=16)
    first = fn(_records(data)[:4])
    model = fn.model
    assert model.params['n_train'] == 200 and model.params['steps'] == 5
    assert [s.shape[1] for s in first] == [16] * 4
    fn(_records(data)[4:6])
    assert fn.model is model


def test_datatailor_on_real_easy_vqa_records():
    from datasel.models.assets import load_easy_vqa
    from datasel.pipelines import datatailor_from_records
    from datasel.models.vqa import vqa_features

    records = load_easy_vqa('train', max_records=1500)[::5]  # 300 questions about 150 pictures
    features = vqa_features(records, progress=False)
    model = train_vqa(features, steps=30, width=32, batch_size=64, seed=0)
    sel = datatailor_from_records(records, tasks='question_kind', budget=0.1, states_fn=vqa_states_fn(model, features))
    assert len(sel) == 30 and len(set(sel.indices.tolist())) == 30
    kinds = {r['meta']['question_kind'] for r in records}
    assert set(sel.info['task_names']) == kinds == {'shape', 'color', 'yes_no'}
    assert {records[i]['meta']['question_kind'] for i in sel.indices} == kinds
    assert (sel.info['task_budgets'] > 0).all() and np.isfinite(sel.per_pick['informativeness']).all()


@pytest.mark.slow
def test_easy_vqa_model_clearly_beats_the_majority_class():
    from datasel.models.assets import load_easy_vqa
    from datasel.models.vqa import vqa_features

    train = load_easy_vqa('train', max_records=2500)
    test = load_easy_vqa('test', max_records=600)
    train_f, test_f = vqa_features(train, progress=False), vqa_features(test, progress=False)
    assert train_f.images.shape[1:] == (16, 1280) and train_f.questions.shape[2] == 384
    model = train_vqa(train_f, epochs=10, width=64, batch_size=128, seed=0)
    result = vqa_accuracy(model, test_f)
    assert result['accuracy'] > result['majority_rate'] + 0.25, result
    with_q, without_q = vqa_irs_losses(model, test_f)
    assert with_q.mean() < without_q.mean()
