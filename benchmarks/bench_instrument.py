"""The text instrument's power per causal LM: does a base model (gemma-3-270m, pretrained only) see the known
manipulations better than the instruction-tuned SmolLM2-135M-Instruct, and at what cost?

The setting is the kMQ experiment's at `cpu-full` scale (nbs/experiments/02_kmq.ipynb): 512 first exchanges of the packaged
ShareGPT with 25 % of the answers replaced by one canned refusal, 500 clean held-out exchanges in 10 k-means clusters
(all-MiniLM-L6-v2 embeddings), LoRA on the top 2 layers, 128 selected examples x 2 epochs, 64 tokens, the held-out
loss macro-averaged over the clusters. Per seed and per model, three arms:

  clean       128 records drawn from the clean ones
  random      128 records drawn from the whole pool (about 32 refusals)
  duplicates  the random draw cut to 32 distinct records, each repeated 4 times

and the untuned model. Reported per model, paired by seed (95 % t intervals): the tuning gain (untuned - random loss),
the two manipulations (random vs clean: the pool's refusals; duplicates vs random), the sd of the paired differences,
the standardised effect d = effect / sd, and the seconds per tuned run. Effects are in nats of macro held-out loss
(lower is better), so a detected manipulation has a positive effect here.

Threads: 1. Every finished run is written at once to benchmarks/results/instrument.json, so a stopped run keeps its
seeds; a rerun with the same arguments skips the runs already there.

Run: .venv/bin/python benchmarks/bench_instrument.py [--models smollm2-135m-instruct gemma-3-270m] [--seeds 3]
"""

import argparse, json, os, time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

import numpy as np

from datasel.core import atomic_write
from datasel.data import to_text
from datasel.experiments import TextInstrument, corrupt_answers, duplicate_rows, heldout_clusters, paired_difference, sharegpt_split
from datasel.geometry.neighbors import set_threads
from datasel.models.assets import cache_root, load_causal_lm
from datasel.models.embed import embed_texts
from _common import machine_info

OUT = Path(__file__).resolve().parent / 'results' / 'instrument.json'
POOL, HELDOUT, CLUSTERS, SHARE, BUDGET, EPOCHS, TOKENS = 512, 500, 10, 0.25, 128, 2, 64


def arms(pool_size: int, corrupted: np.ndarray, seed: int) -> dict:
    "The rows of the three arms for one seed."
    rng = np.random.default_rng(seed)
    clean = rng.choice(np.flatnonzero(~corrupted), BUDGET, replace=False)
    random = np.random.default_rng(seed + 10_000).choice(pool_size, BUDGET, replace=False)
    return {'clean': clean, 'random': random, 'duplicates': duplicate_rows(random, BUDGET // 4, seed=seed)}


def summary(runs: list, untuned: float, seeds: list) -> dict:
    "Paired comparisons of one model's runs."
    loss = {
        a: np.array([next(r['macro_loss'] for r in runs if r['arm'] == a and r['seed'] == s) for s in seeds])
        for a in ('clean', 'random', 'duplicates')
    }
    out = {}
    for name, (arm, ref) in {
        'refusals (random vs clean)': ('random', 'clean'),
        'duplicates (32 x 4 vs 128 distinct)': ('duplicates', 'random'),
    }.items():
        d = paired_difference(loss[arm], loss[ref])
        out[name] = {
            'effect_nats': d['effect'],
            'ci95': d['ci95'],
            'sd': d['sd'],
            'd': d['effect'] / d['sd'] if d['sd'] > 0 else None,
            'detected': d['ci95'][0] > 0,
        }
    gain = untuned - loss['random']
    out['tuning gain (untuned - random)'] = {'effect_nats': float(gain.mean()), 'sd': float(gain.std(ddof=1))}
    out['seconds_per_run'] = float(np.mean([r['wall_s'] for r in runs]))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', nargs='+', default=['smollm2-135m-instruct', 'gemma-3-270m'])
    p.add_argument('--seeds', type=int, default=3)
    a = p.parse_args()
    set_threads(1)
    load_before = os.getloadavg()
    seeds = list(range(a.seeds))
    result = json.loads(OUT.read_text()) if OUT.exists() else {}
    result.update(
        benchmark=__doc__.split('\n')[0],
        setting=dict(
            pool=POOL,
            heldout=HELDOUT,
            clusters=CLUSTERS,
            refusal_share=SHARE,
            budget=BUDGET,
            epochs=EPOCHS,
            max_tokens=TOKENS,
            lora_layers=2,
            lr=2e-3,
        ),
        seeds=seeds,
    )
    result.setdefault('models', {})
    clean_pool, heldout = sharegpt_split(POOL, HELDOUT)
    pool, flags = corrupt_answers(clean_pool, SHARE, seed=0, kinds=['refusal'])
    corrupted = flags != ''
    cache = cache_root() / 'experiments'
    labels = heldout_clusters(
        embed_texts([to_text(r) for r in heldout], max_tokens=256, cache_dir=cache / 'embeddings', progress=False), CLUSTERS, seed=0
    )
    for name in a.models:
        entry = result['models'].setdefault(name, {'runs': []})
        t0 = time.perf_counter()
        lm, tok = load_causal_lm(name, progress=False)
        instrument = TextInstrument(lm, tok, heldout, labels, epochs=EPOCHS, lr=2e-3, train_layers=2, max_tokens=TOKENS)
        entry['load_and_prefix_s'] = time.perf_counter() - t0
        if 'untuned_macro_loss' not in entry:
            t0 = time.perf_counter()
            entry['untuned_macro_loss'] = instrument.evaluate()['macro_loss']
            entry['untuned_eval_s'] = time.perf_counter() - t0
        for s in seeds:
            for arm, rows in arms(POOL, corrupted, s).items():
                if any(r['arm'] == arm and r['seed'] == s for r in entry['runs']):
                    continue
                t0 = time.perf_counter()
                r = instrument.run([pool[i] for i in rows], s)
                entry['runs'].append(
                    {
                        'arm': arm,
                        'seed': s,
                        'macro_loss': r['macro_loss'],
                        'worst_loss': r['worst_loss'],
                        'wall_s': time.perf_counter() - t0,
                        'refusal_share': float(corrupted[rows].mean()),
                    }
                )
                print(name, s, arm, round(r['macro_loss'], 4), f"{entry['runs'][-1]['wall_s']:.0f} s", flush=True)
                done = sorted({r['seed'] for r in entry['runs'] if sum(q['seed'] == r['seed'] for q in entry['runs']) == 3})
                if len(done) >= 2:
                    entry['summary'] = {**summary(entry['runs'], entry['untuned_macro_loss'], done), 'seeds': done}
                result['machine'] = machine_info('1', load_before)
                with atomic_write(OUT) as f:
                    json.dump(result, f, indent=1)
        del lm, instrument
    print(json.dumps({m: e.get('summary') for m, e in result['models'].items()}, indent=1))


if __name__ == '__main__':
    main()
