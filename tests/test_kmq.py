"""kMQ, kM-Random, iterative kMQ and choose_k: per-cluster counts, distinct picks with draw counts, the official preset,
Eq. 6, memory-mapped pools, and bad inputs."""

import tracemalloc
import numpy as np
import pandas as pd
import pytest
from datasel.core import InputError
from datasel.geometry.budget import split_budget, softmax
from datasel.selectors.kmq import (
    kmq,
    kmeans_random,
    iterative_kmq,
    choose_k,
    reweight_clusters,
    positive_scores,
    cluster_budgets,
    draw_from_cluster,
    default_num_clusters,
)


def blobs(n=500, k=5, d=8, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 6
    sizes = rng.multinomial(n, rng.dirichlet(np.full(k, 2.0)))
    comp = np.repeat(np.arange(k), sizes)
    return (centers[comp] + spread * rng.normal(size=(n, d))).astype(np.float32), comp


X, COMP = blobs()
Q = np.random.default_rng(1).normal(size=len(X)) * 2
LABELS = np.repeat(np.arange(6), [120, 80, 60, 25, 9, 6])  # 300 items in six clusters of very different size
QL = np.random.default_rng(2).normal(size=len(LABELS))


def per_cluster(sel, labels):
    return np.bincount(labels[sel.indices], minlength=labels.max() + 1)


@pytest.mark.parametrize('replace', [False, True])
@pytest.mark.parametrize('budget', [1, 7, 50, 123, 300])
def test_proportional_counts_exact_and_distinct(budget, replace):
    sel = kmq(None, budget, quality=QL, labels=LABELS, replace=replace, seed=3)
    expected = split_budget(budget, sizes=np.bincount(LABELS))
    assert len(sel) == budget == len(set(sel.indices.tolist())) and sel.shortfall == 0
    np.testing.assert_array_equal(per_cluster(sel, LABELS), expected)
    np.testing.assert_array_equal(sel.info['cluster_budgets'], expected)
    np.testing.assert_array_equal(sel.per_pick['cluster'], LABELS[sel.indices])
    assert np.all(sel.per_pick['draws'] >= 1)


def test_with_replacement_records_repeated_draws():
    q = np.linspace(0, 6, len(LABELS))  # peaked: the multinomial repeats items
    sel = kmq(None, 200, quality=q, labels=LABELS, seed=0)
    assert len(sel) == 200 == len(set(sel.indices.tolist())) and sel.shortfall == 0
    assert sel.per_pick['draws'].max() > 1
    without = kmq(None, 200, quality=q, labels=LABELS, replace=False, seed=0)
    assert np.all(without.per_pick['draws'] == 1)


def test_draw_from_cluster_tops_up_to_distinct_items():
    rng = np.random.default_rng(0)
    for count in (1, 5, 20, 50):
        picks, draws = draw_from_cluster(np.arange(50), count, np.linspace(0, 8, 50), 1.0, True, rng)
        assert len(picks) == count == len(set(picks.tolist())) and len(draws) == count
    picks, draws = draw_from_cluster(np.arange(10), 4, np.arange(10) * 1000.0, 1.0, True, rng)  # a point mass on item 9
    assert picks[0] == 9 and draws[0] == 4 and sorted(picks.tolist()) == [6, 7, 8, 9]
    with pytest.raises(InputError, match='count'):
        draw_from_cluster(np.arange(3), 4, None, 1.0, True, rng)


@pytest.mark.parametrize('budget', [12, 90, 250])
def test_equal_split_counts(budget):
    sizes = np.bincount(LABELS)
    sel = kmq(None, budget, quality=QL, labels=LABELS, budget_split='equal', seed=0)
    expected = split_budget(budget, sizes=sizes, mode='equal')
    assert np.all(expected <= sizes) and expected.sum() == budget
    np.testing.assert_array_equal(per_cluster(sel, LABELS), expected)


def official_kmq_counts(labels, budget):
    "The official KMenasRandomDeita loop's per-cluster sizes: min(int(b/K), |cluster|) for every cluster."
    K = labels.max() + 1
    return np.array([min(int(budget / K), int((labels == i).sum())) for i in range(K)])


@pytest.mark.parametrize('budget', [5, 30, 60, 100, 300])
def test_official_reproduces_official_counts(budget):
    sel = kmq(None, budget, quality=QL, labels=LABELS, preset='official', seed=1)
    official = official_kmq_counts(LABELS, budget)
    np.testing.assert_array_equal(per_cluster(sel, LABELS), official)
    assert len(sel) == official.sum() and sel.shortfall == budget - official.sum()
    assert (sel.shortfall_reason is None) == (sel.shortfall == 0)
    np.testing.assert_array_equal(sel.scores, np.trunc(QL[sel.indices]))
    assert sel.params['replace'] is False and sel.params['truncate_quality'] is True


def test_official_counts_after_kmeans():
    sel = kmq(X, 100, quality=Q, clusters=5, kmeans_iterations=10, restarts=1, preset='official', seed=0)
    np.testing.assert_array_equal(per_cluster(sel, sel.info['labels']), official_kmq_counts(sel.info['labels'], 100))
    assert sel.params['budget_split'] == 'equal_floor' and sel.params['kmeans_iterations'] == 10


def test_explicit_option_beats_the_preset():
    sel = kmq(None, 60, quality=QL, labels=LABELS, budget_split='proportional', replace=True, preset='official')
    assert (sel.params['budget_split'], sel.params['replace'], sel.params['truncate_quality']) == ('proportional', True, True)
    assert len(sel) == 60 and sel.params['preset'] == 'official'


def test_integer_truncation_changes_probabilities():
    labels, q = np.zeros(2, dtype=int), np.array([3.9, 3.1])
    picks = {
        p: np.array([kmq(None, 1, quality=q, labels=labels, replace=False, seed=s, preset=p).indices[0] for s in range(1000)])
        for p in ('paper', 'official')
    }
    assert abs((picks['official'] == 0).mean() - 0.5) < 0.05  # trunc: 3 vs 3, equally likely
    assert abs((picks['paper'] == 0).mean() - softmax(q)[0]) < 0.05  # e^0.8 / (1 + e^0.8) = 0.69
    assert kmq(None, 1, quality=q, labels=labels, truncate_quality=True, seed=0).scores[0] == 3.0


def test_huge_scores_do_not_overflow():
    q = np.linspace(0, 5000, len(LABELS))  # exp(q) overflows beyond 709
    for replace in (True, False):
        sel = kmq(None, 30, quality=q, labels=LABELS, replace=replace, seed=0)
        assert np.isfinite(sel.scores).all() and len(sel) == 30
    sel = kmq(None, 60, quality=q, labels=LABELS, replace=False, temperature=1e-3, seed=0)
    for j in range(6):  # T -> 0: the best items of every cluster
        members = np.flatnonzero(LABELS == j)
        took = sel.indices[LABELS[sel.indices] == j]
        np.testing.assert_array_equal(np.sort(took), np.sort(members[np.argsort(-q[members])[: len(took)]]))


def test_draw_matches_softmax_frequencies():
    rng = np.random.default_rng(0)
    q = np.array([1.0, 0.0, -1.0, 2.0])
    counts = np.zeros(4)
    for _ in range(4000):
        picks, draws = draw_from_cluster(np.arange(4), 1, q, 2.0, True, rng)
        counts[picks[0]] += 1
    np.testing.assert_allclose(counts / 4000, softmax(q, 2.0), atol=0.025)
    firsts = np.array([draw_from_cluster(np.arange(4), 1, q, 2.0, False, rng)[0][0] for _ in range(10000)])
    np.testing.assert_allclose(np.bincount(firsts, minlength=4) / 10000, softmax(q, 2.0), atol=0.02)


def test_deterministic_and_uniform_without_quality():
    a, b = kmq(X, 40, quality=Q, clusters=5, seed=7), kmq(X, 40, quality=Q, clusters=5, seed=7)
    np.testing.assert_array_equal(a.indices, b.indices)
    flat = kmeans_random(X, 40, clusters=5, seed=7)
    assert flat.scores is None and len(flat) == 40 and flat.method == 'kmeans_random' and 'quality' not in flat.per_pick


def test_kmeans_random_official():
    labels = np.repeat(np.arange(4), [100, 80, 50, 10])
    ref = kmeans_random(None, 80, labels=labels, preset='official')
    np.testing.assert_array_equal(np.bincount(labels[ref.indices]), [20, 20, 20, 10])
    assert ref.shortfall == 10 and 'equal_floor' in ref.shortfall_reason


def test_bad_inputs():
    with pytest.raises(InputError, match='clusters: expected an int in 1..500'):
        kmq(X, 10, quality=Q, clusters=501)
    with pytest.raises(InputError, match='quality: expected 500 values'):
        kmq(X, 10, quality=Q[:-1], clusters=5)
    bad = Q.copy()
    bad[[3, 9]] = np.nan
    with pytest.raises(InputError, match=r'quality: 2 value\(s\) are NaN'):
        kmq(X, 10, quality=bad, clusters=5)
    with pytest.raises(InputError, match='budget: 501 is out of range'):
        kmq(X, 501, quality=Q, clusters=5)
    with pytest.raises(InputError, match='temperature'):
        kmq(X, 10, quality=Q, clusters=5, temperature=-1)
    with pytest.raises(InputError, match='budget_split'):
        kmq(X, 10, quality=Q, clusters=5, budget_split='sizes')
    with pytest.raises(InputError, match='labels: expected 500 values'):
        kmq(X, 10, quality=Q, labels=LABELS)
    with pytest.raises(InputError, match='X: embeddings are needed'):
        kmq(None, 10, quality=Q)
    with pytest.raises(InputError, match='preset'):
        kmq(X, 10, quality=Q, preset='reference')
    with pytest.raises(TypeError):
        kmq(X, 10, Q)  # options are keyword-only


def test_official_with_more_clusters_than_budget_selects_nothing():
    sel = kmq(None, 5, quality=QL, labels=LABELS, preset='official')  # int(5/6) = 0 per cluster, as in the code
    assert len(sel) == 0 and sel.shortfall == 5


def memmap(tmp_path, A, dtype):
    path = tmp_path / 'X.npy'
    np.save(path, A.astype(dtype))
    return np.load(path, mmap_mode='r')


@pytest.mark.parametrize('dtype', [np.float16, np.float32])
def test_memory_mapped_pool_is_not_copied(tmp_path, dtype):
    n, d = 200_000, 64
    labels = np.arange(n) % 50
    mm = memmap(tmp_path, np.random.default_rng(0).standard_normal((n, d)), dtype)
    q = np.random.default_rng(1).uniform(size=n)
    tracemalloc.start()
    sel = kmq(mm, 500, quality=q, labels=labels, seed=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(sel) == 500 and peak < 0.75 * mm.nbytes, peak / mm.nbytes  # a float32 copy would be 1x (float32) or 2x (float16)


def test_memory_mapped_pool_clusters(tmp_path):
    X16 = memmap(tmp_path, np.tile(X, (3, 1)), np.float16)
    sel = kmq(X16, 60, quality=np.tile(Q, 3), clusters=5, seed=0)
    again = kmq(np.tile(X, (3, 1)).astype(np.float16), 60, quality=np.tile(Q, 3), clusters=5, seed=0)
    assert len(sel) == 60 and len(again) == 60
    np.testing.assert_array_equal(np.bincount(sel.per_pick['cluster'], minlength=5), sel.info['cluster_budgets'])


def test_eq6_hand_computed():
    w0 = np.full(4, 0.25)
    w1 = reweight_clusters(w0, [2.0, 1.0, 1.0, 4.0])  # s / sum(s) = [.25, .125, .125, .5]
    np.testing.assert_allclose(w1, [0.0625, 0.03125, 0.03125, 0.125])
    np.testing.assert_allclose(reweight_clusters(w1, [1.0, 1.0, 1.0, 1.0]), w1 / 4)
    np.testing.assert_allclose(reweight_clusters(w1, [3.0, 0.0, 1.0, 2.0], rule='softmax'), softmax([3.0, 0.0, 1.0, 2.0]))
    np.testing.assert_allclose(
        reweight_clusters(w0, [3.0, np.nan, 1.0, 2.0], rule='softmax'), np.insert(softmax([3.0, 1.0, 2.0]), 1, 0.0)
    )  # the code: unseen clusters get 0
    np.testing.assert_allclose(reweight_clusters(w0, [2.0, np.nan, 1.0, 3.0]), np.array([2, 2, 1, 3]) / 8 / 4)


def test_negative_cluster_scores():
    s = np.array([-2.0, 0.5, 1.0, 4.0])
    np.testing.assert_allclose(positive_scores(s), [0.2, 2.7, 3.2, 6.2])  # s - min + 0.05 * max|s|
    np.testing.assert_allclose(positive_scores(s, 'clip'), [0.2, 0.5, 1.0, 4.0])
    np.testing.assert_allclose(positive_scores([1.0, 2.0]), [1.0, 2.0])  # all positive: unchanged (Eq. 6 as written)
    w = reweight_clusters(np.full(4, 0.25), s)
    assert np.all(w > 0) and np.argmax(w) == 3
    with pytest.raises(InputError, match='positive'):
        positive_scores(s, 'error')
    with pytest.raises(InputError, match='negative'):
        positive_scores(s, 'abs')


def test_iterative_records_and_eq6():
    labels = COMP
    hard = np.arange(labels.max() + 1, dtype=float)  # cluster j scores j + 1
    seen = []

    def feedback(selected):
        seen.append(selected.copy())
        return hard[labels[selected]] + 1

    sel = iterative_kmq(X, 120, feedback=feedback, iterations=4, quality=Q, labels=labels, seed=0)
    rec = sel.info['iterations']
    assert [len(r['picked']) for r in rec] == [30, 30, 30, 30] and len(sel) == 120 == len(set(sel.indices.tolist()))
    assert [len(s) for s in seen] == [30, 60, 90]
    np.testing.assert_array_equal(np.concatenate([r['picked'] for r in rec]), sel.indices)
    np.testing.assert_array_equal(sel.per_pick['iteration'], np.repeat(np.arange(4), 30))
    for prev, nxt in zip(rec[:-1], rec[1:]):
        s = prev['cluster_scores']
        s = np.where(np.isnan(s), np.nanmean(s), s)
        np.testing.assert_allclose(nxt['weights'], s / s.sum() * prev['weights'])
    assert rec[-1]['feedback'] is None  # no training after the last draw
    sizes = np.bincount(labels)
    np.testing.assert_array_equal(rec[0]['cluster_budgets'], split_budget(30, sizes=sizes))  # iteration 1 = kMQ
    late = np.bincount(labels[rec[-1]['picked']], minlength=len(sizes)) / sizes
    first = np.bincount(labels[rec[0]['picked']], minlength=len(sizes)) / sizes
    assert late[-1] > first[-1] and late[0] < first[0]  # the hardest cluster gains weight


def test_iterative_without_feedback_keeps_equal_weights():
    sel = iterative_kmq(None, 60, labels=LABELS, seed=0)
    assert len(sel) == 60 and sel.params['feedback'] is False and sel.params['iterations'] == 3
    assert all(np.allclose(r['weights'], 1 / 6) for r in sel.info['iterations'])


def test_iterative_softmax_and_official():
    labels = LABELS
    feedback = lambda sel: (labels[sel] == 5).astype(float) * 3
    soft = iterative_kmq(None, 60, feedback=feedback, labels=labels, reweight='softmax', seed=0)
    s = soft.info['iterations'][0]['cluster_scores']
    expected = np.zeros(6)
    expected[~np.isnan(s)] = softmax(s[~np.isnan(s)])
    np.testing.assert_allclose(soft.info['iterations'][1]['weights'], expected)
    ref = iterative_kmq(None, 60, feedback=feedback, labels=labels, preset='official', seed=0)
    rec = ref.info['iterations']
    assert ref.params['schedule'] == 'official' and ref.params['reweight'] == 'softmax'
    np.testing.assert_array_equal(rec[0]['cluster_budgets'], np.minimum(60 // 3 // 6, np.bincount(labels)))
    # the official repository's GitHub issue #8: only int(b/K/N) = 3 cluster draws per iteration
    assert all(int(r['cluster_budgets'].sum()) <= 60 // 6 // 3 for r in rec[1:])
    assert ref.scores is None and ref.shortfall == 60 - len(ref) > 0 and 'issue #8' in ref.shortfall_reason
    mixed = iterative_kmq(None, 60, feedback=feedback, labels=labels, schedule='even', preset='official', seed=0)
    assert len(mixed) == 60 and mixed.params['reweight'] == 'softmax'  # explicit schedule beats the preset


def test_iterative_cluster_emptied_during_sampling():
    labels = np.repeat([0, 1, 2], [8, 50, 50])
    favour = lambda sel: np.where(labels[sel] == 0, 50.0, 1.0)
    sel = iterative_kmq(None, 45, feedback=favour, labels=labels, seed=1)
    assert [len(r['picked']) for r in sel.info['iterations']] == [15, 15, 15]
    assert (labels[sel.indices] == 0).sum() == 8  # cluster 0 ran dry; the others took its share
    whole = iterative_kmq(None, 108, feedback=favour, iterations=2, labels=labels, seed=1)
    assert len(whole) == 108 and whole.shortfall == 0


def test_iterative_bad_inputs():
    ok = lambda sel: np.ones(len(sel))
    with pytest.raises(InputError, match='iterations'):
        iterative_kmq(X, 10, feedback=ok, iterations=0, clusters=3)
    with pytest.raises(InputError, match='iterations'):
        iterative_kmq(X, 10, feedback=ok, iterations=11, clusters=3)
    with pytest.raises(InputError, match='feedback: expected a callable'):
        iterative_kmq(X, 10, feedback='model', clusters=3)
    with pytest.raises(InputError, match='reweight'):
        iterative_kmq(X, 10, feedback=ok, clusters=3, reweight='add')
    with pytest.raises(InputError, match='schedule'):
        iterative_kmq(X, 10, feedback=ok, clusters=3, schedule='fast')
    with pytest.raises(InputError, match=r'feedback\(selected\): expected 4 values'):
        iterative_kmq(X, 10, feedback=lambda sel: np.ones(2), clusters=3)
    with pytest.raises(InputError, match='NaN'):
        iterative_kmq(X, 10, feedback=lambda sel: np.full(len(sel), np.nan), clusters=3)


def test_choose_k_finds_the_blobs():
    df = choose_k(X, [2, 3, 5, 8, 12], sample=300)
    assert isinstance(df, pd.DataFrame) and list(df.columns) == ['k', 'silhouette', 'inertia']
    assert df.attrs['best_k'] == 5
    assert df['silhouette'].between(-1, 1).all()
    with pytest.raises(InputError, match='2 <= k < n'):
        choose_k(X, [1, 5])
    with pytest.raises(InputError, match='2 <= k < n'):
        choose_k(X, [500])
    with pytest.raises(InputError, match='sample'):
        choose_k(X, [3], sample=1)


def test_small_helpers():
    assert default_num_clusters(100, 7) == 1 and default_num_clusters(50, 5000) == 50
    np.testing.assert_array_equal(cluster_budgets(np.array([10, 0, 5]), 6, 'equal'), [3, 0, 3])
    np.testing.assert_array_equal(cluster_budgets(np.array([10, 0, 5]), 9, 'equal_floor'), [3, 0, 3])
    np.testing.assert_array_equal(cluster_budgets(np.array([10, 0, 5]), 12, 'equal'), [7, 0, 5])
