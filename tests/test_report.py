"""datasel.report: the HTML selection report (figures, composition, diversity beside random, duplicates, coverage)."""

import importlib.machinery, importlib.util, json, sys, types
import numpy as np
import pytest
import datasel as ds
import datasel.report as report
from datasel.core import InputError, MissingDependencyError, Selection


def _strict(text):
    "json.loads that refuses NaN / Infinity."
    return json.loads(text, parse_constant=lambda c: pytest.fail(f'non-strict JSON constant {c}'))


@pytest.fixture(scope='module')
def blobs():
    "300 rows in three blobs, and Alpaca records with a source and a task each."
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0, 0, 0], [6, 6, 0, 0], [0, 6, 6, 0]])
    X = (centers[np.arange(300) % 3] + rng.normal(size=(300, 4))).astype(np.float32)
    records = [{'instruction': 'w ' * (1 + i % 9), 'output': 'ok', 'source': f'src{i % 2}', 'task': f'task{i % 4}'} for i in range(300)]
    return X, records


def _lopsided(n=300, b=40):
    "Picks from blobs 0 and 1 only, with cluster labels per pool row."
    picks = np.flatnonzero(np.arange(n) % 3 < 2)[:b]
    return Selection(
        picks,
        method='demo',
        params={'budget': b, 'seed': 0},
        timings={'total_s': 0.5},
        info={'labels': np.arange(n) % 3},
        per_pick={'cluster': picks % 3},
    )


def test_report_files_and_numbers(blobs, tmp_path):
    X, records = blobs
    page = report.selection_report(_lopsided(), X, records=records, out_dir=tmp_path, projection='pca')
    assert page == tmp_path / 'report.html'
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        'composition-cluster.png',
        'composition-source.png',
        'composition-task.png',
        'diversity.png',
        'lengths.png',
        'map.png',
        'report.html',
        'report.json',
    ]  # no temporary file left behind
    summary = _strict((tmp_path / 'report.json').read_text())
    assert {r['group']: r['subset'] for r in summary['composition']['cluster']} == {'0': 20, '1': 20, '2': 0}
    assert {r['group']: r['pool'] for r in summary['composition']['task']} == {f'task{i}': 75 for i in range(4)}
    assert summary['lengths']['pool']['mean'] == pytest.approx(np.mean([2 + i % 9 for i in range(300)]))
    # a subset that misses a whole blob leaves it uncovered; a random subset does not
    assert summary['coverage']['subset']['max'] > 2 * summary['coverage']['random']['max']
    assert [r['metric'] for r in summary['diversity']] == [m for m in report.DIVERSITY_METRICS if m in ds.list_metrics()]
    assert summary['projection'] == 'PCA' and summary['picks'] == 40
    html = page.read_text()
    for section in ('summary', 'method', 'map', 'composition', 'diversity', 'coverage'):
        assert f'<section id="{section}">' in html
    assert html.count('<img src="data:image/png;base64,') == 6 and 'src="http' not in html


def test_report_escapes_user_text(blobs, tmp_path):
    X, _ = blobs
    evil = '<script>alert(1)</script>'
    sel = Selection(
        np.arange(20), method=evil, params={'budget': 20, evil: evil}, timings={evil: 1.0}, per_pick={'task': np.array([evil, 'b&c'] * 10)}
    )
    html = report.selection_report(sel, X, out_dir=tmp_path, title=f'My {evil}', projection='pca').read_text()
    assert '<script' not in html and '&lt;script&gt;alert(1)&lt;/script&gt;' in html and 'b&amp;c' in html
    assert "default-src 'none'" in html  # no script, no request beyond the embedded images


def test_duplicates_counted(blobs):
    X, _ = blobs
    Xd = np.vstack([X, X[:5]])  # rows 300..304 repeat rows 0..4
    picks = np.r_[np.arange(5), np.arange(300, 305), np.arange(10, 20)]
    rates = report.duplicate_rates(Xd, picks)
    assert rates['exact'] == pytest.approx(5 / 20) and rates['near'] >= 10 / 20
    assert report.duplicate_rates(Xd, np.arange(5, 25))['exact'] == 0.0


def test_report_of_a_real_method(blobs, tmp_path):
    X, records = blobs
    q = np.random.default_rng(1).random(len(X))
    sel = ds.select('kmq', X, 30, quality=q, clusters=3)
    page = sel.report(X, records=records, out_dir=tmp_path, projection='pca', random_baseline=False)
    summary = _strict((page.parent / 'report.json').read_text())
    assert summary['method'] == 'kmq' and summary['params']['budget'] == 30
    assert sum(r['subset'] for r in summary['composition']['cluster']) == len(sel)
    assert summary['coverage']['random'] is None and all(r['random'] is None for r in summary['diversity'])
    assert 'diversity.png' not in summary['figures']


def test_projection_choice(monkeypatch, blobs, tmp_path):
    X, _ = blobs
    calls = []

    class FakeUMAP:
        def __init__(self, **kw):
            calls.append(kw)

        def fit_transform(self, A):
            return A[:, :2]

    fake = types.ModuleType('umap')
    fake.UMAP = FakeUMAP
    fake.__spec__ = importlib.machinery.ModuleSpec('umap', None, origin='umap/__init__.py')
    fake.__spec__.has_location = True
    monkeypatch.setitem(sys.modules, 'umap', fake)
    coords, used = report.project_2d(X, 'auto', seed=3)
    assert used == 'UMAP' and calls[0]['random_state'] == 3 and coords.shape == (300, 2)
    assert report.project_2d(X[:10], 'auto')[1] == 'PCA'  # too few rows for UMAP
    monkeypatch.setattr(report, 'umap_available', lambda: False)
    summary = _strict((report.selection_report(_lopsided(), X, out_dir=tmp_path).parent / 'report.json').read_text())
    assert summary['projection'] == 'PCA' and 'pip install umap-learn' in summary['projection_note']
    assert 'pip install umap-learn' in (tmp_path / 'report.html').read_text()
    with pytest.raises(MissingDependencyError, match='umap-learn'):
        report.project_2d(X, 'umap')


def test_umap_available_ignores_an_empty_folder(monkeypatch, tmp_path):
    (tmp_path / 'umap').mkdir()  # what an uninstall can leave behind: a namespace package
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, 'umap', raising=False)
    if importlib.util.find_spec('umap').has_location:
        pytest.skip('umap-learn is installed')
    assert not report.umap_available()


def test_map_sample_keeps_picks():
    rng = np.random.default_rng(0)
    rows = report.map_sample(10_000, np.arange(50), 1000, rng)
    assert len(rows) == 1000 and np.isin(np.arange(50), rows).all()


@pytest.mark.parametrize(
    'kwargs, match',
    [
        (dict(X=np.zeros((10, 4), np.float32)), 'X has 10 rows'),
        (dict(records=[{'instruction': 'a', 'output': 'b'}]), 'records: expected 300'),
        (dict(projection='tsne'), 'projection'),
        (dict(seed=-1), 'seed'),
    ],
)
def test_report_rejects_bad_input(blobs, tmp_path, kwargs, match):
    X, _ = blobs
    args = dict(X=X, out_dir=tmp_path) | kwargs
    with pytest.raises(InputError, match=match):
        report.selection_report(_lopsided(), **args)
    assert not list(tmp_path.iterdir())
    with pytest.raises(InputError, match='empty'):
        report.selection_report(Selection(np.array([], dtype=np.int64)), X, out_dir=tmp_path)
