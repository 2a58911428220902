"""NovelSelect: the exact incremental algorithm against the official step, on the same input, in one run.

  incremental   `novelselect(X, k)`: per pick one matrix-vector product for the new column, O(n) bound updates and
                an exact re-ranking of the few candidates whose upper bound can still win.
  reference     `novelselect(X, k, reference=True)`: the official step literally, the full n x t block of
                (1 - cos) * (sigma_x + sigma_s) recomputed, every row sorted, the weighted mean, at every pick.

Data: Gaussian mixtures in d = 384 (100 components of spread 0.25..1.75 around centres of scale 2.5 with a common
mean: the golden pool's recipe at larger sizes). Defaults k = 10 neighbours, beta = 0.5, alpha = 1, seed 42.
The density is computed once (timed apart) and given to both runs (`density=`); the selection loops are compared: same picks (whole order)
and the ratio of their times.

Where the reference would take too long (n = 20,000, k = 2,000: about ten minutes), it runs only its first `m` picks,
and its cost for all k picks is EXTRAPOLATED from those steps: the per-step times of picks 1..m are fitted (non-negative
least squares) by a + b t + c t log2 t (t = selected-set size: the n x t product is linear in t, the row sorts are
t log t), and the fit is summed over t = 1..k-1. The fit is checked by predicting steps m/2..m from steps 1..m/2.
The picks are compared over the first m steps.

Threads: 1 (BLAS, faiss, torch): the machine's two cores are shared with other work, and multi-threaded BLAS on a
loaded machine is erratic. Times are CPU seconds of this process (wall seconds recorded too, with the load average).
Writes benchmarks/results/novelselect.json.

Run: .venv/bin/python benchmarks/bench_novelselect.py [--quick] [--threads 1]
"""
import argparse, os, sys

if __name__ == '__main__':
    _threads = sys.argv[sys.argv.index('--threads') + 1] if '--threads' in sys.argv else '1'
    for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS', 'DATASEL_NUM_THREADS'): os.environ[var] = _threads

import json, platform
from pathlib import Path
import numpy as np
from scipy.optimize import nnls

from datasel.core import atomic_write
from datasel.geometry.neighbors import knn_density
from datasel.selectors.novelselect import novelselect
from _common import golden_mixture as mixture, timed

OUT = Path(__file__).resolve().parent / 'results' / 'novelselect.json'


def step_model(t: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    "Non-negative least-squares coefficients of seconds ~ a + b t + c t log2 t."
    A = np.c_[np.ones(len(t)), t, t * np.log2(np.maximum(t, 1))]
    return nnls(A, seconds)[0]


def predict(coef: np.ndarray, t: np.ndarray) -> np.ndarray:
    return coef[0] + coef[1] * t + coef[2] * t * np.log2(np.maximum(t, 1))


def rescore_float64(X: np.ndarray, density: np.ndarray, prefix, candidates, alpha: float) -> list[float]:
    "The official score of each candidate after `prefix`, in float64."
    U = X.astype(np.float64) / np.linalg.norm(X.astype(np.float64), axis=1, keepdims=True)
    sig = density.astype(np.float64)
    prefix = np.asarray(prefix)
    w = 1 / np.arange(1, len(prefix) + 1) ** alpha
    return [float((np.sort((1 - U[prefix] @ U[c]) * (sig[c] + sig[prefix])) * w).mean()) for c in candidates]


def run_case(X: np.ndarray, k: int, alpha: float, reference_steps: int | None) -> dict:
    "Both algorithms on X; the reference fully, or on its first `reference_steps` picks and extrapolated."
    n, d = X.shape
    density, _, density_cpu = timed(knn_density, X, None, 10, power=0.5)   # computed once, given to both runs
    fast, fast_wall, select_fast = timed(novelselect, X, k, distance_power=alpha, device='numpy', density=density)
    m = k if reference_steps is None else min(k, reference_steps)
    ref, ref_wall, select_ref = timed(novelselect, X, m, distance_power=alpha, device='numpy', reference=True, density=density)
    case = {'n': n, 'd': d, 'k': k, 'distance_power': alpha, 'density_power': 0.5, 'neighbors': 10, 'density_cpu_s': density_cpu,
            'incremental': {'select_cpu_s': select_fast, 'select_wall_s': fast.info['timings']['select_s'],
                            'reranked_per_step_mean': float(fast.info['reranked_per_step'].mean()),
                            'reranked_per_step_max': int(fast.info['reranked_per_step'].max())},
            'same_picks': bool(np.array_equal(fast.indices[:m], ref.indices)), 'picks_compared': m,
            'first_different_pick': next((int(j) for j in range(m) if fast.indices[j] != ref.indices[j]), None)}
    j = case['first_different_pick']
    if j is not None:   # how close the two candidates were, rescored in float64 against the common prefix
        a, b = rescore_float64(X, density, fast.indices[:j], [fast.indices[j], ref.indices[j]], alpha)
        case['at_first_difference'] = {'incremental_pick': int(fast.indices[j]), 'reference_pick': int(ref.indices[j]),
                                       'float64_scores': [a, b], 'relative_gap': abs(a - b) / max(abs(a), abs(b))}
    if m == k:
        case['reference'] = {'select_cpu_s': select_ref, 'select_wall_s': ref.info['timings']['select_s'], 'extrapolated': False}
    else:
        per_step = np.diff(ref.info['elapsed_s'])                  # wall seconds of picks 1..m-1 (t = 1..m-1)
        t = np.arange(1, m, dtype=np.float64)
        scale = select_ref / ref.info['elapsed_s'][-1]              # wall -> CPU of this run
        coef = step_model(t, per_step * scale)
        half = len(t) // 2
        check = step_model(t[:half], per_step[:half] * scale)
        check_error = float(predict(check, t[half:]).sum() / (per_step[half:] * scale).sum() - 1)
        total = float(predict(coef, np.arange(1, k, dtype=np.float64)).sum())
        case['reference'] = {'select_cpu_s': total, 'extrapolated': True, 'measured_steps': m,
                             'measured_cpu_s': select_ref, 'measured_wall_s': ref.info['timings']['select_s'],
                             'model': 'a + b t + c t log2 t per step, NNLS on the measured steps',
                             'coefficients': coef.tolist(), 'half_fit_relative_error_on_second_half': check_error}
    case['speedup'] = case['reference']['select_cpu_s'] / select_fast
    return case


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true', help='small sizes only')
    p.add_argument('--threads', default='1')
    p.add_argument('--reference-steps', type=int, default=300, help='picks the reference runs at the largest size')
    a = p.parse_args()
    d = 384
    cases = [(2000, 200, 1.0, None), (5000, 500, 1.0, None), (5000, 500, 0.0, None), (5000, 500, 2.0, None)]
    if not a.quick: cases += [(10000, 500, 1.0, None), (20000, 1000, 1.0, None), (20000, 2000, 1.0, a.reference_steps)]
    load_before = os.getloadavg()
    novelselect(mixture(500, d), 20)   # warm-up: imports, faiss, thread pools
    results = []
    for n, k, alpha, steps in cases:
        case = run_case(mixture(n, d), k, alpha, steps)
        results.append(case)
        r = case['reference']
        tag = f"extrapolated from {r['measured_steps']} measured picks" if r['extrapolated'] else 'measured'
        print(f"n={n:6d} k={k:5d} alpha={alpha:g}: incremental {case['incremental']['select_cpu_s']:7.2f} s, "
              f"reference {r['select_cpu_s']:8.1f} s ({tag}) -> {case['speedup']:6.1f}x; "
              f"same picks over {case['picks_compared']}: {case['same_picks']}"
              + (f" (first difference at pick {case['first_different_pick']}, float64 relative gap "
                 f"{case['at_first_difference']['relative_gap']:.1e})" if case['first_different_pick'] is not None else '') + '; '
              f"re-ranked {case['incremental']['reranked_per_step_mean']:.0f}/{n} per step", flush=True)
    result = {'benchmark': 'novelselect: exact incremental vs the official step (CPU seconds of the selection loop)',
              'cases': results,
              'machine': {'threads': a.threads, 'cpus': os.cpu_count(), 'load_before': load_before, 'load_after': os.getloadavg(),
                          'python': platform.python_version(), 'numpy': np.__version__}}
    with atomic_write(OUT) as f: json.dump(result, f, indent=1)
    print(f'wrote {OUT}')


if __name__ == '__main__':
    main()
