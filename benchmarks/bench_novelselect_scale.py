"""NovelSelect at the NovelSum paper's scale: 10K picks from 396K x 4096 (the size of LLaMA-3-8B states of the paper's
pool), end to end on this machine, from a memory-mapped float16 .npy.

Phases (wall seconds and memory of each are written to benchmarks/results/novelselect_scale.json as they finish,
and the selection's progress every 100 picks, so a killed run leaves its partial figures):

  write     synthetic clustered data (1,000 Gaussian components of varied spread around a common mean, the golden
            pool's recipe) written block by block into a float16 .npy under --dir (reused when present).
  density   NovelSum's kNN density, sigma = (mean squared L2 distance to the 10 nearest rows after the first hit
            + 1e-9)^-0.5, from an approximate index. --density ivf (default) is what `novelselect(..., index='auto')`
            runs at this size: `datasel.geometry.neighbors.knn(X, 10, metric='sqeuclidean', index='ivf')`, faiss IVF
            with float16 storage, 4 sqrt(n) lists, 16 probed, the candidates re-scored exactly (--float32-copy: from one
            float32 copy of the file, as novelselect does when its unit rows are float32). --density hnsw-m16 is
            the earlier run's own faiss IndexHNSWFlat (M = 16, efConstruction 40, efSearch 64).
  recall    --recall-queries random rows searched exactly (blockwise matrix products over the whole file):
            recall@10 of the HNSW neighbours and the relative error of sigma.
  select    `novelselect(X_memmap, 10000, density=sigma, preset='official', seed=42, values_dtype='float16')`: float32
            unit rows (one copy of X, 2x the float16 file), float16 stored values, `lookahead` columns per pass.

Peak memory is the process's VmHWM (it counts the pages of the memory-mapped file it touched); the file size is
recorded so that the peak can be read as a multiple of X.

Run: .venv/bin/python benchmarks/bench_novelselect_scale.py [--n 396000 --d 4096 --k 10000] [--threads 2]
"""

import argparse, os, sys

if __name__ == '__main__':
    _threads = sys.argv[sys.argv.index('--threads') + 1] if '--threads' in sys.argv else '2'
    for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS', 'DATASEL_NUM_THREADS'):
        os.environ[var] = _threads

import json, platform, time
from pathlib import Path
import numpy as np

from datasel.core import atomic_write
from datasel.selectors.novelselect import memory_needed, novelselect
from _common import proc_status_mib

OUT = Path(__file__).resolve().parent / 'results' / 'novelselect_scale.json'


def memory_status() -> dict:
    "Resident and peak resident memory of this process, GiB."
    m = proc_status_mib()
    return {'rss_gib': m['VmRSS'] / 1024, 'peak_rss_gib': m['VmHWM'] / 1024}


class Report:
    "The result file, rewritten atomically whenever a figure is added."

    def __init__(self, out: Path, **head):
        self.out, self.data = out, dict(head, phases={}, status='running')

    def phase(self, name: str, **figures):
        self.data['phases'][name] = dict(figures, **memory_status())
        self.save()

    def save(self):
        with atomic_write(self.out) as f:
            json.dump(self.data, f, indent=1)


def write_pool(path: Path, n: int, d: int, components: int = 1000, seed: int = 0, block: int = 8192) -> np.ndarray:
    "Clustered float16 rows written block by block into a .npy; returns it memory-mapped read-only."
    if path.exists():
        X = np.load(path, mmap_mode='r')
        if X.shape == (n, d) and X.dtype == np.float16:
            return X
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 1, d).astype(np.float32)
    centers = mu + 2.5 * rng.normal(0, 1, (components, d)).astype(np.float32)
    spreads = rng.uniform(0.25, 1.75, components).astype(np.float32)
    comp = rng.integers(0, components, n)
    out = np.lib.format.open_memmap(path, mode='w+', dtype=np.float16, shape=(n, d))
    for s in range(0, n, block):
        c = comp[s : s + block]
        out[s : s + block] = centers[c] + spreads[c, None] * rng.standard_normal((len(c), d), dtype=np.float32)
    out.flush()
    del out
    return np.load(path, mmap_mode='r')


def hnsw_density(
    X: np.ndarray, neighbors: int = 10, M: int = 16, ef_construction: int = 40, ef_search: int = 64, block: int = 16384
) -> tuple[np.ndarray, np.ndarray, dict]:
    "sigma from an HNSW index over X (float16 file converted block by block); also the neighbour ids, and phase times."
    import faiss

    t0 = time.perf_counter()
    index = faiss.IndexHNSWFlat(X.shape[1], M)
    index.hnsw.efConstruction = ef_construction
    for s in range(0, len(X), block):
        index.add(np.ascontiguousarray(X[s : s + block], dtype=np.float32))
    t_build = time.perf_counter() - t0
    index.hnsw.efSearch = ef_search
    sqdist = np.empty((len(X), neighbors + 1), dtype=np.float32)
    ids = np.empty((len(X), neighbors + 1), dtype=np.int64)
    for s in range(0, len(X), block):
        sqdist[s : s + block], ids[s : s + block] = index.search(np.ascontiguousarray(X[s : s + block], dtype=np.float32), neighbors + 1)
    t_search = time.perf_counter() - t0 - t_build
    del index
    sigma = (1.0 / (sqdist[:, 1:].astype(np.float64).mean(axis=1) + 1e-9) ** 0.5).astype(np.float32)
    return sigma, ids, {'build_s': t_build, 'search_s': t_search, 'M': M, 'ef_construction': ef_construction, 'ef_search': ef_search}


def ivf_density(X: np.ndarray, neighbors: int = 10, float32_copy: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    "sigma from the library's IVF search (what novelselect's index='auto' runs here); also the neighbour ids, and the time."
    from datasel.geometry.neighbors import IVF_NPROBE, _ivf_lists, knn

    t0 = time.perf_counter()
    sqdist, ids = knn(X, neighbors, metric='sqeuclidean', index='ivf', float32_copy=float32_copy)
    sigma = (1.0 / (sqdist.astype(np.float64).mean(axis=1) + 1e-9) ** 0.5).astype(np.float32)
    ids = np.concatenate([np.arange(len(X))[:, None], ids], axis=1)  # self first, as the HNSW search returns it
    return (
        sigma,
        ids,
        {'build_and_search_s': time.perf_counter() - t0, 'lists': _ivf_lists(len(X)), 'nprobe': IVF_NPROBE, 'float32_copy': float32_copy},
    )


def exact_neighbours(X: np.ndarray, queries: np.ndarray, neighbors: int = 10, block: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    "Exact squared L2 kNN (k + 1 hits, self included) of rows `queries` against all of X, by blockwise products."
    Q = np.asarray(X[queries], dtype=np.float32)
    qsq = np.einsum('ij,ij->i', Q, Q)
    best_d = np.full((len(Q), 0), np.inf, dtype=np.float32)
    best_i = np.empty((len(Q), 0), dtype=np.int64)
    for s in range(0, len(X), block):
        B = np.asarray(X[s : s + block], dtype=np.float32)
        D = qsq[:, None] + np.einsum('ij,ij->i', B, B)[None, :] - 2 * Q @ B.T
        cand_d = np.concatenate([best_d, D], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(s, s + len(B)), D.shape)], axis=1)
        keep = np.argpartition(cand_d, neighbors, axis=1)[:, : neighbors + 1]
        best_d, best_i = np.take_along_axis(cand_d, keep, 1), np.take_along_axis(cand_i, keep, 1)
    order = np.argsort(best_d, axis=1)
    return np.take_along_axis(best_d, order, 1), np.take_along_axis(best_i, order, 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--n', type=int, default=396_000)
    p.add_argument('--d', type=int, default=4096)
    p.add_argument('--k', type=int, default=10_000)
    p.add_argument('--dir', default='/tmp/datasel_scale')
    p.add_argument('--threads', default='2')
    p.add_argument('--lookahead', type=int, default=16)
    p.add_argument('--density', choices=('ivf', 'hnsw-m16'), default='ivf')
    p.add_argument('--recall-queries', type=int, default=200)
    p.add_argument(
        '--float32-copy', action='store_true', help='IVF density: search one float32 copy of the float16 file (2x its size in RAM)'
    )
    p.add_argument('--out', default=str(OUT))
    a = p.parse_args()
    if a.float32_copy and a.density != 'ivf':
        p.error('--float32-copy: only the IVF density (--density ivf) searches a float32 copy')
    import faiss

    faiss.omp_set_num_threads(int(a.threads))
    folder = Path(a.dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f'pool_{a.n}x{a.d}_f16.npy'
    report = Report(
        Path(a.out),
        benchmark='novelselect at the NovelSum paper scale, end to end',
        n=a.n,
        d=a.d,
        k=a.k,
        lookahead=a.lookahead,
        density=a.density,
        threads=a.threads,
        file=str(path),
        started=time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()),
        machine={
            'cpus': os.cpu_count(),
            'load_before': os.getloadavg(),
            'python': platform.python_version(),
            'numpy': np.__version__,
            'faiss': faiss.__version__,
        },
        memory_model_gib={
            k: v / 2**30
            for k, v in memory_needed(
                a.n, a.d, a.k, values_dtype='float16', lookahead=a.lookahead, index={'ivf': 'ivf', 'hnsw-m16': 'hnsw'}[a.density]
            ).items()
        },
    )
    t0 = time.perf_counter()
    X = write_pool(path, a.n, a.d)
    report.data['file_gib'] = path.stat().st_size / 2**30
    report.phase('write', wall_s=time.perf_counter() - t0)

    t0 = time.perf_counter()
    sigma, hnsw_ids, figures = ivf_density(X, float32_copy=a.float32_copy) if a.density == 'ivf' else hnsw_density(X)
    report.phase('density', wall_s=time.perf_counter() - t0, **figures)
    np.save(folder / f'sigma_{a.density}.npy', sigma)

    t0 = time.perf_counter()
    queries = np.sort(np.random.default_rng(1).choice(a.n, a.recall_queries, replace=False))
    exact_d, exact_i = exact_neighbours(X, queries)
    sigma_exact = 1.0 / (exact_d[:, 1:].astype(np.float64).mean(axis=1) + 1e-9) ** 0.5
    recall = np.mean([len(set(h[1:]) & set(e[1:])) / 10 for h, e in zip(hnsw_ids[queries], exact_i)])
    rel = np.abs(sigma[queries] - sigma_exact) / sigma_exact
    report.phase(
        'recall',
        wall_s=time.perf_counter() - t0,
        queries=int(a.recall_queries),
        recall_at_10=float(recall),
        sigma_relative_error_mean=float(rel.mean()),
        sigma_relative_error_max=float(rel.max()),
    )
    del hnsw_ids

    started = time.perf_counter()

    def progress(picks: int, seconds: float):
        report.data['progress'] = dict(picks=picks, select_s=seconds, since_select_call_s=time.perf_counter() - started, **memory_status())
        report.save()

    sel = novelselect(
        X, a.k, density=sigma, preset='official', seed=42, values_dtype='float16', lookahead=a.lookahead, device='numpy', progress=progress
    )
    np.save(folder / 'picks.npy', sel.indices)
    report.phase(
        'select',
        wall_s=time.perf_counter() - started,
        timings=sel.timings,
        column_passes=int(sel.info['column_passes']),
        reranked_per_step_mean=float(sel.info['reranked_per_step'].mean()),
        picks=len(sel),
        unique_picks=len(set(sel.indices.tolist())),
    )
    total = sum(ph['wall_s'] for name, ph in report.data['phases'].items() if name != 'write')
    report.data.update(
        status='finished',
        end_to_end_s=total,
        end_to_end_note='density + recall check + selection (the data writing excluded)',
        peak_rss_gib=memory_status()['peak_rss_gib'],
        load_after=os.getloadavg(),
        peak_rss_over_file=memory_status()['peak_rss_gib'] / report.data['file_gib'],
    )
    report.save()
    print(json.dumps(report.data, indent=1))


if __name__ == '__main__':
    main()
