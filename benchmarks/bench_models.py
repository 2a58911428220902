"""Cost of the models in the loop on this machine: scoring (datasel.models.score), LoRA fine-tuning from cached bottom states
(datasel.models.train) and the easy-vqa model (datasel.models.vqa). One run, same inputs; writes benchmarks/results/models.json.

    python benchmarks/bench_models.py            # the sizes reported in benchmarks/README.md
    python benchmarks/bench_models.py --quick    # a smoke run (minutes less)
    python benchmarks/bench_models.py --base-models   # SmolLM2 vs gemma-3-270m only: load, scoring, replay; writes models_base.json

Every timing is given as wall-clock seconds and as the CPU seconds of this process; the machine's load average is
recorded at the start and the end, because other work on a shared 2-core machine inflates wall time.
"""

import argparse, json, os, platform, sys, time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

import numpy as np
import torch

from datasel.models.assets import load_causal_lm, load_easy_vqa, load_sharegpt, ImagePreprocess
from datasel.models.embed import embed_images
from datasel.models.score import encode_record, generate, response_loss
from datasel.models.train import evaluate_loss, finetune_lora, prefix_states
from datasel.models.vqa import train_vqa, vqa_accuracy, vqa_features, vqa_irs_losses, vqa_token_states

OUT = Path(__file__).resolve().parent / 'results' / 'models.json'
OUT_BASE = OUT.with_name('models_base.json')


class Timer:
    "Wall and process CPU seconds of a block."

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def as_dict(self, per=None, n=None):
        out = {'wall_s': round(self.wall, 2), 'cpu_s': round(self.cpu, 2)}
        if per and n:
            out.update({f'wall_s_per_{per}': round(self.wall * per / n, 2), f'cpu_s_per_{per}': round(self.cpu * per / n, 2)})
        return out


def bench_score(lm, tok, records, threads, results):
    tokens = int(sum(len(encode_record(r, tok, 256)['input_ids']) for r in records))
    results['score'] = []
    for n_threads, n in ((threads, len(records)), (3 - threads, len(records) // 3)):
        torch.set_num_threads(n_threads)
        with Timer() as t:
            losses = response_loss(records[:n], lm, tok, max_tokens=256, batch_size=8, progress=False)
        results['score'].append(
            {
                'torch_threads': n_threads,
                'records': n,
                'max_tokens': 256,
                'batch_size': 8,
                'mean_tokens': round(tokens / len(records), 1),
                'mean_loss': round(float(losses.mean()), 4),
                **t.as_dict(100, n),
            }
        )
        print('score', results['score'][-1], flush=True)
    torch.set_num_threads(threads)
    with Timer() as t:
        answers = generate(records[:8], lm, tok, max_new_tokens=64, batch_size=8, progress=False)
    results['generate'] = {
        'records': 8,
        'max_new_tokens': 64,
        'mean_answer_words': float(np.mean([len(a.split()) for a in answers])),
        **t.as_dict(100, 8),
    }
    print('generate', results['generate'], flush=True)


def bench_lora(lm, tok, train, heldout, runs, results):
    n_layers = lm.config.num_hidden_layers
    prefixes, out = {}, []
    base_loss = {}
    for run in runs:
        key = (run['train_layers'], run['max_tokens'])
        if key not in prefixes:
            with Timer() as t:
                prefixes[key] = prefix_states(
                    train + heldout, lm, tok, frozen_layers=n_layers - run['train_layers'], max_tokens=run['max_tokens'], progress=False
                )
            base_loss[key] = evaluate_loss(lm, tok, heldout, max_tokens=run['max_tokens'], prefix=prefixes[key])
            entry = {
                'what': 'prefix',
                'frozen_layers': n_layers - run['train_layers'],
                'max_tokens': run['max_tokens'],
                'records': len(train) + len(heldout),
                'megabytes': round(prefixes[key].nbytes / 2**20, 1),
                **t.as_dict(100, len(train) + len(heldout)),
            }
            out.append(entry)
            print(entry, flush=True)
        records = train[: run.get('records', len(train))]
        with Timer() as t:
            tuned = finetune_lora(
                records,
                lm,
                tok,
                epochs=run['epochs'],
                lr=run['lr'],
                batch_size=8,
                max_tokens=run['max_tokens'],
                train_layers=run['train_layers'],
                autocast=run.get('autocast'),
                prefix=prefixes[key],
                seed=0,
                progress=False,
            )
        with Timer() as te:
            after = evaluate_loss(tuned, tok, heldout, max_tokens=run['max_tokens'], prefix=prefixes[key])
        entry = {
            'what': 'finetune',
            **run,
            'records': len(records),
            'train_s': round(tuned.finetune_info['train_s'], 2),
            **t.as_dict(100, len(records) * run['epochs']),
            'heldout_records': len(heldout),
            'heldout_loss_before': round(base_loss[key], 4),
            'heldout_loss_after': round(after, 4),
            'eval_wall_s': round(te.wall, 2),
        }
        entry = {k.replace('per_100', 'per_100_sample_epochs'): v for k, v in entry.items()}
        out.append(entry)
        print(entry, flush=True)
    results['lora'] = out


def bench_full_lora(lm, tok, train, heldout, records, results):
    with Timer() as t:
        finetune_lora(train[:records], lm, tok, epochs=1, lr=1e-3, batch_size=8, max_tokens=256, train_layers=None, progress=False)
    entry = {
        'what': 'finetune, LoRA on all 30 layers (no cache possible beyond the embeddings)',
        'records': records,
        'max_tokens': 256,
        'epochs': 1,
        **t.as_dict(100, records),
    }
    entry = {k.replace('per_100', 'per_100_sample_epochs'): v for k, v in entry.items()}
    results['lora_all_layers'] = entry
    print(entry, flush=True)


def bench_vqa(train_questions, sample_images, results):
    train_all, test_all = load_easy_vqa('train'), load_easy_vqa('test')
    paths = sorted({r['image'] for r in train_all})[:sample_images]
    with Timer() as t:
        embed_images(paths, preprocess=ImagePreprocess(size=128), spatial=True, cache_dir=None, progress=False)
    extraction = {'images': len(paths), 'image_size': 128, **t.as_dict(1000, len(paths))}
    with Timer() as t:
        train_f, test_f = vqa_features(train_all, progress=False), vqa_features(test_all, progress=False)
    features = {
        'train_records': len(train_f),
        'train_images': len(train_f.images),
        'test_records': len(test_f),
        'test_images': len(test_f.images),
        'note': 'image maps from the on-disk cache when an earlier run filled it',
        **t.as_dict(),
    }
    with Timer() as t:
        vqa_features(test_all, progress=False)
    features['test_again_wall_s'] = round(t.wall, 2)
    rng = np.random.default_rng(0)
    runs = []
    for n in train_questions:
        rows = rng.choice(len(train_f), n, replace=False)
        with Timer() as t:
            model = train_vqa(train_f, rows, epochs=15, seed=0)
        with Timer() as te:
            acc = vqa_accuracy(model, test_f)
        runs.append(
            {
                'train_questions': n,
                'epochs': 15,
                'width': 128,
                **t.as_dict(100, n * 15),
                'test_questions': len(test_f),
                'accuracy': round(acc['accuracy'], 4),
                'majority_rate': round(acc['majority_rate'], 4),
                'per_kind': {k: round(v, 4) for k, v in acc['per_kind'].items()},
                'eval_wall_s': round(te.wall, 2),
            }
        )
        print(runs[-1], flush=True)
    with Timer() as t:
        vqa_irs_losses(model, train_f)
    irs = {'records': len(train_f), **t.as_dict()}
    with Timer() as t:
        states = vqa_token_states(model, train_f, np.arange(4000))
    token = {'records': 4000, 'tokens_per_record': float(np.mean([len(s) for s in states])), **t.as_dict()}
    results['vqa'] = {'extraction': extraction, 'features': features, 'training': runs, 'irs_losses': irs, 'token_states': token}
    print(results['vqa'], flush=True)


def bench_base_models(names, records, results):
    "Per offline causal LM: first load (GGUF assembly and conversion into an empty cache), cached load, response loss per 16 samples, bottom replay."
    import tempfile
    from datasel.models.train import decoder_layers, record_losses

    out = []
    for name in names:
        with tempfile.TemporaryDirectory() as empty_cache:
            os.environ['DATASEL_CACHE'] = empty_cache
            with Timer() as first:
                load_causal_lm(name, device='cpu', progress=False)
            with Timer() as cached:
                lm, tok = load_causal_lm(name, device='cpu', progress=False)
            del os.environ['DATASEL_CACHE']
            entry = {
                'model': name,
                'layers': lm.config.num_hidden_layers,
                'hidden': lm.config.hidden_size,
                'vocabulary': len(tok),
                'parameters_millions': round(sum(p.numel() for p in lm.parameters()) / 1e6, 1),
                'first_load': first.as_dict(),
                'cached_load': cached.as_dict(),
            }
            tokens = int(sum(len(encode_record(r, tok, 256)['input_ids']) for r in records))
            with Timer() as t:
                losses = response_loss(records, lm, tok, max_tokens=256, batch_size=8, progress=False, cache=False)
            entry['response_loss'] = {
                'records': len(records),
                'max_tokens': 256,
                'batch_size': 8,
                'mean_tokens': round(tokens / len(records), 1),
                'mean_loss': round(float(losses.mean()), 4),
                **t.as_dict(16, len(records)),
            }
            frozen = len(decoder_layers(lm)) - 2
            with Timer() as tp:
                prefix = prefix_states(records, lm, tok, frozen_layers=frozen, max_tokens=256, progress=False)
            replayed = record_losses(lm, tok, records, max_tokens=256, prefix=prefix)
            with Timer() as tf:
                tuned = finetune_lora(records, lm, tok, epochs=2, lr=1e-3, batch_size=8, max_tokens=256, prefix=prefix, progress=False)
            entry['replay'] = {
                'frozen_layers': frozen,
                'max_abs_loss_difference_vs_full': float(np.abs(replayed - losses).max()),
                'prefix': tp.as_dict(16, len(records)),
                'finetune_2_epochs': tf.as_dict(16, len(records)),
                'train_loss_first_last': [round(tuned.finetune_info['losses'][0], 4), round(tuned.finetune_info['losses'][-1], 4)],
            }
            out.append(entry)
            print(entry, flush=True)
            del lm, tok, tuned, prefix
    results['base_models'] = out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='small sizes, for a smoke run')
    parser.add_argument('--threads', type=int, default=1, choices=(1, 2), help='torch CPU threads (scoring is timed with both)')
    parser.add_argument('--base-models', action='store_true', help='only compare the offline causal LMs (SmolLM2, gemma-3-270m)')
    args = parser.parse_args()
    q = args.quick
    torch.set_num_threads(args.threads)
    results = {
        'machine': {
            'python': platform.python_version(),
            'torch': torch.__version__,
            'threads': args.threads,
            'cpus': os.cpu_count(),
            'cuda': torch.cuda.is_available(),
            'load_average_start': os.getloadavg(),
        },
        'quick': q,
    }
    t0 = time.perf_counter()
    if args.base_models:
        bench_base_models(('smollm2-135m-instruct', 'gemma-3-270m'), load_sharegpt(max_records=16), results)
        return _write(results, OUT_BASE, t0)
    lm, tok = load_causal_lm(device='auto')
    share = load_sharegpt(max_records=500)
    bench_score(lm, tok, share[: 24 if q else 96], args.threads, results)
    train, heldout = share[100 : (120 if q else 200)], share[400 : (410 if q else 440)]
    runs = [
        dict(train_layers=2, max_tokens=256, epochs=1, lr=1e-3),
        dict(train_layers=2, max_tokens=256, epochs=1, lr=1e-3, autocast='bfloat16'),
        dict(train_layers=2, max_tokens=256, epochs=3, lr=1e-3),
        dict(train_layers=2, max_tokens=128, epochs=1, lr=1e-3),
        dict(train_layers=4, max_tokens=256, epochs=1, lr=1e-3),
    ]
    bench_lora(lm, tok, train, heldout, runs[:2] if q else runs, results)
    bench_full_lora(lm, tok, train, heldout, 8 if q else 24, results)
    bench_vqa([400] if q else [400, 4000], 64 if q else 256, results)
    return _write(results, OUT, t0)


def _write(results, out, t0):
    results['machine']['load_average_end'] = os.getloadavg()
    results['total_wall_s'] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(results, indent=1, default=float))
    tmp.replace(out)
    print(f'wrote {out} ({results["total_wall_s"]} s)')


if __name__ == '__main__':
    sys.exit(main())
