"""k-Center greedy: datasel's running-minimum version against the textbook version on a full distance matrix.

Both start from the same row and pick the same rows, up to float32 rounding: where the orders first differ (if
they do), the two candidates' distances to the earlier picks are reported; a gap below ~1e-6 is a tie that the two
float32 evaluation orders (matrix-vector vs matrix-matrix product) break differently. Reports wall time and the peak of Python-tracked memory
(tracemalloc; numpy allocations are tracked, the input matrix is excluded), and the same on a memory-mapped float16
copy of the largest pool (read block by block, never loaded whole). Writes benchmarks/results/kcenter.json
(kcenter_quick.json with --quick).

Run: .venv/bin/python benchmarks/bench_kcenter.py [--quick]
"""

import argparse, json, platform, tempfile, time, tracemalloc
from pathlib import Path
import numpy as np
from datasel.core import atomic_write
from datasel.selectors.baselines import kcenter_greedy
from datasel.geometry.neighbors import l2_normalize
from _common import even_mixture as mixture

RESULTS = Path(__file__).resolve().parent / 'results'


def kcenter_full_matrix(X: np.ndarray, budget: int, first: int) -> np.ndarray:
    "Textbook k-center greedy on the dense N x N cosine-distance matrix."
    U = l2_normalize(X)
    D = 1 - U @ U.T
    picks = [first]
    nearest = D[first].copy()
    nearest[first] = -1
    for _ in range(budget - 1):
        c = int(np.argmax(nearest))
        picks.append(c)
        np.minimum(nearest, D[c], out=nearest)
        nearest[c] = -1
    return np.array(picks)


def tie_gap(X: np.ndarray, a: np.ndarray, b: np.ndarray) -> float | None:
    "Where the two pick orders first differ: |difference| of the two picks' float64 distances to the earlier picks."
    if np.array_equal(a, b):
        return None
    t = int(np.flatnonzero(a != b)[0])
    U = X.astype(np.float64)
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    dist = lambda c: float((1 - U[a[:t]] @ U[c]).min())
    return abs(dist(a[t]) - dist(b[t]))


def measure(fn, *args):
    "Wall time and tracemalloc peak (bytes) of fn(*args)."
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, seconds, peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true', help='small sizes only')
    args = ap.parse_args()
    d, budget = 256, 1000
    sizes = [2000, 5000] if args.quick else [5000, 10000, 20000]
    rows = []
    for n in sizes:
        X = mixture(n, d)
        fast, t_fast, m_fast = measure(lambda X: kcenter_greedy(X, budget, first=0).indices, X)
        full, t_full, m_full = measure(kcenter_full_matrix, X, budget, 0)
        row = {
            'n': n,
            'd': d,
            'budget': budget,
            'same_picks': bool(np.array_equal(fast, full)),
            'first_difference': None if np.array_equal(fast, full) else int(np.flatnonzero(fast != full)[0]),
            'tie_gap_at_first_difference': tie_gap(X, fast, full),
            'datasel_s': round(t_fast, 3),
            'full_matrix_s': round(t_full, 3),
            'speedup': round(t_full / t_fast, 2),
            'datasel_peak_mib': round(m_fast / 2**20, 1),
            'full_matrix_peak_mib': round(m_full / 2**20, 1),
            'input_mib': round(X.nbytes / 2**20, 1),
        }
        print(row, flush=True)
        rows.append(row)
    n_big = 20000 if args.quick else 100000
    X = mixture(n_big, d)
    _, t_big, m_big = measure(lambda X: kcenter_greedy(X, budget, first=0).indices, X)
    big = {
        'n': n_big,
        'd': d,
        'budget': budget,
        'datasel_s': round(t_big, 3),
        'datasel_peak_mib': round(m_big / 2**20, 1),
        'input_mib': round(X.nbytes / 2**20, 1),
        'full_matrix_would_need_gib': round(n_big * n_big * 4 / 2**30, 1),
    }
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / 'X.npy', X.astype(np.float16))
        del X
        mm = np.load(Path(tmp) / 'X.npy', mmap_mode='r')
        _, t_mm, m_mm = measure(lambda X: kcenter_greedy(X, budget, first=0).indices, mm)
        big['memmap_float16'] = {
            'datasel_s': round(t_mm, 3),
            'datasel_peak_mib': round(m_mm / 2**20, 1),
            'input_mib': round(mm.nbytes / 2**20, 1),
            'peak_over_input': round(m_mm / mm.nbytes, 3),
        }
        del mm
    print(big, flush=True)
    result = {
        'benchmark': 'kcenter_greedy',
        'metric': 'cosine',
        'data': 'Gaussian mixture, 50 components, seed 0',
        'machine': {'python': platform.python_version(), 'processor': platform.processor() or platform.machine(), 'numpy': np.__version__},
        'rows': rows,
        'large': big,
    }
    out = RESULTS / ('kcenter_quick.json' if args.quick else 'kcenter.json')
    with atomic_write(out) as f:
        json.dump(result, f, indent=2)
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
