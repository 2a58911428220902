"""Millions of rows out of core (issue 15, item 4): k-center, kM-Closest, kM-Random, kMQ, the Deita filter and PreSel on
a memory-mapped float16 pool (2M x 768 by default, 2.9 GiB), each method in a fresh process, with its wall time, peak
RSS (VmHWM: memory-mapped file pages included) and peak anonymous memory (sampled), against the target of 2x the size
of X. The pool is a Gaussian mixture written once to --dir and reused.

Usage: python benchmarks/bench_scale.py [--n 2000000] [--d 768] [--methods kcenter,kmeans_closest,...]
                                        [--dir /tmp/datasel_scale] [--out benchmarks/results/scale.json]
"""

import argparse, json, os, platform, sys, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))
from _common import PeakAnon, proc_status_mib, reset_peak_rss, run_child  # noqa: E402

TASKS = 10  # PreSel's tasks: row i belongs to task i % TASKS
# method -> (budget, options): budgets sized so one method runs in minutes on two cores; the options are recorded
METHODS = {
    'kcenter': (100, {}),
    'kmeans_closest': (100, {}),
    'kmeans_random': (1000, {'clusters': 100}),
    'kmq': (1000, {'clusters': 100}),
    'deita': (1000, {'threshold': 0.9}),
    'presel': (1000, {'clusters': 20}),
}


def write_pool(path: Path, n: int, d: int, seed: int = 0, components: int = 100) -> None:
    "A float16 Gaussian mixture of n x d rows, written block by block (never whole in RAM)."
    rng = np.random.default_rng(seed)
    centres = (rng.normal(size=(components, d)) * 2).astype(np.float32)
    X = np.lib.format.open_memmap(path.with_suffix('.tmp.npy'), 'w+', np.float16, (n, d))
    for s in range(0, n, 100_000):
        m = min(n, s + 100_000) - s
        X[s : s + m] = centres[rng.integers(components, size=m)] + rng.standard_normal((m, d), dtype=np.float32)
    X.flush()
    del X
    os.replace(path.with_suffix('.tmp.npy'), path)


def run_method(name: str, pool: str, budget: int) -> dict:
    "Run one method on the memory-mapped pool in this process; time, memory and what it returned."
    from datasel.geometry.neighbors import set_threads
    from datasel.selectors import baselines, kmq, presel

    set_threads()
    X = np.load(pool, mmap_mode='r')
    n = len(X)
    options = METHODS[name][1]
    rng = np.random.default_rng(1)
    quality = rng.random(n)
    tasks = np.arange(n) % TASKS
    calls = {
        'kcenter': lambda: baselines.kcenter_greedy(X, budget, seed=0, **options),
        'kmeans_closest': lambda: baselines.kmeans_closest(X, budget, seed=0, **options),
        'kmeans_random': lambda: kmq.kmeans_random(X, budget, seed=0, **options),
        'kmq': lambda: kmq.kmq(X, budget, quality=quality, seed=0, **options),
        'deita': lambda: baselines.deita_filter(X, budget, quality=quality, seed=0, **options),
        'presel': lambda: presel.presel(X, budget, tasks=tasks, task_weights=np.full(TASKS, 1 / TASKS), seed=0, **options),
    }
    reset_peak_rss()
    before = proc_status_mib()
    with PeakAnon() as anon:
        t, cpu = time.perf_counter(), time.process_time()
        sel = calls[name]()
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    after = proc_status_mib()
    x_mib = X.nbytes / 2**20
    return {
        'budget': budget,
        'options': options,
        'seconds': round(wall, 2),
        'cpu_seconds': round(cpu, 2),
        'picked': len(sel),
        'shortfall': int(sel.shortfall),
        'timings': {k: round(v, 2) for k, v in (sel.timings or {}).items()},
        'x_mib': round(x_mib, 1),
        'rss_before_mib': before['VmRSS'],
        'peak_rss_mib': after['VmHWM'],
        'peak_rss_over_x': round(after['VmHWM'] / x_mib, 3),
        'peak_rss_added_over_x': round((after['VmHWM'] - before['VmRSS']) / x_mib, 3),
        'peak_anon_mib': round(anon.peak_mib, 1),
        'anon_before_mib': before['RssAnon'],
        'peak_anon_over_x': round(anon.peak_mib / x_mib, 3),
        'rss_file_end_mib': after['RssFile'],
        'fits_2x': after['VmHWM'] <= 2 * x_mib,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=2_000_000)
    ap.add_argument('--d', type=int, default=768)
    ap.add_argument('--methods', default=','.join(METHODS))
    ap.add_argument('--dir', default='/tmp/datasel_scale')
    ap.add_argument('--timeout', type=float, default=3600, help='seconds per method')
    ap.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'scale.json'))
    ap.add_argument('--budgets', default='', help='overrides, e.g. kcenter=10,kmeans_closest=50')
    ap.add_argument('--child', nargs=3, metavar=('METHOD', 'POOL', 'BUDGET'), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_method(args.child[0], args.child[1], int(args.child[2]))))
        return
    budgets = {m: b for m, (b, _) in METHODS.items()} | {k: int(v) for k, v in (kv.split('=') for kv in args.budgets.split(',') if kv)}
    from datasel.core import atomic_write

    pool = Path(args.dir) / f'pool_{args.n}x{args.d}_f16.npy'
    pool.parent.mkdir(parents=True, exist_ok=True)
    if not pool.exists():
        t = time.perf_counter()
        write_pool(pool, args.n, args.d)
        print(f'wrote {pool} in {time.perf_counter() - t:.0f} s', flush=True)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {'benchmark': 'scale', 'runs': {}}
    key = f'{args.n}x{args.d}_float16_memmap'
    run = results['runs'].setdefault(key, {})
    run['setup'] = {
        'n': args.n,
        'd': args.d,
        'x_gib': round(args.n * args.d * 2 / 2**30, 3),
        'pool': 'Gaussian mixture, 100 components',
        'tasks': TASKS,
        'cpus': os.cpu_count(),
        'platform': platform.platform(),
        'rss_note': 'peak_rss (VmHWM) counts the memory-mapped file pages a method touched; peak_anon is the '
        'memory the method allocated (sampled every 10 ms)',
    }
    run.setdefault('methods', {})
    for name in args.methods.split(','):
        load = [round(x, 2) for x in os.getloadavg()]
        print(f'{name} ...', flush=True)
        entry = run_child(Path(__file__), ['--child', name, pool, budgets[name]], args.timeout)
        entry.setdefault('budget', budgets[name])
        entry['load_average_at_start'] = load
        run['methods'][name] = entry
        print(f'  {json.dumps(entry)}', flush=True)
        with atomic_write(out) as f:
            json.dump(results, f, indent=1)
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
