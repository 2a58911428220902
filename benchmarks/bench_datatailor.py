"""DataTailor at scale on CPU: informativeness, per-task Ward clustering, uniqueness/representativeness and the
collaborative selection, against the official approach.

Parts (each measured in a fresh subprocess, so that its peak memory is its own):
* `scoring`: informativeness of synthetic token states (L_i uniform in 16..128 tokens, d = 256), 20K samples per task.
  datasel's batched float64 Gram-eigenvalue route against the official per-sample float32 SVD with a Python entropy
  loop (on the first 2,000 samples; the official time for all samples is extrapolated linearly).
* `scoring_long`: the same comparison on 60 long samples (L_i in 500..1000 tokens, d = 1024), closer to the paper's
  LLaVA samples (L ~ 600-2,500, d = 4096).
* `ward` at n = 3,000 and 10,000 (one task, d = 64, 40 well-separated components): the official clustering (float64
  `torch.cdist`, the n x n matrix copied into the condensed vector by a Python double loop, Ward, cut at 0.1 x the top
  merge) against `fastcluster.linkage_vector` (exact) and the two-level route; labels compared.
* `pipeline`: `datatailor` on 2 tasks x 20K samples (64-d clustering features, per task a Gaussian mixture of 40
  components of spread 0.5..2 around centres of scale 4 (`separated`) or 1.5 (`overlapping`)): clustering, scoring and
  selection. 'auto' takes the two-level route at this size (n^2 d = 2.6e10 > 2e10); 'exact' runs fastcluster's Ward
  on each task. Their labels (ARI) and picks are compared.
* `memory` (`--memory`, writes datatailor_memory.json): `datatailor` on a memory-mapped float16 X (2 tasks x 8K, d = 256)
  with exact and two-level Ward; the tracemalloc peak of numpy buffers as a multiple of X's size (X is never loaded
  whole; the peak is one task's rows as float64 for exact Ward, float32 for two-level).

Threads: one BLAS / torch / faiss thread everywhere (the machine's two cores are shared with other work; with two
threads under that load, small-matrix LAPACK calls ran 20-50 times slower, which would swamp every comparison).

Time: wall seconds and CPU seconds of the process (with one thread, CPU time is the better measure on a shared
machine: wall time also counts the waits for a core; the load average before and after is recorded).

Memory: peak resident memory of the subprocess above its level once the inputs are built (getrusage ru_maxrss minus
the RSS at that point), which counts faiss, fastcluster and torch allocations too; for `scoring` that figure also
holds the synthetic token states generated chunk by chunk, so the tracemalloc peak (numpy buffers) of the
informativeness calls themselves is given as well. Writes benchmarks/results/datatailor.json.

Run: .venv/bin/python benchmarks/bench_datatailor.py [--quick]
"""

import argparse, json, os, platform, resource, subprocess, sys, time, tracemalloc
from pathlib import Path
import numpy as np
from _common import timed

OUT = Path(__file__).resolve().parent / 'results' / 'datatailor.json'
THREADS = '1'  # the 2 cores are shared: multi-threaded BLAS on small matrices was 20-50x slower under load


def rss_mib() -> float:
    "Current resident memory of this process (MiB)."
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def peak_mib() -> float:
    "Peak resident memory of this process so far (MiB)."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mixture_features(n: int, d: int, components: int, seed: int, scale: float = 4.0) -> np.ndarray:
    "Gaussian mixture with components of varied spread (0.5..2) around centres of scale `scale`, float32."
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=scale, size=(components, d))
    spread = rng.uniform(0.5, 2.0, size=components)
    comp = rng.integers(components, size=n)
    return (centres[comp] + spread[comp, None] * rng.normal(size=(n, d))).astype(np.float32)


def token_state_chunks(n: int, d: int, seed: int, chunk: int = 2000):
    "Synthetic token states in chunks: L_i in 16..128 rows, effective rank varying per sample."
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        out = []
        for _ in range(min(chunk, n - start)):
            L, r = int(rng.integers(16, 129)), int(rng.integers(2, 64))
            out.append((rng.normal(size=(L, r)) @ rng.normal(size=(r, d)) + 0.05 * rng.normal(size=(L, d))).astype(np.float32))
        yield out


def official_informativeness(states: list) -> tuple[np.ndarray, np.ndarray]:
    "The official per-sample computation: float32 SVD, then the entropy of the normalised values in a Python loop."
    import torch

    info, tau = [], []
    for h in states:
        s = torch.linalg.svd(torch.from_numpy(h), full_matrices=False)[1]
        p = s / s.sum()
        ent = 0.0
        for j in range(len(p)):
            ent -= float(p[j]) * float(torch.log(p[j]))
        info.append(ent)
        tau.append(float(p.max()))
    return np.array(info), np.array(tau)


def official_ward_labels(X: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    "The official clustering of one task: float64 cdist, Python double loop to the condensed vector, Ward, cut."
    import torch
    from scipy.cluster.hierarchy import linkage, fcluster

    rows = torch.tensor([x.tolist() for x in X.astype(np.float64)], dtype=torch.float64)
    full = torch.cdist(rows, rows, p=2).numpy()
    n = len(full)
    condensed = np.empty(n * (n - 1) // 2)
    k = 0
    for i in range(n):
        for j in range(i + 1, n):
            condensed[k] = full[i, j]
            k += 1
    Z = linkage(condensed, method='ward')
    return fcluster(Z, threshold * Z[-1, 2], criterion='distance')


# ---------------------------------------------------------------- parts (run in a subprocess each)
def part_scoring(args) -> dict:
    from datasel.selectors.datatailor import informativeness

    n, d = args.tasks * args.n, 256
    seconds, cpu, tm_peak, info = 0.0, 0.0, 0, []
    first = None
    base = rss_mib()
    for chunk in token_state_chunks(n, d, seed=1):
        if first is None:
            first = chunk
        tracemalloc.start()
        tracemalloc.reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        i, _ = informativeness(chunk)
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
        tm_peak = max(tm_peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        info.append(i)
    m = min(2000, len(first))
    (off_info, off_tau), off_s, off_cpu = timed(official_informativeness, first[:m])
    (our_info, our_tau), our_s, our_cpu = timed(informativeness, first[:m])
    return {
        'samples': n,
        'token_dim': d,
        'tokens_per_sample': '16..128',
        'datasel_s': seconds,
        'datasel_cpu_s': cpu,
        'datasel_tracemalloc_peak_mib': tm_peak / 2**20,
        'datasel_peak_rss_extra_mib': peak_mib() - base,
        'compare_samples': m,
        'official_s_on_compare': off_s,
        'datasel_s_on_compare': our_s,
        'official_cpu_s_on_compare': off_cpu,
        'datasel_cpu_s_on_compare': our_cpu,
        'speedup_on_compare': off_s / our_s,
        'cpu_speedup_on_compare': off_cpu / our_cpu,
        'official_s_extrapolated_all': off_s * n / m,
        'max_abs_diff_informativeness': float(np.abs(off_info - our_info).max()),
        'max_abs_diff_tau': float(np.abs(off_tau - our_tau).max()),
        'mean_informativeness': float(np.concatenate(info).mean()),
    }


def part_scoring_long(args) -> dict:
    from datasel.selectors.datatailor import informativeness

    rng = np.random.default_rng(4)
    states = []
    for _ in range(60):
        L, r = int(rng.integers(500, 1001)), int(rng.integers(50, 400))
        states.append((rng.normal(size=(L, r)) @ rng.normal(size=(r, 1024)) + 0.05 * rng.normal(size=(L, 1024))).astype(np.float32))
    base = rss_mib()
    (off_info, off_tau), off_s, off_cpu = timed(official_informativeness, states)
    (our_info, our_tau), our_s, our_cpu = timed(informativeness, states)
    return {
        'samples': 60,
        'token_dim': 1024,
        'tokens_per_sample': '500..1000',
        'official_s': off_s,
        'datasel_s': our_s,
        'official_cpu_s': off_cpu,
        'datasel_cpu_s': our_cpu,
        'speedup': off_s / our_s,
        'cpu_speedup': off_cpu / our_cpu,
        'max_abs_diff_informativeness': float(np.abs(off_info - our_info).max()),
        'max_abs_diff_tau': float(np.abs(off_tau - our_tau).max()),
        'peak_rss_extra_mib': peak_mib() - base,
    }


def part_ward(args) -> dict:
    from datasel.selectors.datatailor import cluster_within_tasks

    X = mixture_features(args.n, 64, 40, seed=2, scale=args.scale)
    base = rss_mib()
    if args.method == 'official':
        labels, seconds, cpu = timed(official_ward_labels, X)
    else:
        labels, seconds, cpu = timed(cluster_within_tasks, X, np.zeros(len(X)), method=args.method)
    return {'seconds': seconds, 'cpu_s': cpu, 'peak_rss_extra_mib': peak_mib() - base, 'labels': np.asarray(labels).tolist()}


def part_pipeline(args) -> dict:
    from datasel.selectors.datatailor import datatailor

    per, T = args.n, args.tasks
    X = np.vstack([mixture_features(per, 64, 40, seed=10 + t, scale=args.scale) for t in range(T)])
    tasks = np.repeat(np.arange(T), per)
    rng = np.random.default_rng(3)
    info, tau, rounds = (
        rng.gamma(2, 0.5, size=len(X)),
        np.clip(rng.normal(0.6, 0.15, size=len(X)), 0.05, 1),
        rng.integers(1, 7, size=len(X)),
    )
    base = rss_mib()
    sel, seconds, cpu = timed(datatailor, X, 0.15, tasks=tasks, informativeness=info, tau=tau, rounds=rounds, cluster_method=args.method)
    return {
        'routes': sel.info['cluster_routes'],
        'seconds': seconds,
        'cpu_s': cpu,
        'timings': sel.timings,
        'peak_rss_extra_mib': peak_mib() - base,
        'clusters': int(sel.info['labels'].max()),
        'selected': len(sel),
        'labels': sel.info['labels'].tolist(),
        'indices': sel.indices.tolist(),
    }


def part_memory(args) -> dict:
    "Peak numpy memory (tracemalloc) of datatailor on a memory-mapped float16 X, as a multiple of X's size."
    import tempfile
    from datasel.selectors.datatailor import datatailor

    per, T, d = args.n, args.tasks, 256
    tasks = np.repeat(np.arange(T), per)
    rng = np.random.default_rng(3)
    info, tau = rng.gamma(2, 0.5, size=T * per), np.clip(rng.normal(0.6, 0.15, size=T * per), 0.05, 1)
    with tempfile.TemporaryDirectory() as tmp:
        mm = np.lib.format.open_memmap(f'{tmp}/X.npy', mode='w+', dtype=np.float16, shape=(T * per, d))
        for t in range(T):
            mm[t * per : (t + 1) * per] = mixture_features(per, d, 40, seed=10 + t, scale=args.scale)
        mm.flush()
        del mm
        X = np.load(f'{tmp}/X.npy', mmap_mode='r')
        base = rss_mib()
        tracemalloc.start()
        sel, seconds, cpu = timed(datatailor, X, 0.15, tasks=tasks, informativeness=info, tau=tau, cluster_method=args.method)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return {
            'tasks': T,
            'per_task': per,
            'd': d,
            'dtype': 'float16 (memory-mapped)',
            'x_mib': X.nbytes / 2**20,
            'routes': sel.info['cluster_routes'],
            'seconds': seconds,
            'cpu_s': cpu,
            'selected': len(sel),
            'tracemalloc_peak_mib': peak / 2**20,
            'peak_over_x': peak / X.nbytes,
            'peak_rss_extra_mib_incl_mapped_pages': peak_mib() - base,
        }


PARTS = {'scoring': part_scoring, 'scoring_long': part_scoring_long, 'ward': part_ward, 'pipeline': part_pipeline, 'memory': part_memory}
MEMORY_OUT = OUT.with_name('datatailor_memory.json')


def run_part(part: str, **options) -> dict:
    "Run one part in a fresh interpreter; return its JSON result."
    env = dict(os.environ, OMP_NUM_THREADS=THREADS, MKL_NUM_THREADS=THREADS, OPENBLAS_NUM_THREADS=THREADS)
    cmd = [sys.executable, __file__, '--part', part] + [a for k, v in options.items() for a in (f'--{k}', str(v))]
    print('running', part, options, flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare_ward(n: int) -> dict:
    "The official clustering of one task against exact and two-level Ward, on the same well-separated mixture."
    from sklearn.metrics import adjusted_rand_score

    runs = {m: run_part('ward', n=n, method=m) for m in ('official', 'exact', 'two_level')}
    official = np.array(runs['official']['labels'])
    out = {'n': n, 'd': 64}
    for m, r in runs.items():
        labels = np.array(r.pop('labels'))
        out[m] = dict(
            r,
            clusters=int(labels.max()),
            identical_labels_to_official=bool(np.array_equal(labels, official)),
            ari_vs_official=float(adjusted_rand_score(official, labels)),
        )
    for m in ('exact', 'two_level'):
        out[f'cpu_speedup_{m}_vs_official'] = runs['official']['cpu_s'] / runs[m]['cpu_s']
    return out


def compare_pipeline(per_task: int, tasks: int, scale: float) -> dict:
    "datatailor with 'auto' (two-level at this size) against exact Ward, on the same pool."
    from sklearn.metrics import adjusted_rand_score

    auto, exact = (run_part('pipeline', n=per_task, tasks=tasks, scale=scale, method=m) for m in ('auto', 'exact'))
    la, le = np.array(auto.pop('labels')), np.array(exact.pop('labels'))
    ia, ie = set(auto.pop('indices')), set(exact.pop('indices'))
    return {
        'tasks': tasks,
        'per_task': per_task,
        'd': 64,
        'centre_scale': scale,
        'auto': auto,
        'exact': exact,
        'ari_two_level_vs_exact_per_task': [
            float(adjusted_rand_score(le[t * per_task : (t + 1) * per_task], la[t * per_task : (t + 1) * per_task])) for t in range(tasks)
        ],
        'selection_overlap_two_level_vs_exact': len(ia & ie) / len(ie),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true', help='small sizes (2K per task, n = 1K for the official Ward)')
    ap.add_argument('--memory', action='store_true', help='only the memory-mapped float16 runs (writes datatailor_memory.json)')
    ap.add_argument('--part', choices=sorted(PARTS), help=argparse.SUPPRESS)
    ap.add_argument('--n', type=int, default=20000, help=argparse.SUPPRESS)
    ap.add_argument('--tasks', type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument('--scale', type=float, default=4.0, help=argparse.SUPPRESS)
    ap.add_argument('--method', default='exact', help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        import torch

        torch.set_num_threads(int(THREADS))
        print(json.dumps(PARTS[args.part](args)))
        return
    if args.memory:
        report = {m: run_part('memory', n=8000, tasks=2, method=m) for m in ('exact', 'two_level')}
        MEMORY_OUT.write_text(json.dumps(report, indent=1) + '\n')
        print(json.dumps(report, indent=1))
        return
    per_task, ward_sizes = (2000, (1000,)) if args.quick else (20000, (3000, 10000))
    load_before = os.getloadavg()
    report = {
        'quick': args.quick,
        'scoring': run_part('scoring', n=per_task, tasks=2),
        'scoring_long': run_part('scoring_long'),
        'clustering_one_task': [compare_ward(n) for n in ward_sizes],
        'pipeline_separated': compare_pipeline(per_task, 2, 4.0),
        'pipeline_overlapping': compare_pipeline(per_task, 2, 1.5),
    }
    report['machine'] = {
        'python': platform.python_version(),
        'threads': int(THREADS),
        'cpus': os.cpu_count(),
        'processor': platform.processor() or platform.machine(),
        'load_average_1_5_15_before': load_before,
        'load_average_1_5_15_after': os.getloadavg(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(report, indent=1) + '\n')
    os.replace(tmp, OUT)
    print(json.dumps(report, indent=1))


if __name__ == '__main__':
    main()
