"""The experiment toolkit's comparison rule, intervals and schema on synthetic data whose answer is known."""

import json
import numpy as np
import pytest

from datasel.core import InputError
from datasel.experiments import (
    choose_arms,
    compare,
    control_result,
    correlation_ci,
    cluster_losses,
    corrupt_answers,
    duplicate_rows,
    judge,
    make_results,
    mean_ci,
    paired_difference,
    paired_r_difference,
    positive_control,
    REFUSAL,
    resolve_sizes,
    retest_reliability,
    save_results,
    validate_results,
    verdict,
    VERDICTS,
)

SEEDS = 6


def arms(effect, sd_seed=0.05, sd_noise=0.01, seed=0):
    "Two arms sharing a per-seed component (what pairing removes), the arm higher by `effect`."
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, sd_seed, SEEDS)
    return 0.5 + shared + effect + rng.normal(0, sd_noise, SEEDS), 0.5 + shared + rng.normal(0, sd_noise, SEEDS)


def test_a_real_effect_is_reproduced_and_a_reversed_one_refuted():
    arm, base = arms(0.05)
    assert compare('arm beats base', arm, base, 'x')['verdict'] == 'reproduced'
    assert compare('arm below base', arm, base, 'x', direction=-1)['verdict'] == 'refuted'
    assert compare('base beats arm', base, arm, 'x')['verdict'] == 'refuted'


def test_pairing_sees_an_effect_smaller_than_the_seed_spread():
    arm, base = arms(0.02, sd_seed=0.2, sd_noise=0.005)
    row = compare('arm beats base', arm, base, 'x')
    assert row['verdict'] == 'reproduced'
    unpaired = compare('arm beats base', arm, np.random.default_rng(5).permutation(base), 'x')
    assert unpaired['ci95'][1] - unpaired['ci95'][0] > 5 * (row['ci95'][1] - row['ci95'][0])


def test_noise_is_mostly_inconclusive():
    verdicts = [compare('x', *arms(0.0, seed=s), 'x')['verdict'] for s in range(400)]
    assert set(verdicts) <= {'reproduced', 'refuted', 'inconclusive'}
    assert 0.90 < verdicts.count('inconclusive') / len(verdicts) < 0.99


def test_a_blind_control_makes_every_verdict_instrument_blind():
    blind = control_result('duplicates', [0.50, 0.51, 0.49, 0.50], [0.50, 0.50, 0.50, 0.51])
    assert blind['detected'] is False
    for effect in (0.05, -0.05, 0.0):
        assert compare('x', *arms(effect), 'x', control=blind)['verdict'] == 'instrument blind'
    seen = control_result('duplicates', [0.40, 0.41, 0.39, 0.40], [0.50, 0.50, 0.50, 0.51])
    assert seen['detected'] is True and seen['effect'] < 0
    assert compare('x', *arms(-0.05), 'x', control=seen)['verdict'] == 'refuted'
    # a control whose effect has the wrong sign is not detected
    assert control_result('x', [0.6, 0.61, 0.6], [0.5, 0.5, 0.51])['detected'] is False


@pytest.mark.parametrize('method', ['t', 'bootstrap'])
def test_interval_coverage_is_about_95_percent(method):
    rng = np.random.default_rng(1)
    reps, n = (1500, 8) if method == 't' else (400, 12)
    covered = 0
    for r in range(reps):
        d = 0.3 + rng.normal(0, 1, n)
        lo, hi = paired_difference(d, np.zeros(n), method=method, n_boot=500, seed=r)['ci95']
        covered += lo <= 0.3 <= hi
    low = 0.93 if method == 't' else 0.85  # the percentile bootstrap undercovers a little with few seeds
    assert low < covered / reps < 0.975, covered / reps


def test_bootstrap_interval_of_r_covers_the_true_r():
    rng = np.random.default_rng(2)
    true_r, hits, reps = 0.6, 0, 80
    for r in range(reps):
        x = rng.normal(size=40)
        y = true_r * x + np.sqrt(1 - true_r**2) * rng.normal(size=40)
        lo, hi = correlation_ci(x, y, n_boot=300, seed=r)['ci95']
        hits += lo <= true_r <= hi
    assert hits / reps > 0.85, hits / reps


def test_within_group_correlation_ignores_between_group_steps():
    rng = np.random.default_rng(3)
    size = np.repeat([0, 1, 2], 12)
    x, y = rng.normal(size=36) + 5 * size, rng.normal(size=36) + 5 * size
    assert correlation_ci(x, y)['r'] > 0.9
    within = correlation_ci(x, y, groups=size)
    assert abs(within['r']) < 0.5 and within['ci95'][0] < 0.5


def test_paired_r_difference_prefers_the_better_metric():
    rng = np.random.default_rng(4)
    y = rng.normal(size=50)
    d = paired_r_difference(y + 0.3 * rng.normal(size=50), y + 3 * rng.normal(size=50), y, kind='spearman')
    assert d['difference'] > 0 and d['ci95'][0] > 0
    same = paired_r_difference(y + rng.normal(size=50), y + rng.normal(size=50), y)
    assert same['ci95'][0] < 0 < same['ci95'][1]


def test_retest_reliability_separates_signal_from_seed_noise():
    rng = np.random.default_rng(5)
    signal = retest_reliability(rng.normal(size=(30, 1)) + 0.3 * rng.normal(size=(30, 4)))
    assert signal['ci95'][0] > 0.5 and signal['spearman_brown'] > signal['r']
    noise = retest_reliability(rng.normal(size=(30, 4)))
    assert noise['ci95'][0] < 0 < noise['ci95'][1]


def test_positive_control_runs_both_arms_with_the_same_seeds():
    calls = []

    def run(rows, seed):
        calls.append(seed)
        return len(set(np.asarray(rows).tolist())) / 64 + np.random.default_rng(seed).normal(0, 0.01)

    c = positive_control('16 distinct x 4', run, lambda s: np.arange(64), lambda s: duplicate_rows(np.arange(64), 16, s), seeds=[0, 1, 2])
    assert c['detected'] and abs(c['effect'] + 0.75) < 1e-9
    assert calls == [0, 1, 2, 0, 1, 2]


def test_corrupted_answers_are_flagged_and_the_rest_untouched():
    recs = [
        {
            'id': i,
            'messages': [{'role': 'user', 'content': f'q{i}'}, {'role': 'assistant', 'content': f'the answer to q{i} has several words'}],
        }
        for i in range(40)
    ]
    bad, flags = corrupt_answers(recs, 0.25, seed=1)
    assert (flags != '').sum() == 10
    for r, b, f in zip(recs, bad, flags):
        assert (r['messages'] == b['messages']) == (f == '')
    assert corrupt_answers(recs, 0.25, seed=1)[1].tolist() == flags.tolist()


def test_refusal_corruption_is_one_canned_reply():
    recs = [
        {'id': i, 'messages': [{'role': 'user', 'content': f'q{i}'}, {'role': 'assistant', 'content': f'answer {i}'}]} for i in range(20)
    ]
    bad, flags = corrupt_answers(recs, 0.5, seed=3, kinds=['refusal'])
    assert set(flags) == {'', 'refusal'} and (flags == 'refusal').sum() == 10
    assert {b['messages'][1]['content'] for b, f in zip(bad, flags) if f} == {REFUSAL}
    assert all(b['meta']['corruption'] == 'refusal' for b, f in zip(bad, flags) if f)
    assert [b['messages'][1]['content'] for b, f in zip(bad, flags) if not f] == [
        r['messages'][1]['content'] for r, f in zip(recs, flags) if not f
    ]
    for kinds in ('refusal', [], ['refused']):  # a bare string, nothing, an unknown kind
        with pytest.raises(InputError, match='kinds'):
            corrupt_answers(recs, 0.5, kinds=kinds)


def test_cluster_losses_macro_and_worst():
    r = cluster_losses([1, 1, 1, 1, 5, 3], [0, 0, 0, 0, 1, 2], worst_share=0.34)
    assert r['macro_loss'] == pytest.approx(3.0) and r['worst_loss'] == pytest.approx(4.0)
    assert r['mean_loss'] == pytest.approx(2.0)


def test_results_schema_strict_json_and_validation(tmp_path):
    ctrl = control_result('dup', [0.4, 0.41, 0.39], [0.5, 0.52, 0.51])
    claim = judge('r > 0', 0.97, 0.5, [0.2, 0.7], 30, control=ctrl)
    res = make_results('cpu', 0, [ctrl], [claim], extra=float('inf'))
    text = save_results(tmp_path, res).read_text()
    assert 'Infinity' not in text and json.loads(text)['extra'] is None
    assert validate_results(json.loads(text))['claims'][0]['verdict'] in VERDICTS
    with pytest.raises(InputError, match='verdict'):
        validate_results({**res, 'claims': [{**claim, 'verdict': 'yes'}]})
    with pytest.raises(InputError, match='ci95'):
        validate_results({**res, 'controls': [{**ctrl, 'ci95': [1.0, 0.0]}]})
    with pytest.raises(InputError, match='instrument blind'):
        validate_results({**res, 'controls': [], 'claims': [{**claim, 'verdict': 'refuted'}]})
    assert not (tmp_path / 'bad.json').exists()


def test_bad_inputs_name_the_argument():
    with pytest.raises(InputError, match='same length'):
        paired_difference([1, 2, 3], [1, 2])
    with pytest.raises(InputError, match='method'):
        mean_ci([1.0, 2.0], method='z')
    with pytest.raises(InputError, match='direction'):
        verdict([0, 1], direction=0)
    with pytest.raises(InputError, match='scale'):
        resolve_sizes('huge', {'ci': {}})


def test_choose_arms_keeps_the_experiments_order_and_names_what_is_wrong():
    every = ['Random', 'kMQ (IFD)', 'QDIT (IFD)', 'k-Center']
    assert choose_arms('all', every) == every and choose_arms(None, every) == every
    assert choose_arms(['k-Center', 'kMQ (IFD)'], every) == ['kMQ (IFD)', 'k-Center']
    assert choose_arms('QDIT (IFD)', every) == ['QDIT (IFD)']
    with pytest.raises(InputError, match=r"arms: \['kmq'\] not in this experiment"):
        choose_arms(['kmq', 'Random'], every)
    with pytest.raises(InputError, match='tracks: empty'):
        choose_arms([], ['text', 'vision'], what='tracks')


def test_instruments_give_the_same_numbers_on_a_second_run():
    "Same records, same seed: the text and vision instruments repeat their scores exactly; another seed changes them."
    from datasel.experiments import TextInstrument, VisionInstrument, sharegpt_split
    from datasel.models.assets import load_causal_lm, load_easy_vqa
    from datasel.models.vqa import vqa_features

    pool, heldout = sharegpt_split(8, 4)
    lm, tokenizer = load_causal_lm(None, progress=False)
    text = TextInstrument(lm, tokenizer, heldout, [0, 0, 1, 1], epochs=1, max_tokens=16, batch_size=4)
    first, second, other = text.run(pool, 0), text.run(pool, 0), text.run(pool, 1)
    assert first['per_cluster'] == second['per_cluster'] and first['performance'] == second['performance']
    assert other['performance'] != first['performance']

    records = load_easy_vqa('train', max_records=120)
    features = vqa_features(records, progress=False)
    vision = VisionInstrument(features, features, steps=6, width=16, batch_size=16)
    rows = np.arange(60)
    a, b, c = vision.run(rows, 0), vision.run(rows, 0), vision.run(rows, 1)
    assert a['accuracy'] == b['accuracy'] and a['per_kind'] == b['per_kind']
    assert (c['accuracy'], c['per_kind']) != (a['accuracy'], a['per_kind'])
