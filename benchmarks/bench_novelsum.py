"""NovelSum's official 18-setting grid: one sort per row (`datasel.metrics.novelsum_grid`) against a sort per setting.

Input: a 5,000-row subset of a 20,000-row Gaussian mixture (d = 384, 100 components of spread 0.25..1.75, the golden
pool's recipe at a larger size); the density pool is the whole 20,000-row pool.

  one_sort      `novelsum_grid`: one kNN density query per k (`neighbors.knn_density`), the cosine-distance matrix in row blocks, ONE sort
                per row, then sigma_i(k, beta) * a_i(alpha) for every setting.
  per_setting   the official code's loop, vectorised: for every (beta, k) a kNN density, and for every alpha the dense
                distance matrix scaled by the row densities, every row sorted (`np.sort` over the whole matrix, not the
                official per-row `apply_along_axis`), weighted average, mean. 6 kNN queries, 18 full sorts.
  official_row_loop (extrapolated)  the official `np.apply_along_axis(weighted_average, ...)` per-row loop, timed on one
                setting and multiplied by 18 (labelled as extrapolated).

Two density pools: the whole 20,000-row pool (a subset scored against its source, the usual case) and the
subset itself (density_pool=None). Both full implementations run in this one process on the same input; their 19 values
are compared (max relative difference). The kNN part of each is timed on its own too. Threads: 1 (BLAS, faiss, torch), because the two cores of the machine are shared; wall and CPU seconds
are both recorded, with the load average. Writes benchmarks/results/novelsum.json.

Run: .venv/bin/python benchmarks/bench_novelsum.py [--n 5000] [--pool 20000] [--threads 1]
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
from datasel.metrics import novelsum_grid, proximity_weights
from datasel.geometry.neighbors import knn_density, pairwise
from _common import golden_mixture as mixture, timed, machine_info

OUT = Path(__file__).resolve().parent / 'results' / 'novelsum.json'
NEIGHBORS, DENSITY_POWERS, DISTANCE_POWERS = (5, 10), (0, 0.25, 0.5), (0, 1, 2)


def per_setting_grid(X: np.ndarray, density_pool) -> tuple[dict, float]:
    "The official loop structure: a density per (beta, k), a full sort of the scaled matrix per setting. (grid, CPU s in kNN)."
    C = pairwise(X, metric='cosine_distance')
    grid, knn_cpu = {}, 0.0
    for beta in DENSITY_POWERS:
        for k in NEIGHBORS:
            c = time.process_time()
            sigma = knn_density(X, density_pool, k, power=beta, index='exact')
            knn_cpu += time.process_time() - c
            for alpha in DISTANCE_POWERS:
                scaled = np.sort(C * sigma[:, None], axis=1)
                w = proximity_weights(len(X), alpha)
                grid[f'neighbor_{k}_density_{beta}_distance_{alpha}'] = float((scaled.astype(np.float64) @ (w / w.sum())).mean())
    grid['cos_distance'] = float(C.mean(dtype=np.float64))
    return grid, knn_cpu


def official_row_loop_one_setting(X: np.ndarray, sigma: np.ndarray, alpha: float) -> float:
    "One setting exactly as the official code loops: np.apply_along_axis over rows, argsort + np.average each."
    C = pairwise(X, metric='cosine_distance') * sigma[:, None]

    def weighted_average(row):
        w = 1 / np.power(np.arange(1, len(row) + 1), alpha)
        return np.average(row[np.argsort(row)], weights=w)

    return float(np.mean(np.apply_along_axis(weighted_average, 1, C)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--n', type=int, default=5000)
    p.add_argument('--pool', type=int, default=20000)
    p.add_argument('--d', type=int, default=384)
    p.add_argument('--threads', default='1')
    a = p.parse_args()
    pool = mixture(a.pool, a.d)
    X = pool[np.random.default_rng(1).choice(a.pool, a.n, replace=False)]
    load_before = os.getloadavg()

    novelsum_grid(X[:200], pool[:2000])  # warm-up: imports, faiss, thread pools
    configurations = {}
    for name, density_pool in (('pool_density', pool), ('self_density', None)):
        fast, fast_wall, fast_cpu = timed(novelsum_grid, X, density_pool)
        _, _, fast_knn_cpu = timed(lambda: [knn_density(X, density_pool, k, power=1.0) for k in NEIGHBORS])
        (slow, slow_knn_cpu), slow_wall, slow_cpu = timed(per_setting_grid, X, density_pool)
        rel = max(abs(fast[k] - slow[k]) / abs(slow[k]) for k in slow)
        configurations[name] = {
            'density_pool_rows': a.pool if density_pool is not None else a.n,
            'one_sort': {'wall_s': fast_wall, 'cpu_s': fast_cpu, 'knn_cpu_s': fast_knn_cpu, 'knn_queries': len(NEIGHBORS), 'row_sorts': 1},
            'per_setting': {'wall_s': slow_wall, 'cpu_s': slow_cpu, 'knn_cpu_s': slow_knn_cpu, 'knn_queries': 6, 'row_sorts': 18},
            'speedup_cpu': slow_cpu / fast_cpu,
            'speedup_wall': slow_wall / fast_wall,
            'speedup_cpu_without_knn': (slow_cpu - slow_knn_cpu) / (fast_cpu - fast_knn_cpu),
            'max_relative_difference': rel,
            'values': fast,
        }
    fast = configurations['pool_density']['values']
    sigma = knn_density(X, pool, 10, power=0.5, index='exact')
    one, loop_wall, loop_cpu = timed(official_row_loop_one_setting, X, sigma, 1.0)
    loop_rel = abs(one - fast['neighbor_10_density_0.5_distance_1']) / abs(one)
    fast_cpu = configurations['pool_density']['one_sort']['cpu_s']

    result = {
        'benchmark': 'novelsum_grid: one sort per row vs one sort per setting',
        'input': {'n': a.n, 'pool_rows': a.pool, 'd': a.d, 'data': 'Gaussian mixture, 100 components (golden pool recipe)'},
        'settings': 18,
        'configurations': configurations,
        'official_row_loop_extrapolated': {
            'one_setting_wall_s': loop_wall,
            'one_setting_cpu_s': loop_cpu,
            'grid_cpu_s_extrapolated': 18 * loop_cpu,
            'speedup_cpu_extrapolated': 18 * loop_cpu / fast_cpu,
            'relative_difference_one_setting': loop_rel,
        },
        'machine': machine_info(a.threads, load_before),
    }
    with atomic_write(OUT) as f:
        json.dump(result, f, indent=1)
    print(f"n = {a.n}, d = {a.d}, 18 settings + cos_distance, {a.threads} thread(s)")
    for name, r in configurations.items():
        print(
            f"  {name} ({r['density_pool_rows']} rows): one sort {r['one_sort']['cpu_s']:.2f} s CPU ({r['one_sort']['wall_s']:.2f} wall), "
            f"per setting {r['per_setting']['cpu_s']:.2f} s CPU ({r['per_setting']['wall_s']:.2f} wall) -> {r['speedup_cpu']:.1f}x; "
            f"without the kNN queries {r['speedup_cpu_without_knn']:.1f}x; max rel. diff {r['max_relative_difference']:.1e}"
        )
    print(
        f"  official per-row loop, 1 setting: {loop_cpu:.2f} s CPU; x18 (extrapolated) = {18 * loop_cpu:.1f} s "
        f"-> {18 * loop_cpu / fast_cpu:.0f}x the one-sort grid (pool density)"
    )
    print(f'wrote {OUT}')


if __name__ == '__main__':
    main()
