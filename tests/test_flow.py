"""The one-way data flow (records -> vectors / scores -> a method -> Selection) as import rules, and a torch-free core."""

import ast, subprocess, sys
from pathlib import Path
import pytest

PKG = Path(__file__).resolve().parents[1] / 'datasel'

# What each part of the package may import. Records become vectors and scores (models), vectors and scores become a
# Selection (selectors); neither side imports the other, and only the glue and the front ends above them see both.
BASE = {'core'}
ALLOWED = {
    'core': set(),
    'registry': BASE,
    'data': BASE,
    'geometry': BASE,
    'metrics': BASE | {'geometry'},
    'selectors': BASE | {'registry', 'geometry', 'metrics'},
    'models': BASE | {'data', 'geometry'},
}
ALLOWED['pipelines'] = set().union(*ALLOWED.values()) | set(ALLOWED)
ALLOWED['report'] = ALLOWED['pipelines'] | {'pipelines'}
ALLOWED['experiments'] = ALLOWED['report'] | {'report'}
for front in ('recipes', 'reproduce', 'docs'):
    ALLOWED[front] = ALLOWED['experiments'] | {'experiments'}
ALLOWED['cli'] = set(ALLOWED) - {'cli'}
SHARED_IN_PART = {'datasel.selectors.greedy'}  # the greedy engines, shared by the submodular methods


def part_of(module: str) -> str | None:
    parts = module.split('.')
    return parts[1] if parts[0] == 'datasel' and len(parts) > 1 else None


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix('')
    parts = list(rel.parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def imports_of(path: Path) -> set[str]:
    "Every datasel module `path` imports, at module level or inside functions, relative imports resolved."
    me = module_name(path).split('.')
    package = me if path.name == '__init__.py' else me[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith('datasel')}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                base = '.'.join(package[: len(package) - node.level + 1] + ([base] if base else []))
            if not base.startswith('datasel'):
                continue
            for a in node.names:  # `from datasel.selectors import greedy` names a module
                sub = f'{base}.{a.name}'
                found.add(sub if (PKG.parent / sub.replace('.', '/')).with_suffix('.py').exists() else base)
    return found


MODULES = sorted(p for p in PKG.rglob('*.py') if p.name not in ('_modidx.py', '__init__.py') or p.parent != PKG)
MODULES = [p for p in MODULES if not (p.name == '__init__.py' and p.stat().st_size == 0)]


def test_every_module_has_a_layer():
    for p in MODULES:
        name = module_name(p)
        if name != 'datasel':
            assert part_of(name) in ALLOWED, f'{name}: add it to ALLOWED in this test'


def violations(me: str, imported: set[str]) -> list[str]:
    "The imports of module `me` that run against the flow."
    mine, bad = part_of(me), []
    for other in sorted(imported):
        theirs = part_of(other)
        if theirs is None or other == me:
            continue
        if theirs == mine:
            ok = mine != 'selectors' or other in SHARED_IN_PART
        else:
            ok = theirs in ALLOWED[mine]
        if not ok:
            bad.append(f'{me} imports {other}')
    return bad


@pytest.mark.parametrize('path', MODULES, ids=[module_name(p) for p in MODULES])
def test_imports_follow_the_flow(path):
    assert violations(module_name(path), imports_of(path)) == []


def test_the_rule_catches_violations():
    assert violations('datasel.selectors.datatailor', {'datasel.models.embed'})  # a method loading a model
    assert violations('datasel.models.score', {'datasel.selectors.presel'})  # a model reaching into a method
    assert violations('datasel.experiments', {'datasel.reproduce'})  # a toolkit importing its driver
    assert violations('datasel.selectors.greedy', {'datasel.selectors.kmq'})  # one method importing another
    assert not violations('datasel.selectors.qdit', {'datasel.selectors.greedy', 'datasel.metrics', 'datasel.core'})
    assert not violations('datasel.models.score', {'datasel.models.embed', 'datasel.data'})
    assert 'datasel.core' in imports_of(PKG / 'selectors' / 'kmq.py')  # relative imports resolved


def test_numpy_core_imports_without_torch():
    "`import datasel` and selecting from arrays need neither torch nor transformers."
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "import numpy as np, datasel as ds\n"
        "X = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)\n"
        "for name in ('kcenter', 'kmq', 'novelselect'):\n"
        "    assert len(ds.select(name, X, 20)) == 20, name\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None and m == 'torch']\n"
        "print('ok')"
    )
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith('ok'), r.stderr[-3000:]
