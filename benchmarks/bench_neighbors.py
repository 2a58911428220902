"""kNN and k-means through datasel.geometry.neighbors against direct faiss calls (the wrapper's overhead) and scikit-learn
(NearestNeighbors brute force, KMeans), plus PreSel's per-task k-means (C = |T|/100 clusters) against the official
code's sklearn KMeans. All implementations run in one process on the same synthetic input.

Usage: python benchmarks/bench_neighbors.py [--quick] [--out benchmarks/results/neighbors.json]
"""
import argparse, json, math, os, platform, sys, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from datasel.geometry import neighbors                       # noqa: E402
from datasel.core import atomic_write               # noqa: E402


def mixture(n, d, components, seed):
    "Gaussian mixture with uneven spreads, float32: clustered like real embeddings."
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(components, d)) * 2.0
    comp = rng.integers(components, size=n)
    spread = rng.uniform(0.5, 1.5, size=components)
    return (centers[comp] + spread[comp, None] * rng.normal(size=(n, d))).astype(np.float32)


def timed(fn, repeat=1):
    "Best wall time of `repeat` runs, and the last result."
    best, out = math.inf, None
    for _ in range(repeat):
        t = time.perf_counter(); out = fn(); best = min(best, time.perf_counter() - t)
    return best, out


def timed_interleaved(fns, repeat):
    "Best wall time of each function over `repeat` rounds that run them in turn (fair under a varying machine load)."
    best, outs = {name: math.inf for name in fns}, {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter(); outs[name] = fn(); best[name] = min(best[name], time.perf_counter() - t)
    return best, outs


def inertia(X, C, labels):
    return float(((X.astype(np.float64) - C[labels].astype(np.float64)) ** 2).sum())


def bench_knn(n, d, k, repeat):
    import faiss
    from sklearn.neighbors import NearestNeighbors
    X = mixture(n, d, 50, seed=1)
    res = {'n': n, 'd': d, 'k': k, 'metric': 'cosine', 'self_excluded': True, 'runs': {}}

    def direct_faiss():
        Xn = X.copy(); faiss.normalize_L2(Xn)
        index = faiss.IndexFlatIP(d); index.add(Xn)
        D, I = index.search(Xn, k + 1)
        return D[:, 1:], I[:, 1:]

    def sklearn_brute():
        nn = NearestNeighbors(n_neighbors=k + 1, algorithm='brute', metric='cosine').fit(X)
        dist, idx = nn.kneighbors(X)
        return 1 - dist[:, 1:], idx[:, 1:]

    impls = {'faiss_direct': direct_faiss,
             'datasel_faiss': lambda: neighbors.knn(X, k, metric='cosine', backend='faiss'),
             'datasel_torch': lambda: neighbors.knn(X, k, metric='cosine', backend='torch'),
             'datasel_numpy': lambda: neighbors.knn(X, k, metric='cosine', backend='numpy'),
             'sklearn_brute': sklearn_brute}
    paired, paired_out = timed_interleaved({n: impls[n] for n in ('faiss_direct', 'datasel_faiss')}, repeat)
    ref = paired_out['faiss_direct'][1]
    for name, fn in impls.items():
        t, (vals, idx) = (paired[name], paired_out[name]) if name in paired else timed(fn)
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(idx.tolist(), ref.tolist())]))
        res['runs'][name] = {'seconds': round(t, 3), 'recall_vs_faiss_direct': round(recall, 6)}
        print(f'  knn {name:15s} {t:8.2f} s  recall vs faiss {recall:.5f}', flush=True)
    base = res['runs']['faiss_direct']['seconds']
    res['datasel_faiss_overhead'] = round(res['runs']['datasel_faiss']['seconds'] / base, 3)
    res['sklearn_over_datasel'] = round(res['runs']['sklearn_brute']['seconds'] / res['runs']['datasel_faiss']['seconds'], 3)
    return res


def bench_kmeans(n, d, k, niter, sklearn_default, repeat):
    import faiss
    from sklearn.cluster import KMeans
    X = mixture(n, d, k // 2, seed=2)
    res = {'n': n, 'd': d, 'k': k, 'niter': niter, 'runs': {}}

    def direct_faiss():
        km = faiss.Kmeans(d, k, niter=niter, seed=0, verbose=False, max_points_per_centroid=-(-n // k))
        km.train(X)
        _, I = km.index.search(X, 1)
        return km.centroids, I[:, 0]

    def ours(**kw):
        def run():
            r = neighbors.kmeans(X, k, niter=niter, seed=0, **kw)
            return r.centroids, r.labels
        return run

    def sk(**kw):
        def run():
            m = KMeans(n_clusters=k, random_state=0, **kw).fit(X)
            run.n_iter = int(m.n_iter_)
            return m.cluster_centers_.astype(np.float32), m.labels_
        return run

    impls = {'faiss_direct': direct_faiss,
             'datasel_faiss_random_init': ours(backend='faiss', init='random'),
             'datasel_faiss_kmeanspp': ours(backend='faiss'),
             'datasel_torch_kmeanspp': ours(backend='torch'),
             'sklearn_n_init1_max_iter_same': sk(n_init=1, max_iter=niter)}
    if sklearn_default: impls['sklearn_defaults'] = sk()
    paired, paired_out = timed_interleaved({n: impls[n] for n in ('faiss_direct', 'datasel_faiss_random_init')}, repeat)
    for name, fn in impls.items():
        t, (C, labels) = (paired[name], paired_out[name]) if name in paired else timed(fn)
        entry = {'seconds': round(t, 3), 'inertia': round(inertia(X, C, labels), 1)}
        if hasattr(fn, 'n_iter'): entry['n_iter'] = fn.n_iter
        res['runs'][name] = entry
        print(f'  kmeans {name:30s} {t:8.2f} s  inertia {entry["inertia"]:.4g}', flush=True)
    res['datasel_random_init_overhead'] = round(res['runs']['datasel_faiss_random_init']['seconds'] / res['runs']['faiss_direct']['seconds'], 3)
    return res


def bench_presel(sizes, sklearn_sizes, d, sklearn_limit_s):
    "PreSel's per-task clustering: L2-normalised features, C = max(1, int(0.01 |T|)) clusters."
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import normalize
    out = {'d': d, 'rule': 'C = max(1, int(0.01*|T|)); sklearn KMeans(n_clusters=C, random_state=12345) with its defaults '
           '(k-means++, n_init=auto -> 1, max_iter=300, tol=1e-4) as in the official code; datasel: neighbors.kmeans(niter=20, '
           'k-means++ start, faiss)', 'datasel': {}, 'sklearn': {}}
    feats = {n: normalize(mixture(n, d, max(2, n // 400), seed=3 + n)) for n in sorted(set(sizes) | set(sklearn_sizes))}
    for n in sizes:
        C = max(1, int(0.01 * n)); X = feats[n]
        t, r = timed(lambda: neighbors.kmeans(X, C, niter=20, seed=12345))
        out['datasel'][str(n)] = {'clusters': C, 'seconds': round(t, 2), 'inertia': round(r.inertia, 2)}
        print(f'  presel datasel |T|={n:7d} C={C:5d} {t:8.2f} s  inertia {r.inertia:.5g}', flush=True)
    for n in sklearn_sizes:
        C = max(1, int(0.01 * n)); X = feats[n]
        t, m = timed(lambda: KMeans(n_clusters=C, random_state=12345).fit(X))
        out['sklearn'][str(n)] = {'clusters': C, 'seconds': round(t, 2), 'n_iter': int(m.n_iter_), 'inertia': round(float(m.inertia_), 2)}
        print(f'  presel sklearn |T|={n:7d} C={C:5d} {t:8.2f} s  iterations {m.n_iter_}  inertia {m.inertia_:.5g}', flush=True)
        if t > sklearn_limit_s: break
    # sklearn's cost grows like |T| * C * iterations = |T|^2/100 * iterations: extrapolate from the largest size run
    done = sorted(int(n) for n in out['sklearn'])
    big = max(sizes)
    if big not in done and len(done) >= 2:
        n0, n1 = done[-2], done[-1]
        t0, t1 = out['sklearn'][str(n0)]['seconds'], out['sklearn'][str(n1)]['seconds']
        exponent = math.log(t1 / t0) / math.log(n1 / n0)
        out['sklearn_extrapolated'] = {str(big): {'seconds': round(t1 * (big / n1) ** 2, 1),
                                                  'rule': f'quadratic from |T|={n1} (measured exponent between {n0} and {n1}: {exponent:.2f})',
                                                  'measured': False}}
        print(f'  presel sklearn |T|={big} extrapolated {out["sklearn_extrapolated"][str(big)]["seconds"]} s '
              f'(measured exponent {exponent:.2f})', flush=True)
    common = [n for n in done if str(n) in out['datasel']]
    out['speedup_sklearn_over_datasel'] = {str(n): round(out['sklearn'][str(n)]['seconds'] / out['datasel'][str(n)]['seconds'], 2) for n in common}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true', help='tiny sizes, to check the script runs')
    ap.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'neighbors.json'))
    ap.add_argument('--sklearn-limit', type=float, default=300, help='stop growing the sklearn PreSel sizes past this many seconds')
    args = ap.parse_args()
    threads = neighbors.set_threads()
    import faiss, sklearn, torch
    results = {'benchmark': 'neighbors', 'quick': args.quick, 'threads': threads,
               'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(), 'python': platform.python_version()},
               'versions': {'faiss': faiss.__version__, 'sklearn': sklearn.__version__, 'torch': torch.__version__,
                            'numpy': np.__version__},
               'faiss_gpu': neighbors.faiss_gpu_available(), 'load_average_at_start': [round(x, 2) for x in os.getloadavg()]}
    if args.quick:
        results['knn'] = bench_knn(2000, 64, 10, 2)
        results['kmeans'] = bench_kmeans(5000, 32, 50, 20, True, 2)
        results['presel_kmeans'] = bench_presel([2000, 4000], [1000, 2000], 32, 60)
    else:
        results['knn'] = bench_knn(20000, 384, 10, 3)
        results['kmeans'] = bench_kmeans(50000, 256, 500, 20, True, 3)
        results['presel_kmeans'] = bench_presel([10000, 20000, 40000, 100000], [10000, 20000, 40000], 256, args.sklearn_limit)
    results['load_average_at_end'] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    with atomic_write(out) as f: json.dump(results, f, indent=1)
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
