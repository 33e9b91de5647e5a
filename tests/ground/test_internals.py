"""Private Lightning, mmengine and torch names are named in ``mm_lightning/ground/internals.py`` only.

Three ways to name one are looked for (in the syntax tree, so comments and strings do not count):

- a private attribute of anything but ``self``/``cls`` (``trainer._accelerator_connector``,
  ``super()._setup()``, ``torch._C``), unless it is one of :data:`OUR_OWN`;
- a private name imported from lightning, mmengine or torch (``from mmengine.optim import _ParamScheduler``,
  ``torch.distributed._composable``);
- on ``self``, in a class with a lightning, mmengine or torch base, a private name that base has (``self._trainer``
  in a LightningModule, ``self._data_parallel_size = ...`` in a strategy, ``def _init_env``), unless it is one
  of :data:`OVERRIDDEN`, the private hooks internals.py's docstring lists as ours to override.
"""
import ast
import importlib
import inspect
import pathlib
import re
from typing import Any, Dict, Iterator, List, Mapping, Set, Tuple

import pytest

import mm_lightning

PACKAGE = pathlib.Path(mm_lightning.__file__).parent
INTERNALS = PACKAGE / 'ground' / 'internals.py'
LIBRARIES = ('lightning', 'mmengine', 'torch')

#: Private attributes read on objects other than ``self``: mm_lightning's own, or not a library's.
OUR_OWN = {
    '_configure': "ConfigDataModule's, called by config_datamodule (runtime/data.py)",
    '_note': "PreemptionHandler's signal handler, installed by runtime/preemption.py",
    '_SubParsersAction': "argparse's (tools/cli.py annotates with it), not a Lightning/mmengine/torch name",
}

#: Private methods of a library class that our subclasses implement (internals.py's docstring lists them).
OVERRIDDEN = {
    '_init_env': "BaseVisBackend's set-up hook, which force_init_env runs (translate/loggers.py, mmengine 0.10.7)",
}

_PRIVATE_IN_SOURCE = (re.compile(r'\bself\.(_[A-Za-z]\w*)'), re.compile(r'\bdef (_[A-Za-z]\w*)'),
                      re.compile(r'setattr\(\s*(?:self\s*,\s*)?[\'"](_[A-Za-z]\w*)[\'"]'))
_library_privates: Dict[type, Set[str]] = {}


def _is_private(name: str) -> bool:
    return name.startswith('_') and not name.startswith('__')


def _from_library(module: str) -> bool:
    return module.split('.')[0] in LIBRARIES


def _privates_of(base: type) -> Set[str]:
    """The private names a library class has: its class attributes and what its source sets or defines."""
    if base not in _library_privates:
        names = {name for name in vars(base) if _is_private(name)}
        try:
            source = inspect.getsource(base)
        except (OSError, TypeError):  # a class without Python source
            source = ''
        for pattern in _PRIVATE_IN_SOURCE:
            names.update(pattern.findall(source))
        _library_privates[base] = names
    return _library_privates[base]


def _self_names(cls_node: ast.ClassDef) -> Iterator[Tuple[int, str]]:
    """``self._x`` (read, set, ``getattr(self, '_x')``) and ``def _x`` in a class body, with their lines."""
    for node in ast.walk(cls_node):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == 'self':
            yield node.lineno, node.attr
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node is not cls_node:
            yield node.lineno, node.name
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ('getattr', 'setattr', 'hasattr', 'delattr') and len(node.args) > 1
              and isinstance(node.args[0], ast.Name) and node.args[0].id == 'self'
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            yield node.lineno, node.args[1].value


def private_uses(source: str, namespace: Mapping[str, Any]) -> List[Tuple[int, str]]:
    """The library private names ``source`` uses, as (line, what); ``namespace`` holds its classes."""
    tree = ast.parse(source)
    found: List[Tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr) and node.attr not in OUR_OWN:
            if not (isinstance(node.value, ast.Name) and node.value.id in ('self', 'cls')):
                found.append((node.lineno, f'{ast.unparse(node.value)}.{node.attr}'))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _from_library(node.module or ''):
            path = (node.module or '').split('.')
            found.extend((node.lineno, f'from {node.module} import {alias.name}') for alias in node.names
                         if _is_private(alias.name) or any(map(_is_private, path)))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, f'import {alias.name}') for alias in node.names
                         if _from_library(alias.name) and any(map(_is_private, alias.name.split('.'))))
    for cls_node in (node for node in tree.body if isinstance(node, ast.ClassDef)):
        cls = namespace.get(cls_node.name)
        if not isinstance(cls, type):
            continue
        library_bases = [base for base in cls.__mro__[1:] if _from_library(base.__module__)]
        privates = set().union(*map(_privates_of, library_bases)) - set(OVERRIDDEN)
        for line, name in _self_names(cls_node):
            if _is_private(name) and name in privates:
                owners = ', '.join(base.__name__ for base in library_bases if name in _privates_of(base))
                found.append((line, f'{cls_node.name}: self.{name} (private to {owners})'))
    return sorted(set(found))


def package_private_uses() -> List[str]:
    found = []
    for path in sorted(PACKAGE.rglob('*.py')):
        if path == INTERNALS:
            continue
        source = path.read_text()
        namespace: Mapping[str, Any] = {}
        if re.search(r'^class \w+\(', source, re.MULTILINE) and path.name != '__main__.py':
            module = '.'.join(path.relative_to(PACKAGE.parent).with_suffix('').parts)
            namespace = vars(importlib.import_module(module))
        relative = path.relative_to(PACKAGE.parent)
        found.extend(f'{relative}:{line}: {what}' for line, what in private_uses(source, namespace))
    return found


def test_private_library_names_only_in_internals():
    found = package_private_uses()
    assert not found, ('private Lightning/mmengine/torch names outside mm_lightning/ground/internals.py '
                       '(wrap each there):\n' + '\n'.join(found))


PLANTED = '''
import lightning.pytorch as pl
from mmengine.optim import _ParamScheduler
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper


def devices(trainer):
    return trainer._accelerator_connector  # trainer._in_a_comment is not read


class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self._mine = 1

    def attached(self):
        return self._trainer, self._mine, getattr(self, '_device')
'''


def _planted_namespace() -> Dict[str, Any]:
    namespace: Dict[str, Any] = {}
    exec(compile(PLANTED, '<planted>', 'exec'), namespace)  # the test's own source: its classes
    return namespace


@pytest.mark.parametrize('expected', [
    (3, 'from mmengine.optim import _ParamScheduler'),
    (4, 'from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper'),
    (8, 'trainer._accelerator_connector'),
])
def test_planted_uses_are_found(expected):
    namespace = _planted_namespace()
    assert expected in private_uses(PLANTED, namespace)


def test_planted_self_uses_are_found_and_own_names_are_not():
    namespace = _planted_namespace()
    on_self = [what for line, what in private_uses(PLANTED, namespace) if what.startswith('Module:')]
    assert [what.split(' (')[0] for what in on_self] == ['Module: self._device', 'Module: self._trainer']
    assert 'LightningModule' in on_self[1]  # the class that has it is named
