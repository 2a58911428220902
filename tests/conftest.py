"""Shared pytest fixtures: the golden files and small deterministic inputs."""

import os
from pathlib import Path
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / 'golden'

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')


@pytest.fixture(scope='session')
def golden() -> Path:
    "Folder of the official outputs the fidelity tests compare against."
    return GOLDEN


@pytest.fixture(scope='session')
def pool() -> np.ndarray:
    "The golden 3000 x 64 Gaussian-mixture pool (with 12 exact duplicate rows)."
    return np.load(GOLDEN / 'pool.npy')


@pytest.fixture(scope='module')
def one_torch_thread():
    "Small models run fastest on one torch thread; on a shared 2-core machine two threads can be many times slower."
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def default_cache(tmp_path_factory, monkeypatch):
    "The default embedding / score cache of a test lives in its own folder (model caches stay where they are)."
    from datasel.models import embed

    root = tmp_path_factory.mktemp('datasel-cache')
    monkeypatch.setattr(embed, 'cache_root', lambda: root)
    return root


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: loads real models or runs long; run with the rest, skip with -m "not slow"')
    config.addinivalue_line('markers', 'gpu: needs CUDA')


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        cuda = torch.cuda.is_available()
    except Exception:
        cuda = False
    skip_gpu = pytest.mark.skip(reason='needs a CUDA GPU')
    for item in items:
        if 'gpu' in item.keywords and not cuda:
            item.add_marker(skip_gpu)


def mixture(n=240, d=12, k=6, seed=0):
    "A small Gaussian mixture of k blobs, float32 (the baselines' and greedy tests' pool)."
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3
    return (centers[rng.integers(k, size=n)] + rng.normal(size=(n, d))).astype(np.float32)


def unit64(A):
    "Rows of A scaled to unit length, float64."
    A = np.asarray(A, dtype=np.float64)
    return A / np.linalg.norm(A, axis=1, keepdims=True)
