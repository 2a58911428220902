"""The reproduction's promise: an experiment run twice through papermill with the same seed writes the same numbers,
and the report is built from what the runs wrote."""
import json, shutil
from pathlib import Path
import pytest
from jupyter_client.kernelspec import KernelSpecManager

from datasel.reproduce import find_experiments, run_experiment, write_report

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / 'nbs' / 'experiments' / '01_novelsum.ipynb'
TINY = {'pool_size': 40, 'heldout_size': 6, 'subset_sizes': [12], 'train_examples': 12, 'max_tokens': 32, 'sim_repeats': 1}


def kernel_name():
    names = KernelSpecManager().find_kernel_specs()
    return 'datasel' if 'datasel' in names else 'python3'


def project_copy(root: Path) -> Path:
    (root / 'nbs' / 'experiments').mkdir(parents=True)
    (root / 'pyproject.toml').write_text('')
    return Path(shutil.copy(NOTEBOOK, root / 'nbs' / 'experiments'))


def test_same_seed_same_numbers_and_a_report_from_them(tmp_path):
    runs = []
    for i in range(2):
        root = tmp_path / f'run{i}'
        nb = project_copy(root)
        assert find_experiments(root) == [nb]
        info = run_experiment(nb, 'ci', root, kernel_name(), timeout=900, params={**TINY, 'cache_dir': str(root / 'cache')})
        assert info['status'] == 'ok', info
        assert (root / 'runs' / 'ci' / nb.name).exists()
        runs.append(json.loads((root / 'figures' / 'novelsum' / 'results.json').read_text()))
    first, second = runs
    assert first['tables']['sizes']['pool_size'] == 40 and first['tables']['sizes']['subset_sizes'] == [12]
    assert len(first['tables']['subsets']) == 7
    assert first['claims'] == second['claims']
    assert first['tables']['subsets'] == second['tables']['subsets']
    assert {f for f in first['figures']} <= {p.name for p in (tmp_path / 'run1' / 'figures' / 'novelsum').iterdir()}
    report = write_report(tmp_path / 'run1').read_text()
    ours = first['claims'][0]['ours']
    assert f"| {first['claims'][0]['claim']} | 0.97 | {ours:.4g} |" in report
