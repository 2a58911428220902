"""Helpers shared by the benchmark scripts: synthetic embedding pools and timing."""
import time
import numpy as np


def golden_mixture(n: int, d: int, seed: int = 0, components: int = 100) -> np.ndarray:
    "The golden pool's Gaussian-mixture recipe (tests/golden/pool.npy) at another size, float32."
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 1, d)
    centers = mu + 2.5 * rng.normal(0, 1, (components, d))
    spreads = rng.uniform(0.25, 1.75, components)
    comp = rng.integers(0, components, n)
    return (centers[comp] + spreads[comp, None] * rng.standard_normal((n, d))).astype(np.float32)


def even_mixture(n: int, d: int, seed: int = 0) -> np.ndarray:
    "Gaussian mixture with 50 components of equal spread, float32."
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(50, d))
    return (centers[rng.integers(50, size=n)] + 1.5 * rng.normal(size=(n, d))).astype(np.float32)


def timed(fn, *args, **kwargs):
    "(result, wall seconds, CPU seconds of this process) of fn(*args, **kwargs)."
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu
