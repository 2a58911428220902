"""IVF searched list by list (datasel's `index='ivf'`) against faiss's own IVF with fp16 codes (the earlier
implementation), and both against the exact search: wall time and recall@10 on a golden-recipe Gaussian mixture
stored as float16, in one process. Both IVFs use the same lists (`_ivf_lists`), training sample (40 rows per list,
seeded), 10 k-means iterations and `IVF_NPROBE`.

`--float32-copy` instead times NovelSum's IVF density of the float16 pool two ways in one process: converting rows
at every read (each query is read once per probed list) and searching one float32 copy made first
(`knn_density(..., float32_copy=True)`, what NovelSelect does when its unit rows are float32); the two densities must
be equal.

Run: .venv/bin/python benchmarks/bench_ivf.py [--sizes 20000x1024,40000x4096] [--threads 1] [--float32-copy]
Writes benchmarks/results/ivf.json (or ivf_float32_copy.json; one entry per size, rewritten after each).
"""

import argparse, os, sys

if __name__ == '__main__':
    _threads = sys.argv[sys.argv.index('--threads') + 1] if '--threads' in sys.argv else '1'
    for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS', 'DATASEL_NUM_THREADS'):
        os.environ[var] = _threads

import json, time
from pathlib import Path
import numpy as np

from datasel.core import atomic_write
from datasel.geometry import neighbors as nb
from _common import golden_mixture, machine_info

OUT = Path(__file__).resolve().parent / 'results' / 'ivf.json'


def faiss_ivf_sq(X: np.ndarray, k: int) -> np.ndarray:
    "Neighbour ids (self dropped) from faiss's IndexIVFScalarQuantizer fp16 with datasel's lists, sample and nprobe."
    import faiss

    n, d = X.shape
    lists = nb._ivf_lists(n)
    ix = faiss.IndexIVFScalarQuantizer(faiss.IndexFlat(d, faiss.METRIC_L2), d, lists, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_L2)
    ix.cp.seed, ix.cp.niter, ix.nprobe = 0, 10, min(nb.IVF_NPROBE, lists)
    sample = np.sort(nb.make_rng(0).choice(n, min(n, 40 * lists), replace=False))
    X32 = X.astype(np.float32)
    ix.train(X32[sample])
    ix.add(X32)
    return ix.search(X32, k + 1)[1][:, 1:]


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / exact.shape[1] for a, e in zip(found, exact)]))


def float32_copy(a) -> None:
    "IVF density of a float16 pool: rows converted at every read vs one float32 copy first (same process, same lists)."
    out = OUT.with_name('ivf_float32_copy.json')
    results = {
        'benchmark': 'ivf density: float16 rows converted at each read vs one float32 copy',
        'machine': machine_info(a.threads, os.getloadavg()),
        'runs': {},
    }
    for size in a.sizes.split(','):
        n, d = map(int, size.split('x'))
        X = golden_mixture(n, d).astype(np.float16)
        load = os.getloadavg()
        times, dens = {}, {}
        for copy in (False, True):  # warm-up of both paths (faiss, BLAS, the allocator) before either is timed
            nb.knn_density(X[:4000], None, 10, power=0.5, index='ivf', float32_copy=copy)
        for arm, copy in (('converted_at_each_read', False), ('float32_copy', True)):
            t = time.perf_counter()
            dens[arm] = nb.knn_density(X, None, 10, power=0.5, index='ivf', float32_copy=copy)
            times[arm] = round(time.perf_counter() - t, 2)
        results['runs'][size] = {
            'lists': nb._ivf_lists(n),
            'nprobe': nb.IVF_NPROBE,
            **{f'{arm}_s': v for arm, v in times.items()},
            'speedup': round(times['converted_at_each_read'] / times['float32_copy'], 2),
            'same_density': bool(np.array_equal(dens['converted_at_each_read'], dens['float32_copy'])),
            'float32_copy_gib': round(n * d * 4 / 2**30, 2),
            'load_average_at_start': [round(x, 2) for x in load],
        }
        results['machine']['load_after'] = os.getloadavg()
        print(size, json.dumps(results['runs'][size]), flush=True)
        with atomic_write(out) as f:
            json.dump(results, f, indent=1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--sizes', default='20000x1024,40000x4096')
    p.add_argument('--threads', default='1')
    p.add_argument('--float32-copy', action='store_true', help='time the IVF density with and without a float32 copy of X')
    a = p.parse_args()
    if a.float32_copy:
        return float32_copy(a)
    results = {'benchmark': 'ivf', 'machine': machine_info(a.threads, os.getloadavg()), 'runs': {}}
    for size in a.sizes.split(','):
        n, d = map(int, size.split('x'))
        X = golden_mixture(n, d).astype(np.float16)
        load = os.getloadavg()
        t = time.perf_counter()
        _, exact = nb.knn(X, 10, metric='sqeuclidean', index='exact')
        t_exact = time.perf_counter() - t
        t = time.perf_counter()
        _, ours = nb.knn(X, 10, metric='sqeuclidean', index='ivf')
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        theirs = faiss_ivf_sq(X, 10)
        t_faiss = time.perf_counter() - t
        results['runs'][size] = {
            'lists': nb._ivf_lists(n),
            'nprobe': nb.IVF_NPROBE,
            'exact_s': round(t_exact, 2),
            'list_by_list_ivf_s': round(t_ours, 2),
            'list_by_list_ivf_recall_at_10': recall(ours, exact),
            'faiss_ivf_sq_fp16_s': round(t_faiss, 2),
            'faiss_ivf_sq_fp16_recall_at_10': recall(theirs, exact),
            'load_average_at_start': [round(x, 2) for x in load],
        }
        results['machine']['load_after'] = os.getloadavg()
        print(size, json.dumps(results['runs'][size]), flush=True)
        with atomic_write(OUT) as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
