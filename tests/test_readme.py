"""README.md is generated from nbs/index.ipynb, and its examples run: every Python block, and the CLI quick start."""

import os, re, shlex, subprocess, sys
import pytest
from pathlib import Path
from datasel.docs import readme_text

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'


def python_blocks(text: str) -> list[str]:
    "The bodies of the ```python blocks of a markdown text."
    return re.findall(r'^```python\n(.*?)^```$', text, flags=re.M | re.S)


def test_readme_is_generated_from_index():
    assert README.read_text(encoding='utf-8') == readme_text(ROOT / 'nbs' / 'index.ipynb'), (
        'README.md differs from nbs/index.ipynb: edit the notebook, then run `python -m datasel.docs --readme`'
    )


def test_python_blocks_found():
    assert python_blocks('x\n```python\na = 1\n```\n```bash\nls\n```\n') == ['a = 1\n']
    assert len(python_blocks(README.read_text(encoding='utf-8'))) >= 3


def test_readme_python_blocks_run(tmp_path):
    "The blocks run in order, as one script, in an empty folder, offline."
    script = '\n'.join(python_blocks(README.read_text(encoding='utf-8')))
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', MPLBACKEND='Agg')
    r = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f'a README example failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}'
    assert not list(tmp_path.iterdir()), 'the README examples should not write files into the working folder'


def cli_quick_start(text: str) -> list[str]:
    "The `datasel ...` lines of the first bash block under '## Command line quick start', comments dropped."
    section = text.split('## Command line quick start', 1)[1]
    block = re.search(r'^```bash\n(.*?)^```$', section, flags=re.M | re.S)[1]
    return [line.split('  #')[0].strip() for line in block.splitlines() if line.startswith('datasel ')]


def test_cli_quick_start_found():
    lines = cli_quick_start(README.read_text(encoding='utf-8'))
    assert any(l.startswith('datasel select') for l in lines) and any(l.startswith('datasel embed') for l in lines)


@pytest.mark.slow
def test_readme_cli_quick_start_runs(tmp_path):
    "Every command of the CLI quick start runs, in order, on 40 Alpaca records and a quality score per record."
    import json
    import numpy as np

    with open(tmp_path / 'data.jsonl', 'w') as f:
        for i in range(40):
            f.write(
                json.dumps({'instruction': f'Write a sentence about topic {i}.', 'output': f'Topic {i} matters for reason {i % 7}.'}) + '\n'
            )
    np.save(tmp_path / 'q.npy', np.random.default_rng(0).random(40))
    exe = Path(sys.executable).with_name('datasel')
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', MPLBACKEND='Agg')
    for line in cli_quick_start(README.read_text(encoding='utf-8')):
        args = shlex.split(line)
        r = subprocess.run([str(exe), *args[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f'`{line}` failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}'
