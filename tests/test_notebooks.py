"""One test per notebook under nbs/ (experiments included): each runs `nbdev-test` on that notebook, so cells marked
`#| slow` / `#| gpu` stay skipped unless DATASEL_NB_FLAGS names them (e.g. DATASEL_NB_FLAGS="slow")."""

import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted(
    p for p in (ROOT / 'nbs').rglob('*.ipynb') if not any(part.startswith(('_', '.')) for part in p.relative_to(ROOT / 'nbs').parts)
)


def test_notebooks_found():
    assert any(p.name.startswith('00_core') for p in NBS), 'nbs/00_core.ipynb is missing'


@pytest.mark.parametrize('nb', NBS, ids=[str(p.relative_to(ROOT / 'nbs')) for p in NBS])
def test_notebook(nb):
    exe = Path(sys.executable).with_name('nbdev-test')
    cmd = [str(exe), str(nb), '--do-print']
    flags = os.environ.get('DATASEL_NB_FLAGS', '').strip()
    if flags:
        cmd += ['--flags', flags]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, f'nbdev-test failed on {nb.name}:\n{r.stdout[-6000:]}\n{r.stderr[-6000:]}'
