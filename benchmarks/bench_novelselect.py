"""NovelSelect: the exact incremental algorithm against the official step, on the same input, in one run; and the
levers for large pools (float16 storage, approximate density) against the exact float32 picks.

  incremental   `novelselect(X, k, preset='official')`: columns `lookahead` at a time (one pass over the rows serves
                several picks), O(n) bound updates, an exact re-ranking of the few candidates whose bound can still win.
  official      `novelselect(X, k, preset='official', algorithm='official')`: the official step literally, the full
                n x t block of (1 - cos) * (sigma_x + sigma_s) recomputed, every row sorted, at every pick.
  float16       the incremental run with `values_dtype='float16'` / `rows_dtype='float16'`: picks compared with float32.
  density       NovelSum's kNN density from an approximate index (`neighbors.knn(..., index='hnsw' | 'ivf')`):
                recall@10 against the exact neighbours, the density's relative error, and the picks it gives.
  score gaps    (--gaps) how close the rows' exact scores sit to the best one at several pick counts: how many rows
                a pruning rule with a relative slack would have to keep (written to results/novelselect_gaps.json).

Data: Gaussian mixtures in d = 384 (100 components of spread 0.25..1.75 around centres of scale 2.5 with a common
mean: the golden pool's recipe at larger sizes). k = 10 neighbours, beta = 0.5, alpha = 1, seed 42.
The exact density is computed once (timed apart) and given to the selection runs (`density=`), so the selection
loops are compared: same picks (whole order) and the ratio of their CPU times. Peak RSS is the process's VmHWM after
each run (monotone: the incremental runs come first).

Threads: 1 (BLAS, faiss, torch): the machine's two cores are shared with other work. Times are CPU seconds of this
process (wall seconds recorded too, with the load average). Writes benchmarks/results/novelselect.json.

Run: .venv/bin/python benchmarks/bench_novelselect.py [--quick] [--threads 1] [--gaps]
"""

import argparse, os, sys

if __name__ == '__main__':
    _threads = sys.argv[sys.argv.index('--threads') + 1] if '--threads' in sys.argv else '1'
    for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS', 'DATASEL_NUM_THREADS'):
        os.environ[var] = _threads

import json
from pathlib import Path
import numpy as np

from datasel.core import atomic_write
from datasel.geometry.neighbors import knn, knn_density
from datasel.selectors.novelselect import novelselect
from _common import golden_mixture as mixture, machine_info, proc_status_mib, timed

OUT = Path(__file__).resolve().parent / 'results' / 'novelselect.json'


def peak_rss_gib() -> float:
    "VmHWM of this process, GiB."
    return proc_status_mib()['VmHWM'] / 1024


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    "How far two pick orders agree: the common prefix and the share of rows in common."
    diff = np.flatnonzero(a != b)
    return {
        'same_order': not len(diff),
        'common_prefix': int(diff[0]) if len(diff) else len(a),
        'rows_in_common': len(set(a.tolist()) & set(b.tolist())) / len(a),
    }


def run_case(X: np.ndarray, k: int, alpha: float, lookahead: int, official: bool = True) -> dict:
    "The incremental and the official step on X with one exact density: picks, CPU seconds, ratio, peak RSS."
    n, d = X.shape
    density, _, density_cpu = timed(knn_density, X, None, 10, power=0.5, index='exact')
    opts = dict(distance_power=alpha, device='numpy', density=density, preset='official', seed=42)
    fast, fast_wall, fast_cpu = timed(novelselect, X, k, lookahead=lookahead, **opts)
    case = {
        'n': n,
        'd': d,
        'k': k,
        'distance_power': alpha,
        'density_power': 0.5,
        'neighbors': 10,
        'lookahead': lookahead,
        'density_exact_cpu_s': density_cpu,
        'incremental': {
            'select_cpu_s': fast_cpu,
            'select_wall_s': fast_wall,
            'column_passes': int(fast.info['column_passes']),
            'reranked_per_step_mean': float(fast.info['reranked_per_step'].mean()),
            'peak_rss_gib': peak_rss_gib(),
        },
    }
    if official:
        ref, ref_wall, ref_cpu = timed(novelselect, X, k, algorithm='official', **opts)
        case['official'] = {'select_cpu_s': ref_cpu, 'select_wall_s': ref_wall, 'peak_rss_gib': peak_rss_gib()}
        case['agreement'] = agreement(fast.indices, ref.indices)
        case['speedup_cpu'] = ref_cpu / fast_cpu
        case['whole_call_speedup_cpu'] = (ref_cpu + density_cpu) / (fast_cpu + density_cpu)
    return case, fast, density


def levers(X: np.ndarray, k: int, exact: np.ndarray, density: np.ndarray, lookahead: int) -> dict:
    "float16 storage and approximate densities against the exact float32 picks at one size."
    out = {}
    for name, kw in (
        ('values_float16', {'values_dtype': 'float16'}),
        ('rows_float16', {'rows_dtype': 'float16'}),
        ('both_float16', {'values_dtype': 'float16', 'rows_dtype': 'float16'}),
    ):
        sel, wall, cpu = timed(novelselect, X, k, density=density, preset='official', seed=42, lookahead=lookahead, device='numpy', **kw)
        out[name] = {'select_cpu_s': cpu, **agreement(sel.indices, exact)}
    _, truth = knn(X, 10, metric='sqeuclidean', index='exact')
    for index in ('hnsw', 'ivf'):
        (_, ids), wall, cpu = timed(knn, X, 10, metric='sqeuclidean', index=index)
        sigma, _, sigma_cpu = timed(knn_density, X, None, 10, power=0.5, index=index)
        sel = novelselect(X, k, density=sigma, preset='official', seed=42, lookahead=lookahead, device='numpy')
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), truth.tolist())]))
        rel = np.abs(sigma.astype(np.float64) - density) / density
        out[f'density_{index}'] = {
            'knn_cpu_s': cpu,
            'density_cpu_s': sigma_cpu,
            'recall_at_10': recall,
            'density_relative_error_mean': float(rel.mean()),
            'density_relative_error_max': float(rel.max()),
            **agreement(sel.indices, exact),
        }
    return out


def score_gaps(n: int = 20000, d: int = 384, k: int = 1000, at=(50, 100, 300, 600, 900, 999), slacks=(0.001, 0.01, 0.03, 0.1)) -> dict:
    "After t picks of the incremental run, the number of unpicked rows whose exact score is within each relative slack of the best."
    from datasel.geometry.neighbors import l2_normalize
    from datasel.selectors.novelselect import novelty_scores

    X = mixture(n, d)
    density = knn_density(X, None, 10, power=0.5, index='exact')
    picks = novelselect(X, k, density=density, preset='official', seed=42, device='numpy').indices
    U, rows = l2_normalize(X).astype(np.float32), []
    for t in at:
        s = novelty_scores(U, density, picks[:t]).astype(np.float64)
        s = s[np.isfinite(s)]
        rows.append(
            {
                'picks': t,
                'median_over_best': float(np.median(s) / s.max()),
                **{f'within_{e:g}': int((s >= s.max() * (1 - e)).sum()) for e in slacks},
            }
        )
    return {'n': n, 'd': d, 'k': k, 'rows': rows}


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true', help='small sizes only')
    p.add_argument('--threads', default='1')
    p.add_argument('--lookahead', type=int, default=8)
    p.add_argument('--gaps', action='store_true', help='only the score-gap study (results/novelselect_gaps.json)')
    a = p.parse_args()
    if a.gaps:
        gaps = score_gaps()
        for row in gaps['rows']:
            print(row, flush=True)
        with atomic_write(OUT.with_name('novelselect_gaps.json')) as f:
            json.dump(gaps, f, indent=1)
        return
    d = 384
    cases = [(2000, 200, 1.0), (5000, 500, 1.0), (5000, 500, 0.0), (5000, 500, 2.0)]
    cases += [(5000, 500, 1.0) if a.quick else (20000, 1000, 1.0)]  # the last case (alpha = 1) also serves the levers
    load_before = os.getloadavg()
    novelselect(mixture(500, d), 20)  # warm-up: imports, faiss, thread pools
    results = []
    for n, k, alpha in cases:
        case, fast, density = run_case(mixture(n, d), k, alpha, a.lookahead)
        results.append(case)
        print(
            f"n={n:6d} k={k:5d} alpha={alpha:g}: incremental {case['incremental']['select_cpu_s']:7.2f} s "
            f"({case['incremental']['column_passes']} passes), official {case['official']['select_cpu_s']:8.1f} s "
            f"-> {case['speedup_cpu']:6.1f}x (whole call with the exact density {case['whole_call_speedup_cpu']:.1f}x); "
            f"agreement {case['agreement']}; peak RSS {case['official']['peak_rss_gib']:.2f} GiB",
            flush=True,
        )
    n, k, alpha = cases[-1]
    assert alpha == 1.0, 'the levers are measured at alpha = 1'
    lever = levers(mixture(n, d), k, fast.indices, density.astype(np.float64), a.lookahead)
    for name, figures in lever.items():
        print(name, figures, flush=True)
    result = {
        'benchmark': 'novelselect: exact incremental vs the official step (CPU seconds of the selection loop), and the large-pool levers',
        'cases': results,
        'levers': {'n': n, 'd': d, 'k': k, **lever},
        'peak_rss_gib': peak_rss_gib(),
        'machine': machine_info(a.threads, load_before),
    }
    with atomic_write(OUT) as f:
        json.dump(result, f, indent=1)
    print(f'wrote {OUT}')


if __name__ == '__main__':
    main()
