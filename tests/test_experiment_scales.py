"""`cpu` trains a subset of `cpu-full`'s runs (the same sizes and seeds, fewer arms, tracks or ratios), so the claims a
`cpu` run judges carry the numbers `cpu-full` reaches from the same runs. Checked on each notebook's table of sizes, and
by running every experiment notebook at `ci` twice, with every arm and with the `cpu` subset."""

import ast, json
from pathlib import Path
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from datasel.reproduce import paper_name, run_experiment

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / 'nbs' / 'experiments').glob('0*.ipynb'))
SUBSET_KEYS = {'arms', 'tracks'}  # names of what a run trains: cpu names some, cpu-full 'all'
SHARE_KEYS = {'curve_ratios', 'ratios'}  # shares trained: cpu's are some of cpu-full's
# the cpu subset of each notebook at ci sizes: cpu's arms or tracks, and DataTailor's cpu case of an ablation ratio
# that is not trained (ci has other ratios)
CI_SUBSETS = {
    '01_novelsum': {'tracks': ['vision']},
    '02_kmq': {'arms': ['kMQ (IFD)']},
    '03_presel': {'arms': ['PreSel']},
    '04_datatailor': {'arms': ['Random', 'DataTailor (paper)', 'DataTailor (official)'], 'ratios': [0.15], 'ablation_ratio': 0.05},
}
# the headline claim each subset must judge (the start of its name)
HEADLINES = {
    '01_novelsum': 'vision: NovelSum correlates with performance over equal-size sets (Pearson r)',
    '02_kmq': 'kMQ beats Random (Table 2 avg)',
    '03_presel': 'PreSel beats Random at the same number of units',
    '04_datatailor': 'DataTailor beats Random at 15.0%',
}


def sizes_table(nb: Path) -> dict:
    "The notebook's SIZES table (scale -> sizes), read from its source without running it."
    cells = json.loads(nb.read_text())['cells']
    for cell in cells:
        src = ''.join(cell['source'])
        if cell['cell_type'] == 'code' and 'SIZES = {' in src:
            for node in ast.parse(src).body:
                if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', None) == 'SIZES':
                    return eval(compile(ast.Expression(node.value), str(nb), 'eval'), {'dict': dict})
    raise AssertionError(f'{nb.name}: no SIZES table')


def test_every_experiment_is_covered():
    assert [nb.stem for nb in NOTEBOOKS] == sorted(CI_SUBSETS) == sorted(HEADLINES)


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_the_ci_subset_trains_what_cpu_trains(nb):
    cpu = sizes_table(nb)['cpu']
    for key in SUBSET_KEYS & set(cpu):
        assert CI_SUBSETS[nb.stem][key] == cpu[key]


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_the_committed_figures_are_cpu_full(nb):
    "figures/<paper>/results.json was made with the cpu-full sizes (the arms or tracks: all of them)."
    paper = nb.stem.split('_', 1)[1]
    results = json.loads((ROOT / 'figures' / paper / 'results.json').read_text())
    full = {k: list(v) if isinstance(v, tuple) else v for k, v in sizes_table(nb)['cpu-full'].items()}
    assert {k: v for k, v in results['sizes'].items() if k not in SUBSET_KEYS} == {k: v for k, v in full.items() if k not in SUBSET_KEYS}
    assert results['scale'] == 'cpu-full'
    assert all(results['sizes'].get(k, 'all') == 'all' for k in SUBSET_KEYS)


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_cpu_is_a_subset_of_cpu_full(nb):
    table = sizes_table(nb)
    cpu, full = table['cpu'], table['cpu-full']
    assert set(cpu) == set(full)
    trains_less = False
    for key, value in cpu.items():
        if key in SUBSET_KEYS:
            assert full[key] == 'all' and isinstance(value, list) and value, (key, value)
            trains_less = True
        elif key in SHARE_KEYS:
            assert set(value) <= set(full[key]), (key, value, full[key])
            trains_less |= set(value) < set(full[key])
        else:
            assert value == full[key], f'{nb.stem}: cpu {key}={value!r} but cpu-full {key}={full[key]!r}'
    assert trains_less, f'{nb.stem}: cpu trains everything cpu-full does'
    assert all(table[s].get(k) == 'all' for s in ('ci', 'gpu') for k in SUBSET_KEYS & set(table[s]))


def run_ci(nb: Path, out: Path, params: dict) -> dict:
    "Run one experiment notebook at ci with extra parameters (through `make reproduce`'s runner); return its results."
    kernel = 'datasel' if 'datasel' in KernelSpecManager().find_kernel_specs() else 'python3'
    info = run_experiment(nb, 'ci', ROOT, kernel, timeout=900, params=params, out=out, executed=out / nb.name)
    assert info['status'] == 'ok', f'{nb.name} {params}: {info["status"]}'
    return json.loads((out / paper_name(nb) / 'results.json').read_text())


@pytest.mark.slow
@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_a_subset_run_judges_its_claims_as_the_full_run_does(nb, tmp_path):
    full = run_ci(nb, tmp_path / 'all', {})
    part = run_ci(nb, tmp_path / 'subset', CI_SUBSETS[nb.stem])
    for key, value in CI_SUBSETS[nb.stem].items():
        assert part['sizes'][key] == value
    by_claim = {c['claim']: c for c in full['claims']}
    assert len(part['claims']) < len(full['claims'])
    assert any(c['claim'].startswith(HEADLINES[nb.stem]) for c in part['claims'])
    for claim in part['claims']:
        same = by_claim[claim['claim']]
        assert (claim['ours'], claim['ci95'], claim['n_seeds'], claim['verdict']) == (
            same['ours'],
            same['ci95'],
            same['n_seeds'],
            same['verdict'],
        ), claim['claim']
    by_control = {c['name']: c for c in full['controls']}
    assert part['controls']
    for control in part['controls']:
        assert (control['effect'], control['ci95']) == (by_control[control['name']]['effect'], by_control[control['name']]['ci95'])
