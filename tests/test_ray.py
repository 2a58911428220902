"""The Ray executor of datasel.models.embed / score on a local two-CPU Ray cluster started by the test: the same vectors and
losses as the local path, float16 shards in the fingerprinted cache, resume from saved shards, a failed shard named."""

import subprocess, sys
import numpy as np
import pytest
import ray

from datasel.core import DataselError
from datasel.models.embed import ShardJob, content_key, embed_texts, ray_map
from datasel.models.score import irs_losses, response_loss, tiny_causal_lm

TEXTS = [f'record {i}: ' + 'a few words about topic ' * (1 + i % 6) + f'number {i % 17}' for i in range(300)]


@pytest.fixture(scope='module')
def cluster():
    "A local two-CPU Ray cluster for this module; a node that times out starting (Ray's agents start slowly on a loaded machine) is retried twice."
    for attempt in range(3):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield
    ray.shutdown()


@pytest.fixture(scope='module')
def local_vectors():
    return embed_texts(TEXTS, device='cpu', cache=False, progress=False)


def shard_keys(folder):
    "Content keys held by each shard file of a cache folder."
    out = {}
    for path in sorted(folder.glob('shard-*.npz')):
        with np.load(path) as z:
            out[path.name] = (set(z['keys'].astype(str)), z['vectors'].dtype)
    return out


def test_ray_gives_the_local_vectors_from_float16_shards(cluster, local_vectors, tmp_path):
    on_ray = embed_texts(TEXTS, device='cpu', executor='ray', num_workers=2, shard_rows=64, cache_dir=tmp_path, progress=False)
    assert on_ray.shape == local_vectors.shape and on_ray.dtype == np.float32
    assert np.abs(on_ray - local_vectors).max() < 2e-3  # float16 precision on unit vectors
    assert np.abs(on_ray - local_vectors).max() > 0  # the values did come back through float16
    (folder,) = tmp_path.glob('texts-*')
    shards = shard_keys(folder)
    assert len(shards) == 5 and {dtype for _, dtype in shards.values()} == {np.dtype(np.float16)}
    assert set().union(*(keys for keys, _ in shards.values())) == {content_key(t) for t in TEXTS}
    # the local path finds the same fingerprinted folder and does no model work
    again = embed_texts(TEXTS, device='cpu', cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(again, on_ray)


def test_ray_resumes_from_the_shards_a_stopped_run_saved(cluster, local_vectors, tmp_path):
    embed_texts(TEXTS[:128], device='cpu', executor='ray', shard_rows=64, cache_dir=tmp_path, progress=False)
    (folder,) = tmp_path.glob('texts-*')
    before = shard_keys(folder)
    full = embed_texts(TEXTS, device='cpu', executor='ray', shard_rows=64, cache_dir=tmp_path, progress=False)
    new = {name: keys for name, (keys, _) in shard_keys(folder).items() if name not in before}
    assert set().union(*new.values()) == {content_key(t) for t in TEXTS[128:]}  # only the missing texts were sent
    assert np.abs(full - local_vectors).max() < 2e-3


def test_a_failed_shard_is_named_and_the_others_are_kept(cluster, tmp_path):
    items = [f'item {i}' for i in range(37)] + ['poison!'] + [f'item {i}' for i in range(37, 50)]
    keys = [content_key(x) for x in items]

    def poisoned(loaded, batch):
        if 'poison!' in batch:
            raise ValueError('poisoned item')
        return [np.full(3, loaded * len(x), np.float32) for x in batch]

    def healthy(loaded, batch):
        return [np.full(3, loaded * len(x), np.float32) for x in batch]

    job = ShardJob(load=lambda: 2.0, compute=poisoned, describe=lambda loaded: {'scale': loaded}, batch_size=4)
    with pytest.raises(DataselError, match=r'1 of 6 shards failed on Ray; shard [0-9a-f]{16} \(10 items.*ValueError: poisoned item'):
        ray_map(items, keys, job, 'demo', cache_dir=tmp_path, shard_rows=10, progress=False)
    (folder,) = tmp_path.glob('demo-*')
    saved = set().union(*(k for k, _ in shard_keys(folder).values()))
    assert len(saved) == 41 and content_key('poison!') not in saved  # five of six shards were written
    fixed = ShardJob(load=lambda: 2.0, compute=healthy, describe=lambda loaded: {'scale': loaded}, batch_size=4)
    before = set(shard_keys(folder))
    out = ray_map(items, keys, fixed, 'demo', cache_dir=tmp_path, shard_rows=10, progress=False)
    new = [k for name, (k, _) in shard_keys(folder).items() if name not in before]
    assert len(new) == 1 and len(new[0]) == 10 and content_key('poison!') in new[0]  # only the failed shard was redone
    assert [float(v[0]) for v in out] == [2.0 * len(x) for x in items]


def test_ray_scores_equal_the_local_scores(cluster, tmp_path):
    model, tok = tiny_causal_lm(layers=2, hidden=64, seed=0)
    records = [
        {
            'messages': [
                {'role': 'user', 'content': f'question {i} ' + 'about things ' * (i % 5)},
                {'role': 'assistant', 'content': 'answer ' * (1 + i % 3) + str(i)},
            ]
        }
        for i in range(40)
    ]
    local = response_loss(records, model, tok, cache=False, progress=False)
    on_ray = response_loss(records, model, tok, executor='ray', shard_rows=16, cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(on_ray, local, atol=1e-6)  # loss shards stay float64
    with_q, without_q = irs_losses(records[:8], model, tok, executor='ray', cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(with_q, local[:8], atol=1e-6)
    assert without_q.shape == (8,) and np.isfinite(without_q).all()


def test_datasel_imports_without_ray_and_names_the_extra():
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import datasel, datasel.models.embed as e\n"
        "try: e.embed_texts(['x'], executor='ray')\n"
        "except ImportError as err: print(type(err).__name__, err)\n"
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'MissingDependencyError' in out.stdout and 'datasel[ray]' in out.stdout
