"""datasel.docs: the static site (pages, navigation, signatures, MathML equations) and README generation."""

import subprocess, sys
from pathlib import Path
import nbformat
import pytest
from datasel import docs

ROOT = Path(__file__).resolve().parents[1]
md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell


@pytest.fixture
def small_nbs(tmp_path):
    "A notebooks folder: an index, a module notebook with show_doc and math, an experiment, a skipped '_draft'."
    nbs = tmp_path / 'nbs'
    (nbs / 'experiments').mkdir(parents=True)
    (nbs / '_draft').mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[md('# datasel\n\n> The front page.'), code('print(6 * 7)')]), nbs / 'index.ipynb')
    nbformat.write(
        nbformat.v4.new_notebook(
            cells=[
                md('# core\n\n> Checks & <results>.\n\nThe budget $b \\le n$ and\n\n$$b = \\lceil f n \\rceil$$'),
                code('#| default_exp core'),
                code('#| hide\nhidden_value = 1'),
                code('#| export\ndef f(x): return x  # <tag>'),
                code('show_doc(resolve_budget)'),
            ]
        ),
        nbs / '00_core.ipynb',
    )
    nbformat.write(
        nbformat.v4.new_notebook(cells=[md('# An experiment\n\n> Runs things.'), code('x = 1')]), nbs / 'experiments' / '01_exp.ipynb'
    )
    nbformat.write(nbformat.v4.new_notebook(cells=[md('# Draft')]), nbs / '_draft' / 'x.ipynb')
    return nbs


def test_build_site_pages_and_navigation(small_nbs, tmp_path):
    out = tmp_path / 'site'
    written = docs.build_site(small_nbs, out)
    assert sorted(p.relative_to(out).as_posix() for p in written) == ['00_core.html', 'experiments/01_exp.html', 'index.html']
    assert (out / 'style.css').read_text().count('.highlight') > 5
    core = (out / '00_core.html').read_text()
    assert '<a rel="prev" href="index.html">&larr; datasel</a>' in core and '<a rel="next" href="experiments/01_exp.html">' in core
    assert 'hidden_value' not in core and '#|' not in core and '# &lt;tag&gt;' in core
    # show_doc cell rendered in place, the rest of core's API after the notebook
    assert core.index('<h3 id="resolve_budget">') < core.index('<h2 id="API"') < core.index('<h3 id="as_embeddings">')
    assert 'an int in 1..n, or a fraction in (0, 1]' in core  # a docment
    assert core.count('<math') == 2 and '<annotation encoding="application/x-tex">b = \\lceil f n \\rceil</annotation>' in core
    exp = (out / 'experiments' / '01_exp.html').read_text()
    assert 'href="../style.css"' in exp and '<a rel="prev" href="../00_core.html">' in exp and 'href="../index.html"' in exp
    index = (out / 'index.html').read_text()
    assert '<td><a href="00_core.html">00_core</a></td><td>core</td><td>Checks &amp; &lt;results&gt;.</td>' in index
    assert 'Draft' not in index


def test_execute_index(small_nbs, tmp_path):
    docs.build_site(small_nbs, tmp_path / 'site', only=['index'], execute_index=True)
    assert '42' in (tmp_path / 'site' / 'index.html').read_text()


@pytest.mark.parametrize(
    'text, formulas',
    [
        ('costs $5 and $10', 0),  # prices, not math
        ('`$x$` and ```\n$$y$$\n```', 0),  # code is left alone
        (r'$a$, $$\sum_i x_i$$ and \$ sign', 2),
        ('$x$\n$y$', 2),
    ],
)
def test_protect_math(text, formulas):
    _, found = docs.protect_math(text)
    assert len(found) == formulas and '$' not in ''.join(found.values())


def test_every_notebook_has_a_title_and_summary():
    pages = docs.site_pages(ROOT / 'nbs')
    assert pages[0].href == 'index.html' and any(p.href.startswith('experiments/') for p in pages)
    for p in pages:
        assert p.title and p.summary, f'{p.source} needs "# title" and "> summary" in its first cell'


def test_cli(small_nbs, tmp_path):
    r = subprocess.run(
        [sys.executable, '-m', 'datasel.docs', '--nbs', str(small_nbs), '--out', str(tmp_path / 's')],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and '3 pages' in r.stdout and (tmp_path / 's' / 'index.html').exists()
    r = subprocess.run([sys.executable, '-m', 'datasel.docs', '--nbs', str(tmp_path / 'none')], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count('\n') == 0 and 'is not a folder' in r.stderr


def test_readme_from_index(small_nbs, tmp_path):
    text = docs.write_readme(small_nbs / 'index.ipynb', tmp_path / 'README.md').read_text()
    assert text == docs.README_HEADER + '# datasel\n\n> The front page.\n\n```python\nprint(6 * 7)\n```\n'
