"""The package's layers hold: every import of one mm_lightning layer by another goes downward.

Each import counts wherever it stands: at the top of a module, inside a function, or under
``if TYPE_CHECKING:``. The modules directly in ``mm_lightning/`` (``__init__.py``, ``__main__.py``) sit above
every layer and may import any of them. The order and what each layer holds: ``mm_lightning/__init__.py``.
"""
import ast
from pathlib import Path
from typing import List, Optional

from paths import ROOT

#: The layers, lowest first: a module may import its own layer and those before it.
LAYERS = ('ground', 'config', 'state', 'translate', 'runtime', 'runner', 'tools')

PACKAGE = Path(ROOT) / 'mm_lightning'


def _layer_of(dotted: str) -> Optional[str]:
    """The layer an absolute ``mm_lightning.<layer>...`` name is in (None: the top-level package itself)."""
    parts = dotted.split('.')
    return parts[1] if len(parts) > 1 and parts[0] == 'mm_lightning' else None


def _imported(node: ast.AST) -> List[str]:
    """The mm_lightning modules ``node`` imports, as dotted names ('' for none)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        assert node.level == 0, 'mm_lightning imports itself by absolute names only'
        module = node.module or ''
        if module == 'mm_lightning':  # from mm_lightning import runtime: the names are the layers
            return [f'mm_lightning.{alias.name}' for alias in node.names]
        return [module]
    return []


def back_imports(root: Path = PACKAGE) -> List[str]:
    """``file:line: layer A imports layer B`` for every import against the layers' order, in every module."""
    found = []
    for path in sorted(root.rglob('*.py')):
        relative = path.relative_to(root)
        if len(relative.parts) == 1:  # __init__.py, __main__.py: above every layer
            continue
        layer = relative.parts[0]
        assert layer in LAYERS, f'{relative}: a subpackage the layers do not name'
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for name in _imported(node):
                target = _layer_of(name)
                if name == 'mm_lightning' or (name.startswith('mm_lightning.') and target not in LAYERS):
                    found.append(f'{path.relative_to(root.parent)}:{node.lineno}: layer {layer} imports {name}, above '
                                 'every layer')
                elif target is not None and LAYERS.index(target) > LAYERS.index(layer):
                    found.append(f'{path.relative_to(root.parent)}:{node.lineno}: layer {layer} imports layer {target}')
    return found


def test_every_subpackage_is_a_layer():
    assert sorted(p.name for p in PACKAGE.iterdir() if (p / '__init__.py').exists()) == sorted(LAYERS)


def test_imports_go_only_downward():
    found = back_imports()
    assert not found, 'imports against the layers ' + ' -> '.join(LAYERS) + ':\n' + '\n'.join(found)


def test_a_back_import_inside_a_function_is_found(tmp_path):
    config = tmp_path / 'config'
    config.mkdir()
    (config / 'loading.py').write_text('def f():\n    from mm_lightning.tools import cli\n')
    (config / 'checks.py').write_text('from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n'
                                      '    from mm_lightning.runtime.view import RunnerView\n')
    found = back_imports(tmp_path)
    assert [line.split(': ', 1)[1] for line in found] == ['layer config imports layer runtime',
                                                          'layer config imports layer tools']
