"""datasel.geometry.budget: exact sums, caps, largest-remainder rounding against an independent exact reference, and the
official PreSel / kMQ / DataTailor roundings on the golden cases."""

import json
from fractions import Fraction
import numpy as np
import pytest

from datasel.core import InputError
from datasel.geometry.budget import split_budget, softmax, presel_task_budgets, presel_cluster_budgets, equal_budgets, truncated_budgets


def reference_split(total, weights, caps):
    "Water filling + Hamilton rounding in exact rational arithmetic (ties to the lower index)."
    w = [Fraction(x) for x in weights]
    alloc = [0] * len(w)
    active = [i for i in range(len(w)) if w[i] > 0 and caps[i] > 0]
    remaining = total
    if remaining >= sum(caps[i] for i in active) and sum(caps[i] for i in active) == sum(caps):
        return [int(c) for c in caps]
    while active:
        W = sum(w[i] for i in active)
        full = [i for i in active if caps[i] <= remaining * w[i] / W]
        if not full:
            break
        for i in full:
            alloc[i] = int(caps[i])
            remaining -= int(caps[i])
        active = [i for i in active if i not in full]
        if remaining <= 0:
            return alloc
    if not active:
        return alloc
    W = sum(w[i] for i in active)
    quotas = {i: remaining * w[i] / W for i in active}
    for i in active:
        alloc[i] = int(quotas[i])  # floor (quotas >= 0)
    left = remaining - sum(alloc[i] for i in active)
    for i in sorted(active, key=lambda i: (-(quotas[i] - int(quotas[i])), i))[:left]:
        alloc[i] += 1
    return alloc


@pytest.mark.parametrize('seed', range(300))
def test_proportional_matches_exact_reference(seed):
    rng = np.random.default_rng(seed)
    G = int(rng.integers(1, 12))
    sizes = rng.integers(0, 30, size=G)
    if sizes.sum() == 0:
        sizes[0] = 1
    total = int(rng.integers(0, sizes.sum() + 5))
    got = split_budget(total, sizes=sizes)
    assert got.dtype == np.int64
    assert got.sum() == min(total, sizes.sum())
    assert (got >= 0).all() and (got <= sizes).all()
    assert got.tolist() == reference_split(total, sizes.tolist(), sizes.tolist())


@pytest.mark.parametrize('seed', range(200))
def test_weights_with_caps_random(seed):
    rng = np.random.default_rng(1000 + seed)
    G = int(rng.integers(1, 10))
    w = softmax(rng.normal(size=G) * 2)
    sizes = rng.integers(0, 40, size=G)
    total = int(rng.integers(0, max(1, sizes.sum()) + 10))
    got = split_budget(total, sizes=sizes, weights=w, mode='weights')
    assert got.sum() == min(total, sizes.sum())
    assert (got <= sizes).all() and (got >= 0).all()
    assert got.tolist() == reference_split(total, w.tolist(), sizes.tolist())
    uncapped = split_budget(total, weights=w, mode='weights')
    assert uncapped.sum() == total
    q = total * w
    assert (np.abs(uncapped - q) < 1).all()  # each share within one item of its quota


@pytest.mark.parametrize('seed', range(100))
def test_equal_mode_and_no_redistribution(seed):
    rng = np.random.default_rng(5000 + seed)
    sizes = rng.integers(0, 20, size=int(rng.integers(1, 9)))
    total = int(rng.integers(0, 80))
    eq = split_budget(total, sizes=sizes, mode='equal')
    assert eq.sum() == min(total, sizes.sum()) and (eq <= sizes).all()
    assert eq.tolist() == reference_split(total, [1] * len(sizes), sizes.tolist())
    # uncapped groups differ by at most one item
    free = eq < sizes
    if free.sum() > 1:
        assert eq[free].max() - eq[free].min() <= 1
    lost = split_budget(total, sizes=sizes, mode='equal', redistribute=False)
    assert lost.tolist() == np.minimum(split_budget(total, caps=[total] * len(sizes), mode='equal'), sizes).tolist()
    assert lost.sum() <= eq.sum()


def test_split_budget_examples_and_ties():
    assert split_budget(7, sizes=[4, 4, 4]).tolist() == [3, 2, 2]  # 7/3 each: the lower index wins the tie
    assert split_budget(2, sizes=[1, 1, 1, 1]).tolist() == [1, 1, 0, 0]
    assert split_budget(10, sizes=[1, 100, 100], mode='equal').tolist() == [1, 5, 4]
    assert split_budget(9, sizes=[3, 6, 9]).tolist() == [2, 3, 4]  # 1.5, 3, 4.5: the .5 tie goes to index 0
    assert split_budget(5, caps=[2, 2, 2], mode='equal').tolist() == [2, 2, 1]
    # surplus over a cap goes to the others by their weights
    assert split_budget(10, sizes=[1, 50, 50], weights=[0.8, 0.1, 0.1], mode='weights').tolist() == [1, 5, 4]
    # zero-weight groups take what the weighted ones cannot hold, so the sum stays exact
    assert split_budget(6, sizes=[2, 10], weights=[1, 0], mode='weights').tolist() == [2, 4]
    assert split_budget(4, sizes=[0, 3]).tolist() == [0, 3]
    assert split_budget(100, sizes=[5, 3]).tolist() == [5, 3]
    assert split_budget(3, sizes=[5, 5], caps=[1, 9]).tolist() == [1, 2]  # caps and sizes: the smaller binds


def test_split_budget_errors():
    with pytest.raises(InputError, match='total: expected a non-negative int'):
        split_budget(-1, sizes=[1])
    with pytest.raises(InputError, match='total'):
        split_budget(2.5, sizes=[1, 2])
    with pytest.raises(InputError, match='sizes: expected values >= 0'):
        split_budget(2, sizes=[3, -1])
    with pytest.raises(InputError, match='sizes: no groups'):
        split_budget(2, sizes=[])
    with pytest.raises(InputError, match='weights: contains NaN'):
        split_budget(2, weights=[1, np.nan], mode='weights')
    with pytest.raises(InputError, match='weights: expected 2 values'):
        split_budget(2, sizes=[1, 1], weights=[1, 1, 1], mode='weights')
    with pytest.raises(InputError, match='caps: expected 2 values'):
        split_budget(2, sizes=[1, 1], caps=[1])
    with pytest.raises(InputError, match='all weights are 0'):
        split_budget(2, weights=[0, 0], mode='weights')
    with pytest.raises(InputError, match='weights: expected values >= 0'):
        split_budget(2, weights=[1, -1], mode='weights')
    with pytest.raises(InputError, match="mode"):
        split_budget(2, sizes=[1], mode='largest')
    with pytest.raises(InputError, match='needs the group sizes'):
        split_budget(2, weights=[1, 1])
    with pytest.raises(InputError, match='capacity 3'):
        split_budget(4, sizes=[1, 2], strict=True)
    with pytest.raises(InputError, match='whole numbers'):
        split_budget(2, sizes=[1.5, 2])
    assert split_budget(2.0, sizes=[1, 2]).sum() == 2  # an integral float is accepted


def test_softmax():
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(softmax(x), np.exp(x) / np.exp(x).sum())
    np.testing.assert_allclose(softmax([710.0, 710.0]), [0.5, 0.5])  # exp(710) overflows without the shift
    np.testing.assert_allclose(softmax(x, temperature=2), np.exp(x / 2) / np.exp(x / 2).sum())
    with pytest.raises(InputError, match='temperature'):
        softmax(x, temperature=-1)
    with pytest.raises(InputError, match='NaN'):
        softmax([1, np.nan])
    with pytest.raises(InputError, match='non-empty'):
        softmax([])


def test_presel_task_budgets_golden(golden):
    irs = json.loads((golden / 'presel_task_irs.json').read_text())
    rounds = json.loads((golden / 'presel_task_budgets.json').read_text())['rounds']
    w = softmax(-np.asarray(irs['task_mean_irs']), temperature=irs['tau'])
    for rnd in ('2', '3', '4'):
        np.testing.assert_allclose(w, rounds[rnd]['softmax_weights'], rtol=1e-12)
        got = presel_task_budgets(w, rounds[rnd]['N'])
        assert got.tolist() == rounds[rnd]['budget_inline_kmeans_clust_main'], rnd
        assert got.sum() == rounds[rnd]['N']
        # the general rule is a different (and documented) choice
        assert split_budget(rounds[rnd]['N'], weights=w, mode='weights').sum() == rounds[rnd]['N']


def test_presel_task_budgets_rule():
    assert presel_task_budgets([0.25, 0.25, 0.5], 7).tolist() == [1, 1, 5]  # floors 1,1,3; remainder 2 to argmax
    assert presel_task_budgets([1.0], 3).tolist() == [3]
    with pytest.raises(InputError, match='sum to 1'):
        presel_task_budgets([0.2, 0.2], 10)
    with pytest.raises(InputError, match='NaN'):
        presel_task_budgets([np.nan, 1], 10)
    with pytest.raises(InputError, match='total'):
        presel_task_budgets([0.5, 0.5], -3)


def test_presel_cluster_budgets_golden(golden):
    labels = np.load(golden / 'presel_kmeans_labels.npy')
    tasks = np.load(golden / 'presel_task_labels.npy')
    ref = set(np.load(golden / 'presel_reference_set.npy').tolist())
    sel = json.loads((golden / 'presel_selected.json').read_text())
    available = np.array([i not in ref for i in range(len(tasks))])
    for t, budget in enumerate(sel['task_budget']):
        members = tasks == t
        C = sel['n_clusters'][str(t)]
        total_sizes = np.bincount(labels[members], minlength=C)
        avail_sizes = np.bincount(labels[members & available], minlength=C)
        got = presel_cluster_budgets(avail_sizes, total_sizes, budget)
        picked = np.array(sel['selected_per_task'][str(t)])
        expected = np.bincount(labels[picked], minlength=C)
        assert got.tolist() == expected.tolist(), t
        assert got.sum() == budget and (got <= avail_sizes).all()


def test_presel_cluster_budgets_repairs():
    # deficit: 2.5 -> 2 (banker's rounding) for both, +1 to the larger total size
    assert presel_cluster_budgets([5, 5], [6, 9], 5).tolist() == [2, 3]
    assert presel_cluster_budgets([5, 5], [6, 6], 5).tolist() == [3, 2]  # equal sizes: label order
    assert presel_cluster_budgets([3, 3], [3, 3], 3).tolist() == [1, 2]  # 1.5 -> 2 twice: surplus off label 0 (ties)
    # surplus: 1.5 -> 2 four times = 8 > 6; -1 from the two smallest clusters
    assert presel_cluster_budgets([3, 3, 3, 3], [9, 4, 7, 5], 6).tolist() == [2, 1, 2, 1]
    # Python round: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2; the deficit of 1 goes to the largest cluster
    assert presel_cluster_budgets([1, 3, 5, 1], [1, 3, 5, 1], 5).tolist() == [0, 2, 3, 0]
    # the largest cluster (by total size) is full: the +1 passes on to the next one
    assert presel_cluster_budgets([1, 4, 4, 4], [50, 4, 4, 4], 8).tolist() == [1, 3, 2, 2]


def test_presel_cluster_budgets_one_pass_under_repair():
    # the task budget (PreSel's ignores task size) exceeds the available rows: quotas 2.5 round to 2 and are capped at
    # 1 row each; the deficit of 3 is larger than the 2 clusters, the single pass adds nothing, the sum stays short
    got = presel_cluster_budgets([1, 1], [5, 5], 5)
    assert got.tolist() == [1, 1] and got.sum() == 2
    got = presel_cluster_budgets([1, 1, 1, 1, 1, 2], [3, 3, 3, 3, 3, 4], 10)  # 10/7 -> 1 each, 20/7 -> 3 capped at 2
    assert got.tolist() == [1, 1, 1, 1, 1, 2] and got.sum() == 7
    # when the budget fits, rounding leaves at most C/2 to repair and one pass always suffices
    rng = np.random.default_rng(0)
    for _ in range(300):
        avail = rng.integers(0, 30, size=int(rng.integers(1, 12)))
        if avail.sum() == 0:
            continue
        budget = int(rng.integers(0, avail.sum() + 1))
        got = presel_cluster_budgets(avail, avail + rng.integers(0, 5, size=len(avail)), budget)
        assert got.sum() == budget and (got <= avail).all() and (got >= 0).all()
    got = presel_cluster_budgets([10] * 5, [10] * 5, 10)
    assert got.tolist() == [2] * 5
    got = presel_cluster_budgets([100, 1, 1, 1, 1, 1, 1, 1, 1, 1], [100] + [1] * 9, 12)  # 11.01 -> 11, 0.11 -> 0
    assert got.tolist() == [12] + [0] * 9
    got = presel_cluster_budgets([3, 3, 3], [3, 3, 3], 8)  # 2.67 -> 3 each: surplus off label 0
    assert got.tolist() == [2, 3, 3]
    got = presel_cluster_budgets([2, 2, 2, 2], [2, 2, 2, 2], 2)  # 0.5 -> 0 each, deficit 2 -> labels 0, 1
    assert got.tolist() == [1, 1, 0, 0]
    got = presel_cluster_budgets([10, 10, 1, 1, 1, 1], [10, 10, 1, 1, 1, 1], 20)  # 8.33 -> 8, 0.83 -> 1: exact
    assert got.tolist() == [8, 8, 1, 1, 1, 1]


def test_presel_cluster_budgets_more_cases():
    got = presel_cluster_budgets([6, 6, 6], [6, 6, 6], 16)  # 5.33 -> 5 each = 15, +1 to label 0
    assert got.tolist() == [6, 5, 5]
    avail = [1] * 8 + [30]
    got = presel_cluster_budgets(avail, [1] * 8 + [30], 20)  # 0.53 -> 1 x8, 15.8 -> 16: 24 > 20: surplus
    assert got.sum() == 20
    short = presel_cluster_budgets([4, 4], [4, 4], 12)  # more than the clusters hold: capped, short
    assert short.tolist() == [4, 4]
    with pytest.raises(InputError, match='total_sizes: expected 2 values'):
        presel_cluster_budgets([1, 2], [1], 2)
    with pytest.raises(InputError, match='available_sizes: no groups'):
        presel_cluster_budgets([], [], 2)
    with pytest.raises(InputError, match='task_budget'):
        presel_cluster_budgets([1], [1], -2)


def test_equal_budgets_kmq_rule():
    assert equal_budgets([10, 2, 7], 15).tolist() == [5, 2, 5]  # int(15/3) = 5, small cluster keeps 2: total 12
    assert equal_budgets([10, 10, 10, 10], 7).tolist() == [1, 1, 1, 1]
    assert equal_budgets([3], 0).tolist() == [0]
    rng = np.random.default_rng(0)
    for _ in range(50):
        sizes = rng.integers(0, 50, size=int(rng.integers(1, 20)))
        total = int(rng.integers(0, 500))
        assert equal_budgets(sizes, total).tolist() == [min(int(total / len(sizes)), int(s)) for s in sizes]
    with pytest.raises(InputError, match='sizes: no groups'):
        equal_budgets([], 3)
    with pytest.raises(InputError, match='total'):
        equal_budgets([1], -3)


def test_truncated_budgets_datatailor_golden(golden):
    dt = json.loads((golden / 'dt_task_budgets.json').read_text())
    shares = np.asarray(dt['final_num_cho'], dtype=np.float32)
    got = truncated_budgets(shares)
    assert got.tolist() == dt['task_budget_int'] and got.dtype == np.int64
    # the shares come from a_t = |T_t| * mean(tau_t)^2, ratio 0.15 of 900
    tau, tasks = np.load(golden / 'dt_tau.npy'), np.load(golden / 'dt_task_labels.npy')
    a = np.array([(tasks == t).sum() * tau[tasks == t].astype(np.float64).mean() ** 2 for t in range(3)])
    assert truncated_budgets(0.15 * 900 * a / a.sum()).tolist() == dt['task_budget_int']
    assert truncated_budgets([2.999, 0.0, 7]).tolist() == [2, 0, 7]
    with pytest.raises(InputError, match='shares: expected values >= 0'):
        truncated_budgets([1.0, -0.5])
    with pytest.raises(InputError, match='shares: contains NaN'):
        truncated_budgets([np.nan])
