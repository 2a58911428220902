"""DataTailor at scale on CPU: informativeness, per-task Ward clustering, uniqueness/representativeness and the
collaborative selection, against the official approach.

Parts (each measured in a fresh subprocess, so that its peak memory is its own):
* `scoring`: informativeness of synthetic token states (L_i uniform in 16..128 tokens, d = 256), 20K samples per task.
  datasel's batched float64 Gram-eigenvalue route against the official per-sample float32 SVD with a Python entropy
  loop (on the first 2,000 samples; the official time for all samples is extrapolated linearly).
* `official_ward` / `exact_ward` / `two_level_ward` at n = 3,000 (one task, d = 64): the official clustering (float64
  `torch.cdist`, the n x n matrix copied into the condensed vector by a Python double loop, Ward, cut at 0.1 x the top
  merge) against `fastcluster.linkage_vector` and the two-level route; labels compared.
* `pipeline_auto` / `pipeline_exact`: `datatailor` on 2 tasks x 20K samples (64-d clustering features, a Gaussian
  mixture of 40 components of varied spread per task): clustering, scoring and selection. 'auto' takes the two-level
  route at this size (n^2 d = 2.6e10 > 2e10); 'exact' runs fastcluster's Ward on each task. Their labels and picks
  are compared.

Memory: peak resident memory of the subprocess above its level once the inputs are built (getrusage ru_maxrss minus
the RSS at that point), which counts faiss, fastcluster and torch allocations too; for `scoring` also the
tracemalloc peak (numpy buffers) of the informativeness calls. Writes benchmarks/results/datatailor.json.

Run: .venv/bin/python benchmarks/bench_datatailor.py [--quick]
"""
import argparse, json, os, platform, resource, subprocess, sys, time, tracemalloc
from pathlib import Path
import numpy as np

OUT = Path(__file__).resolve().parent / 'results' / 'datatailor.json'
THREADS = '2'


def rss_mib() -> float:
    "Current resident memory of this process (MiB)."
    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def peak_mib() -> float:
    "Peak resident memory of this process so far (MiB)."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mixture_features(n: int, d: int, components: int, seed: int) -> np.ndarray:
    "Gaussian mixture with components of varied spread, float32."
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4, size=(components, d))
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
        for j in range(len(p)): ent -= float(p[j]) * float(torch.log(p[j]))
        info.append(ent); tau.append(float(p.max()))
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
            condensed[k] = full[i, j]; k += 1
    Z = linkage(condensed, method='ward')
    return fcluster(Z, threshold * Z[-1, 2], criterion='distance')


# ---------------------------------------------------------------- parts (run in a subprocess each)
def part_scoring(args) -> dict:
    from datasel.datatailor import informativeness
    n, d = args.tasks * args.per_task, 256
    seconds, tm_peak, info = 0.0, 0, []
    first = None
    base = rss_mib()
    for chunk in token_state_chunks(n, d, seed=1):
        if first is None: first = chunk
        tracemalloc.start(); tracemalloc.reset_peak()
        t0 = time.perf_counter()
        i, _ = informativeness(chunk)
        seconds += time.perf_counter() - t0
        tm_peak = max(tm_peak, tracemalloc.get_traced_memory()[1]); tracemalloc.stop()
        info.append(i)
    m = min(2000, len(first))
    t0 = time.perf_counter(); off_info, off_tau = official_informativeness(first[:m]); off_s = time.perf_counter() - t0
    t0 = time.perf_counter(); our_info, our_tau = informativeness(first[:m]); our_s = time.perf_counter() - t0
    return {'samples': n, 'token_dim': d, 'tokens_per_sample': '16..128', 'datasel_s': seconds,
            'datasel_tracemalloc_peak_mib': tm_peak / 2**20, 'datasel_peak_rss_extra_mib': peak_mib() - base,
            'compare_samples': m, 'official_s_on_compare': off_s, 'datasel_s_on_compare': our_s,
            'speedup_on_compare': off_s / our_s, 'official_s_extrapolated_all': off_s * n / m,
            'max_abs_diff_informativeness': float(np.abs(off_info - our_info).max()),
            'max_abs_diff_tau': float(np.abs(off_tau - our_tau).max()),
            'mean_informativeness': float(np.concatenate(info).mean())}


def part_ward(args) -> dict:
    from datasel.datatailor import cluster_within_tasks
    X = mixture_features(args.small, 64, 40, seed=2)
    base = rss_mib()
    t0 = time.perf_counter()
    if args.part == 'official_ward': labels = official_ward_labels(X)
    else: labels = cluster_within_tasks(X, np.zeros(len(X)), method=args.part.replace('_ward', ''))
    seconds = time.perf_counter() - t0
    return {'n': len(X), 'd': 64, 'seconds': seconds, 'peak_rss_extra_mib': peak_mib() - base, 'labels': np.asarray(labels).tolist()}


def part_pipeline(args) -> dict:
    from datasel.datatailor import datatailor
    per, T = args.per_task, args.tasks
    X = np.vstack([mixture_features(per, 64, 40, seed=10 + t) for t in range(T)])
    tasks = np.repeat(np.arange(T), per)
    rng = np.random.default_rng(3)
    info, tau, rounds = rng.gamma(2, 0.5, size=len(X)), np.clip(rng.normal(0.6, 0.15, size=len(X)), 0.05, 1), rng.integers(1, 7, size=len(X))
    base = rss_mib()
    method = args.part.replace('pipeline_', '')
    t0 = time.perf_counter()
    sel = datatailor(X, tasks, info, tau, rounds, budget=0.15, cluster_method=method)
    seconds = time.perf_counter() - t0
    return {'tasks': T, 'per_task': per, 'd': 64, 'cluster_method': method, 'routes': sel.info['cluster_routes'],
            'seconds': seconds, 'timings': sel.info['timings'], 'peak_rss_extra_mib': peak_mib() - base,
            'clusters': int(sel.info['labels'].max()), 'selected': len(sel),
            'labels': sel.info['labels'].tolist(), 'indices': sel.indices.tolist()}


PARTS = {'scoring': part_scoring, 'official_ward': part_ward, 'exact_ward': part_ward, 'two_level_ward': part_ward,
         'pipeline_auto': part_pipeline, 'pipeline_exact': part_pipeline}


def run_part(name: str, args) -> dict:
    "Run one part in a fresh interpreter; return its JSON result."
    env = dict(os.environ, OMP_NUM_THREADS=THREADS, MKL_NUM_THREADS=THREADS, OPENBLAS_NUM_THREADS=THREADS)
    cmd = [sys.executable, __file__, '--part', name, '--per-task', str(args.per_task), '--tasks', str(args.tasks),
           '--small', str(args.small)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true', help='small sizes (2K per task, n = 1K for the official Ward)')
    ap.add_argument('--part', choices=sorted(PARTS), help=argparse.SUPPRESS)
    ap.add_argument('--per-task', type=int, default=20000)
    ap.add_argument('--tasks', type=int, default=2)
    ap.add_argument('--small', type=int, default=3000)
    args = ap.parse_args()
    if args.part:
        import torch; torch.set_num_threads(int(THREADS))
        print(json.dumps(PARTS[args.part](args)))
        return
    if args.quick: args.per_task, args.small = 2000, 1000
    from sklearn.metrics import adjusted_rand_score
    results = {}
    for name in PARTS:
        print(f'running {name} ...', flush=True)
        results[name] = run_part(name, args)
    ward = {k: results.pop(k) for k in ('official_ward', 'exact_ward', 'two_level_ward')}
    official = np.array(ward['official_ward']['labels'])
    clustering = {'n': ward['official_ward']['n'], 'd': 64}
    for k, r in ward.items():
        labels = np.array(r.pop('labels'))
        clustering[k] = {'seconds': r['seconds'], 'peak_rss_extra_mib': r['peak_rss_extra_mib'], 'clusters': int(labels.max()),
                         'identical_labels_to_official': bool(np.array_equal(labels, official)),
                         'ari_vs_official': float(adjusted_rand_score(official, labels))}
    clustering['speedup_exact_vs_official'] = ward['official_ward']['seconds'] / ward['exact_ward']['seconds']
    auto, exact = results.pop('pipeline_auto'), results.pop('pipeline_exact')
    la, le = np.array(auto.pop('labels')), np.array(exact.pop('labels'))
    ia, ie = set(auto.pop('indices')), set(exact.pop('indices'))
    per = auto['per_task']
    pipeline = {'auto': auto, 'exact': exact,
                'ari_two_level_vs_exact_per_task': [float(adjusted_rand_score(le[t * per:(t + 1) * per], la[t * per:(t + 1) * per]))
                                                    for t in range(auto['tasks'])],
                'selection_overlap_two_level_vs_exact': len(ia & ie) / len(ie)}
    report = {'machine': {'python': platform.python_version(), 'cpu_threads': int(THREADS), 'processor': platform.processor() or platform.machine()},
              'quick': args.quick, 'scoring': results['scoring'], 'clustering_one_task': clustering, 'pipeline': pipeline}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(report, indent=1) + '\n'); os.replace(tmp, OUT)
    print(json.dumps(report, indent=1))


if __name__ == '__main__':
    main()
