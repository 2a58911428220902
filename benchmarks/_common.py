"""Helpers shared by the benchmark scripts: synthetic embedding pools and timing."""

import os, platform, time
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


def proc_status_mib() -> dict:
    "This process's memory from /proc/self/status in MiB: VmHWM (peak RSS), VmRSS, RssAnon, RssFile (memory-mapped file pages)."
    out = {}
    with open('/proc/self/status') as f:
        for line in f:
            key = line.split(':')[0]
            if key in ('VmHWM', 'VmRSS', 'RssAnon', 'RssFile'):
                out[key] = round(int(line.split()[1]) / 1024, 1)
    return out


def reset_peak_rss() -> bool:
    "Reset this process's VmHWM to its current RSS (Linux: write 5 to /proc/self/clear_refs); False where that is refused."
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


class PeakAnon:
    "Context manager: the peak anonymous RSS (MiB) while the block runs, sampled every `every` seconds by a thread."

    def __init__(self, every: float = 0.01):
        self.every, self.peak_mib, self._stop = every, 0.0, None

    def __enter__(self):
        import threading

        self._stop = threading.Event()

        def watch():
            while not self._stop.is_set():
                self.peak_mib = max(self.peak_mib, proc_status_mib()['RssAnon'])
                self._stop.wait(self.every)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, proc_status_mib()['RssAnon'])


def run_child(script, args, timeout: float) -> dict:
    "Run `python script *args` in a fresh process and parse the JSON object on its last stdout line (or report the failure)."
    import json, subprocess, sys

    try:
        p = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {'error': f'timed out after {timeout:.0f} s'}
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        return {'error': (p.stderr or p.stdout).strip().splitlines()[-3:], 'returncode': p.returncode}
    return json.loads(lines[-1])


def machine_info(threads, load_before) -> dict:
    "What a result was measured on: threads, CPUs, the load before and after, Python and numpy versions."
    return {
        'threads': threads,
        'cpus': os.cpu_count(),
        'load_before': load_before,
        'load_after': os.getloadavg(),
        'python': platform.python_version(),
        'numpy': np.__version__,
    }
