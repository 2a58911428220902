"""The selection report and the documentation site in a real headless browser (Debian's chromium), served over HTTP.

Skipped only when chromium is missing and DATASEL_REQUIRE_BROWSER is not set; CI installs chromium and sets it."""

import functools, http.server, json, os, re, shutil, subprocess, threading
from pathlib import Path
import numpy as np
import pytest
from datasel import docs, report
from datasel.core import Selection

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which('chromium') or ('/usr/bin/chromium' if Path('/usr/bin/chromium').exists() else None)
METHOD_NOTEBOOK = '11_novelselect'

if CHROMIUM is None:
    if os.environ.get('DATASEL_REQUIRE_BROWSER'):
        raise RuntimeError('DATASEL_REQUIRE_BROWSER is set but chromium is not installed (apt-get install -y chromium)')
    pytest.skip(
        'chromium is not installed (apt-get install -y chromium, or `make browser`); set DATASEL_REQUIRE_BROWSER=1 to make this a failure',
        allow_module_level=True,
    )


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    "A report and a small docs site under one folder, served on 127.0.0.1 at a free port."
    root = tmp_path_factory.mktemp('served')
    rng = np.random.default_rng(0)
    X = (np.array([[0.0, 0, 0], [8, 0, 0], [0, 8, 0]])[np.arange(240) % 3] + rng.normal(size=(240, 3))).astype(np.float32)
    picks = np.flatnonzero(np.arange(240) % 3 < 2)[:30]
    sel = Selection(picks, method='demo', params={'budget': 30, 'seed': 0}, timings={'total_s': 0.1}, info={'labels': np.arange(240) % 3})
    records = [{'instruction': 'w ' * (1 + i % 5), 'output': 'ok', 'source': f's{i % 2}'} for i in range(240)]
    report.selection_report(sel, X, records=records, out_dir=root / 'report', projection='pca', title='Browser check')
    docs.build_site(ROOT / 'nbs', root / 'site', only=['index', METHOD_NOTEBOOK, '33_report'])
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()
    thread.join(10)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def chromium(url: str, profile: Path, *args: str) -> str:
    "Run headless chromium on `url` with extra arguments; return its stdout."
    cmd = [
        CHROMIUM,
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-quic',
        f'--user-data-dir={profile}',
        *args,
        url,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f'chromium failed ({r.returncode}):\n{r.stderr[-3000:]}'
    return r.stdout


def test_report_in_browser(served, tmp_path):
    root, base = served
    dom = chromium(f'{base}/report/report.html', tmp_path / 'profile', '--dump-dom')
    figures = json.loads((root / 'report' / 'report.json').read_text())['figures']
    assert re.search(r'<h1>Browser check</h1>', dom)
    assert len(re.findall(r'<img src="data:image/png;base64,', dom)) == len(figures) >= 5
    for fig in ('map', 'composition-cluster', 'composition-source', 'lengths', 'diversity'):
        assert f'id="fig-{fig}"' in dom
    for table in ('method', 'params', 'timings', 'composition', 'lengths', 'diversity', 'coverage'):
        assert f'<table class="{table}">' in dom
    assert 'Projection: <strong>PCA</strong>' in dom
    shot = tmp_path / 'report.png'
    chromium(f'{base}/report/report.html', tmp_path / 'profile2', '--window-size=1200,1600', f'--screenshot={shot}')
    from PIL import Image

    img = np.asarray(Image.open(shot).convert('RGB')).astype(int)
    assert img.shape[:2] == (1600, 1200)
    red = (abs(img - np.array([214, 39, 40])).sum(axis=2) < 40).sum()  # the subset's colour: the figures were drawn
    assert red > 500, f'only {red} pixels of the subset colour: the figures did not render'


def test_docs_page_in_browser(served, tmp_path):
    _, base = served
    dom = chromium(f'{base}/site/{METHOD_NOTEBOOK}.html', tmp_path / 'profile', '--dump-dom')
    page = docs.notebook_page(ROOT / 'nbs' / f'{METHOD_NOTEBOOK}.ipynb', ROOT / 'nbs')
    assert re.search(rf'<h1 id="[^"]*">{re.escape(page.title)}', dom), 'the method title is missing'
    annotations = re.findall(r'<annotation encoding="application/x-tex">(.*?)</annotation>', dom, flags=re.S)
    assert len(re.findall(r'<math ', dom)) >= 5 and len(annotations) >= 5, 'the equations are missing'
    source = ''.join(''.join(c['source']) for c in json.loads(page.source.read_text())['cells'] if c['cell_type'] == 'markdown')
    display = next(m[1] for m in docs._MATH.finditer(source) if m[1] is not None)
    assert any(a.strip() == display.strip().replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;') for a in annotations)
    assert '<nav class="sidebar">' in dom and 'rel="prev"' in dom and 'rel="next"' in dom
    index = chromium(f'{base}/site/index.html', tmp_path / 'profile2', '--dump-dom')
    assert f'<a href="{METHOD_NOTEBOOK}.html">{METHOD_NOTEBOOK}</a>' in index and '<h1 id="datasel">datasel' in index
