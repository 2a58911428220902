"""The reproduction front end: where each scale writes, overall progress, the report's banner and columns, and the
same numbers from the same seed."""

import json, os
import numpy as np
import pytest
from jupyter_client.kernelspec import KernelSpecManager

from datasel.reproduce import main, output_root, write_report

EXPERIMENT = r'''{"cells": [
 {"cell_type": "code", "execution_count": null, "id": "p", "metadata": {"tags": ["parameters"]}, "outputs": [],
  "source": ["scale = 'ci'\n", "seed = 0\n", "out_dir = None\n", "model = None\n"]},
 {"cell_type": "code", "execution_count": null, "id": "r", "metadata": {}, "outputs": [],
  "source": ["import numpy as np\n",
             "from datasel.experiments import compare, control_result, experiment_dir, make_results, save_results\n",
             "rng = np.random.default_rng(seed)\n",
             "arm, base = 0.6 + rng.normal(0, 0.01, 5), 0.5 + rng.normal(0, 0.01, 5)\n",
             "ctrl = control_result('duplicates', base - 0.1, base)\n",
             "out = experiment_dir(out_dir, 'PAPER', scale)\n",
             "save_results(out, make_results(scale, seed, [ctrl], [compare('arm beats base', arm, base, 0.97, control=ctrl)],\n",
             "             paper='PAPER', title='The PAPER paper', models=[str(model)]))\n"]}],
 "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}'''


def kernel_name():
    return 'datasel' if 'datasel' in KernelSpecManager().find_kernel_specs() else 'python3'


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / 'nbs' / 'experiments').mkdir(parents=True)
    (tmp_path / 'pyproject.toml').write_text('')
    for i, paper in enumerate(['alpha', 'beta'], 1):
        (tmp_path / 'nbs' / 'experiments' / f'0{i}_{paper}.ipynb').write_text(EXPERIMENT.replace('PAPER', paper))
    (tmp_path / 'figures').mkdir()
    (tmp_path / 'figures' / 'README.md').write_text('committed report\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_scales_write_where_they_should(tmp_path):
    assert output_root(tmp_path, 'ci') == tmp_path / 'runs' / 'ci'
    assert output_root(tmp_path, 'cpu') == tmp_path / 'runs' / 'cpu'
    assert output_root(tmp_path, 'gpu') == tmp_path / 'runs' / 'gpu'
    assert output_root(tmp_path, 'cpu-full') == tmp_path / 'figures'
    assert output_root(tmp_path, 'ci', 'figures') == tmp_path / 'figures'


def test_a_ci_run_leaves_figures_alone_and_says_it_decides_nothing(project, capsys):
    assert main(['--scale', 'ci', '--kernel', kernel_name(), '--timeout', '300', '--model', 'my-model']) == 0
    printed = capsys.readouterr().out
    assert '[1/2] 01_alpha.ipynb - elapsed 0:00, ETA unknown' in printed
    assert '[2/2] 02_beta.ipynb - elapsed' in printed and 'ETA unknown' not in printed.split('[2/2]')[1].splitlines()[0]
    assert (project / 'figures' / 'README.md').read_text() == 'committed report\n'
    assert sorted(p.name for p in (project / 'figures').iterdir()) == ['README.md']
    res = json.loads((project / 'runs' / 'ci' / 'alpha' / 'results.json').read_text())
    assert res['models'] == ['my-model'] and res['claims'][0]['verdict'] == 'reproduced'
    report = (project / 'runs' / 'ci' / 'README.md').read_text()
    assert 'too small to decide' in report
    assert '| arm beats base | 0.97 |' in report and '| 5 | duplicates: detected' in report and '**reproduced**' in report
    assert report.index('The alpha paper') < report.index('The beta paper')
    # asked explicitly, a run writes figures/, and the same seed gives the same numbers
    assert (
        main(['--scale', 'ci', '--kernel', kernel_name(), '--timeout', '300', '--model', 'my-model', '--only', 'alpha', '--out', 'figures'])
        == 0
    )
    again = json.loads((project / 'figures' / 'alpha' / 'results.json').read_text())
    assert again['claims'] == res['claims'] and again['controls'] == res['controls']
    assert 'The alpha paper' in (project / 'figures' / 'README.md').read_text()


def test_a_failed_notebook_fails_the_run(project, capsys):
    bad = project / 'nbs' / 'experiments' / '03_broken.ipynb'
    bad.write_text(EXPERIMENT.replace("import numpy as np", "raise RuntimeError('boom')"))
    assert main(['--scale', 'ci', '--kernel', kernel_name(), '--timeout', '300', '--only', 'broken']) == 1
    assert 'failed: 03_broken.ipynb' in capsys.readouterr().err
    assert json.loads((project / 'runs' / 'ci' / 'broken' / 'run.json').read_text())['status'].startswith('failed')


def test_report_lists_results_in_an_older_format(tmp_path):
    (tmp_path / 'nbs').mkdir()
    (tmp_path / 'pyproject.toml').write_text('')
    (tmp_path / 'figures' / 'old').mkdir(parents=True)
    (tmp_path / 'figures' / 'old' / 'results.json').write_text(json.dumps({'claims': [{'claim': 'x', 'reproduced': True}]}))
    text = write_report(tmp_path).read_text()
    assert 'does not follow the results schema' in text


def test_a_variant_run_of_one_paper_links_its_own_figures(tmp_path):
    (tmp_path / 'nbs').mkdir()
    (tmp_path / 'pyproject.toml').write_text('')
    from datasel.experiments import control_result, make_results, save_results

    ctrl = control_result('duplicates', [0.1, 0.2, 0.15], [0.3, 0.4, 0.35])
    for folder, label in (('presel', 'kinds'), ('presel_variant', 'families')):
        (tmp_path / 'figures' / folder).mkdir(parents=True)
        save_results(
            tmp_path / 'figures' / folder,
            make_results('cpu', 0, [ctrl], [], paper='presel', title=f'PreSel ({label})', figures=['fig.png']),
        )
        run = {
            'notebook': 'nbs/experiments/03_presel.ipynb',
            'status': 'ok',
            'params': {'tasks': 'template'} if label == 'families' else {},
        }
        (tmp_path / 'figures' / folder / 'run.json').write_text(json.dumps(run))
    text = write_report(tmp_path).read_text()
    assert '](presel/fig.png)' in text and '](presel_variant/fig.png)' in text
    assert text.index('PreSel (kinds)') < text.index('PreSel (families)')
    assert "## PreSel (families) — `presel_variant` (tasks='template')" in text  # a variant says which run it is
    assert '## PreSel (kinds)\n' in text


def test_two_notebooks_side_by_side(project, capsys):
    assert main(['--scale', 'ci', '--kernel', kernel_name(), '--timeout', '300', '--jobs', '2']) == 0
    printed = capsys.readouterr().out
    assert (
        '[1/2] 01_alpha.ipynb' in printed and '[2/2] 02_beta.ipynb' in printed and 'all 2 done in' in printed and '(2 at a time)' in printed
    )
    for paper in ('alpha', 'beta'):
        assert json.loads((project / 'runs' / 'ci' / paper / 'results.json').read_text())['claims'][0]['verdict'] == 'reproduced'
    report = (project / 'runs' / 'ci' / 'README.md').read_text()
    assert report.index('The alpha paper') < report.index('The beta paper')


def test_run_experiment_writes_the_executed_notebook_where_asked(project, tmp_path_factory):
    from datasel.reproduce import run_experiment

    nb = project / 'nbs' / 'experiments' / '01_alpha.ipynb'
    elsewhere = tmp_path_factory.mktemp('elsewhere') / 'executed' / 'alpha.ipynb'
    info = run_experiment(nb, 'ci', project, kernel_name(), 300, out=project / 'mine', executed=elsewhere)
    assert info['status'] == 'ok' and info['output_notebook'] == str(elsewhere)
    assert elsewhere.exists() and not (project / 'runs').exists()
    assert json.loads((project / 'mine' / 'alpha' / 'results.json').read_text())['scale'] == 'ci'
    default = run_experiment(nb, 'ci', project, kernel_name(), 300, out=project / 'mine')
    assert default['output_notebook'] == 'runs/ci/01_alpha.ipynb' and (project / 'runs' / 'ci' / '01_alpha.ipynb').exists()
    # run.json says on what the numbers were computed: the CPU, its cores, the numeric libraries
    machine = json.loads((project / 'mine' / 'alpha' / 'run.json').read_text())['machine']
    assert machine['cores'] == os.cpu_count() and machine['numpy'] == np.__version__ and machine['cpu']
    assert f"on {machine['cpu']}" in write_report(project, project / 'mine').read_text()
