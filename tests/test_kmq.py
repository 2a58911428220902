"""kMQ, iterative kMQ and choose_k: per-cluster counts, the official code's preset, Eq. 6, and bad inputs."""
import numpy as np
import pandas as pd
import pytest
from datasel.core import InputError
from datasel.geometry.budget import split_budget, softmax
from datasel.selectors.kmq import (kmq, iterative_kmq, choose_k, reweight_clusters, positive_scores, cluster_budgets,
                         draw_from_cluster, default_num_clusters)


def blobs(n=500, k=5, d=8, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 6
    sizes = rng.multinomial(n, rng.dirichlet(np.full(k, 2.0)))
    comp = np.repeat(np.arange(k), sizes)
    return (centers[comp] + spread * rng.normal(size=(n, d))).astype(np.float32), comp


X, COMP = blobs()
Q = np.random.default_rng(1).normal(size=len(X)) * 2
LABELS = np.repeat(np.arange(6), [120, 80, 60, 25, 9, 6])   # 300 items in six clusters of very different size
QL = np.random.default_rng(2).normal(size=len(LABELS))


def per_cluster(sel, labels, multiset=False):
    idx = np.repeat(sel.indices, sel.info['counts']) if multiset else sel.indices
    return np.bincount(labels[idx], minlength=labels.max() + 1)


@pytest.mark.parametrize('budget', [1, 7, 50, 123, 300])
def test_proportional_counts_exact_without_replacement(budget):
    sel = kmq(None, budget, QL, labels=LABELS, replace=False, seed=3)
    expected = split_budget(budget, sizes=np.bincount(LABELS))
    assert len(sel) == budget == len(set(sel.indices.tolist()))
    np.testing.assert_array_equal(per_cluster(sel, LABELS), expected)
    np.testing.assert_array_equal(sel.info['cluster_budgets'], expected)


@pytest.mark.parametrize('budget', [10, 60, 200])
def test_proportional_counts_exact_with_replacement(budget):
    sel = kmq(None, budget, QL, labels=LABELS, replace=True, seed=4)
    expected = split_budget(budget, sizes=np.bincount(LABELS))
    assert sel.info['counts'].sum() == budget == sel.info['draws']
    np.testing.assert_array_equal(per_cluster(sel, LABELS, multiset=True), expected)
    assert len(set(sel.indices.tolist())) == len(sel) <= budget      # duplicates are counted, not repeated
    assert np.all(sel.info['counts'] >= 1)


@pytest.mark.parametrize('budget', [12, 90, 250])
def test_equal_split_counts(budget):
    sizes = np.bincount(LABELS)
    sel = kmq(None, budget, QL, labels=LABELS, budget_split='equal', replace=False, seed=0)
    expected = split_budget(budget, sizes=sizes, mode='equal')
    assert np.all(expected <= sizes) and expected.sum() == budget
    np.testing.assert_array_equal(per_cluster(sel, LABELS), expected)
    sel = kmq(None, budget, QL, labels=LABELS, budget_split='equal', replace=True, seed=0)
    np.testing.assert_array_equal(per_cluster(sel, LABELS, multiset=True), split_budget(budget, caps=np.full(6, budget), mode='equal'))


def official_kmq_counts(labels, budget):
    "The official KMenasRandomDeita loop's per-cluster sizes: min(int(b/K), |cluster|) for every cluster."
    K = labels.max() + 1
    return np.array([min(int(budget / K), int((labels == i).sum())) for i in range(K)])


@pytest.mark.parametrize('budget', [5, 30, 60, 100, 300])
def test_reference_reproduces_official_counts(budget):
    sel = kmq(None, budget, QL, labels=LABELS, reference=True, seed=1)
    official = official_kmq_counts(LABELS, budget)
    np.testing.assert_array_equal(per_cluster(sel, LABELS), official)
    assert len(sel) == official.sum() and sel.info['shortfall'] == budget - official.sum()
    assert 'counts' not in sel.info                                   # without replacement
    np.testing.assert_array_equal(sel.scores, np.trunc(QL[sel.indices]))


def test_reference_counts_after_kmeans():
    sel = kmq(X, 100, Q, k=5, reference=True, niter=10, nredo=1, seed=0)
    np.testing.assert_array_equal(per_cluster(sel, sel.info['labels']), official_kmq_counts(sel.info['labels'], 100))
    assert sel.info['params']['budget_split'] == 'equal_floor' and sel.info['params']['replace'] is False


def test_integer_truncation_changes_probabilities():
    labels, q = np.zeros(2, dtype=int), np.array([3.9, 3.1])
    picks = {mode: np.array([kmq(None, 1, q, labels=labels, replace=False, seed=s, **kw).indices[0] for s in range(1500)])
             for mode, kw in [('paper', {}), ('reference', {'reference': True})]}
    assert abs((picks['reference'] == 0).mean() - 0.5) < 0.05          # trunc: 3 vs 3, equally likely
    p0 = softmax(q)[0]                                                 # e^0.8 / (1 + e^0.8) = 0.69
    assert abs((picks['paper'] == 0).mean() - p0) < 0.05
    assert kmq(None, 1, q, labels=labels, replace=False, truncate_quality=True, seed=0).scores[0] == 3.0


def test_huge_scores_do_not_overflow():
    q = np.linspace(0, 5000, len(LABELS))                              # exp(q) overflows beyond 709
    for replace in (True, False):
        sel = kmq(None, 30, q, labels=LABELS, replace=replace, seed=0)
        assert np.isfinite(sel.scores).all() and len(sel) > 0
    sel = kmq(None, 60, q, labels=LABELS, replace=False, temperature=1e-3, seed=0)
    for j in range(6):                                                 # T -> 0: the best items of every cluster
        members = np.flatnonzero(LABELS == j)
        took = sel.indices[LABELS[sel.indices] == j]
        np.testing.assert_array_equal(np.sort(took), np.sort(members[np.argsort(-q[members])[:len(took)]]))


def test_draw_matches_softmax_frequencies():
    rng = np.random.default_rng(0)
    q = np.array([1.0, 0.0, -1.0, 2.0])
    draws = draw_from_cluster(np.arange(4), 40000, q, 2.0, True, rng)
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 40000, softmax(q, 2.0), atol=0.01)
    firsts = np.array([draw_from_cluster(np.arange(4), 1, q, 2.0, False, rng)[0] for _ in range(20000)])
    np.testing.assert_allclose(np.bincount(firsts, minlength=4) / 20000, softmax(q, 2.0), atol=0.015)


def test_deterministic_and_uniform_without_quality():
    a, b = kmq(X, 40, Q, k=5, seed=7), kmq(X, 40, Q, k=5, seed=7)
    np.testing.assert_array_equal(a.indices, b.indices)
    flat = kmq(X, 40, None, k=5, replace=False, seed=7)
    assert flat.scores is None and len(flat) == 40


def test_bad_inputs():
    with pytest.raises(InputError, match='k: expected a number of clusters in 1..500'): kmq(X, 10, Q, k=501)
    with pytest.raises(InputError, match='quality: expected 500 values'): kmq(X, 10, Q[:-1], k=5)
    bad = Q.copy(); bad[[3, 9]] = np.nan
    with pytest.raises(InputError, match=r'quality: 2 value\(s\) are NaN'): kmq(X, 10, bad, k=5)
    with pytest.raises(InputError, match='budget: 501 is out of range'): kmq(X, 501, Q, k=5)
    with pytest.raises(InputError, match='temperature'): kmq(X, 10, Q, k=5, temperature=-1)
    with pytest.raises(InputError, match='budget_split'): kmq(X, 10, Q, k=5, budget_split='sizes')
    with pytest.raises(InputError, match='labels: expected 500 values'): kmq(X, 10, Q, labels=LABELS)
    with pytest.raises(InputError, match='X: embeddings are needed'): kmq(None, 10, Q)
    assert isinstance(InputError('x'), ValueError)


def test_reference_with_more_clusters_than_budget_selects_nothing():
    sel = kmq(None, 5, QL, labels=LABELS, reference=True)            # int(5/6) = 0 per cluster, as in the code
    assert len(sel) == 0 and sel.info['shortfall'] == 5


def test_eq6_hand_computed():
    w0 = np.full(4, 0.25)
    w1 = reweight_clusters(w0, [2.0, 1.0, 1.0, 4.0])                   # s / sum(s) = [.25, .125, .125, .5]
    np.testing.assert_allclose(w1, [0.0625, 0.03125, 0.03125, 0.125])
    w2 = reweight_clusters(w1, [1.0, 1.0, 1.0, 1.0])                   # equal scores: a quarter of each weight
    np.testing.assert_allclose(w2, w1 / 4)
    np.testing.assert_allclose(reweight_clusters(w1, [3.0, 0.0, 1.0, 2.0], rule='softmax'), softmax([3.0, 0.0, 1.0, 2.0]))


def test_negative_cluster_scores():
    s = np.array([-2.0, 0.5, 1.0, 4.0])
    shifted = positive_scores(s)                                       # s - min + 0.05 * max|s|
    np.testing.assert_allclose(shifted, [0.2, 2.7, 3.2, 6.2])
    np.testing.assert_allclose(positive_scores(s, 'clip'), [0.2, 0.5, 1.0, 4.0])
    np.testing.assert_allclose(positive_scores([1.0, 2.0]), [1.0, 2.0])  # all positive: unchanged (Eq. 6 as written)
    w = reweight_clusters(np.full(4, 0.25), s)
    assert np.all(w > 0) and np.argmax(w) == 3
    with pytest.raises(InputError, match='positive'): positive_scores(s, 'error')
    with pytest.raises(InputError, match='negative'): positive_scores(s, 'abs')


def test_iterative_records_and_eq6():
    labels = COMP
    hard = np.arange(labels.max() + 1, dtype=float)                    # cluster j scores j + 1
    seen = []
    def train_fn(selected): seen.append(selected.copy()); return len(selected)
    def score_fn(state, selected):
        assert state == len(selected)
        return hard[labels[selected]] + 1
    sel = iterative_kmq(X, 120, 4, train_fn, score_fn, quality=Q, labels=labels, seed=0)
    rec = sel.info['iterations']
    assert [len(r['picked']) for r in rec] == [30, 30, 30, 30] and len(sel) == 120 == len(set(sel.indices.tolist()))
    assert [len(s) for s in seen] == [30, 60, 90]
    np.testing.assert_array_equal(np.concatenate([r['picked'] for r in rec]), sel.indices)
    for prev, nxt in zip(rec[:-1], rec[1:]):
        s = prev['cluster_scores']
        s = np.where(np.isnan(s), np.nanmean(s), s)
        np.testing.assert_allclose(nxt['weights'], s / s.sum() * prev['weights'])
        assert len(prev['scores']) == sum(len(r['picked']) for r in rec[:prev['iteration'] + 1])
    assert rec[-1]['scores'] is None                                    # no training after the last draw
    sizes = np.bincount(labels)
    np.testing.assert_array_equal(rec[0]['cluster_budgets'], split_budget(30, sizes=sizes))   # iteration 1 = kMQ
    late = np.bincount(labels[rec[-1]['picked']], minlength=len(sizes)) / sizes
    first = np.bincount(labels[rec[0]['picked']], minlength=len(sizes)) / sizes
    assert late[-1] > first[-1] and late[0] < first[0]                  # the hardest cluster gains weight


def test_iterative_softmax_and_reference():
    labels = LABELS
    score_fn = lambda state, sel: (labels[sel] == 5).astype(float) * 3
    soft = iterative_kmq(None, 60, 3, lambda s: None, score_fn, labels=labels, reweight='softmax', seed=0)
    s = soft.info['iterations'][0]['cluster_scores']
    s = np.where(np.isnan(s), np.nanmean(s), s)
    np.testing.assert_allclose(soft.info['iterations'][1]['weights'], softmax(s))
    ref = iterative_kmq(None, 60, 3, lambda s: None, score_fn, labels=labels, reference=True, seed=0)
    rec = ref.info['iterations']
    np.testing.assert_array_equal(rec[0]['cluster_budgets'], np.minimum(60 // 3 // 6, np.bincount(labels)))
    # the official repository's GitHub issue #8: only int(b/K/N) = 3 cluster draws per iteration; a drawn cluster with nothing left gives nothing (code's min)
    assert all(int(r['cluster_budgets'].sum()) <= 60 // 6 // 3 for r in rec[1:])
    assert len(ref) <= 18 + 2 * 3
    assert ref.scores is None and ref.info['shortfall'] == 60 - len(ref)


def test_iterative_cluster_emptied_during_sampling():
    labels = np.repeat([0, 1, 2], [4, 50, 50])
    favour = lambda state, sel: np.where(labels[sel] == 0, 50.0, 1.0)
    sel = iterative_kmq(None, 45, 3, lambda s: None, favour, labels=labels, budget_split='equal', seed=1)
    assert [len(r['picked']) for r in sel.info['iterations']] == [15, 15, 15]
    assert (labels[sel.indices] == 0).sum() == 4                          # cluster 0 ran dry; the others took its share
    assert sel.info['iterations'][0]['cluster_budgets'].tolist() == [4, 6, 5]
    whole = iterative_kmq(None, 104, 2, lambda s: None, favour, labels=labels, seed=1)
    assert len(whole) == 104 and whole.info['shortfall'] == 0


def test_iterative_bad_inputs():
    ok = lambda state, sel: np.ones(len(sel))
    with pytest.raises(InputError, match='iterations'): iterative_kmq(X, 10, 0, lambda s: 0, ok, k=3)
    with pytest.raises(InputError, match='iterations'): iterative_kmq(X, 10, 11, lambda s: 0, ok, k=3)
    with pytest.raises(InputError, match='callables'): iterative_kmq(X, 10, 2, None, ok, k=3)
    with pytest.raises(InputError, match='reweight'): iterative_kmq(X, 10, 2, lambda s: 0, ok, k=3, reweight='add')
    with pytest.raises(InputError, match=r'score_fn\(state, selected\): expected 5 values'):
        iterative_kmq(X, 10, 2, lambda s: 0, lambda st, sel: np.ones(3), k=3)
    with pytest.raises(InputError, match='NaN'):
        iterative_kmq(X, 10, 2, lambda s: 0, lambda st, sel: np.full(len(sel), np.nan), k=3)
    with pytest.raises(InputError, match='positive cluster scores'):
        iterative_kmq(X, 10, 2, lambda s: 0, lambda st, sel: -np.ones(len(sel)), k=3, negative='error')


def test_choose_k_finds_the_blobs():
    df = choose_k(X, [2, 3, 5, 8, 12], sample=300)
    assert isinstance(df, pd.DataFrame) and list(df.columns) == ['k', 'silhouette', 'inertia']
    assert df.attrs['best_k'] == 5
    assert df['silhouette'].between(-1, 1).all()
    with pytest.raises(InputError, match='2 <= k < n'): choose_k(X, [1, 5])
    with pytest.raises(InputError, match='2 <= k < n'): choose_k(X, [500])
    with pytest.raises(InputError, match='sample'): choose_k(X, [3], sample=1)


def test_small_helpers():
    assert default_num_clusters(100, 7) == 1 and default_num_clusters(50, 5000) == 50
    np.testing.assert_array_equal(cluster_budgets(np.array([10, 0, 5]), 6, 'equal', replace=True), [3, 0, 3])
    np.testing.assert_array_equal(cluster_budgets(np.array([10, 0, 5]), 9, 'equal_floor'), [3, 0, 3])
