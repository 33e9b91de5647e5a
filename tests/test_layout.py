"""The package's layout: every module imports on its own, and the public paths stay where users find them."""
import subprocess
import sys

from paths import ROOT

import mm_lightning

#: Each module imported first, in one interpreter: mm_lightning's modules are dropped before each import
#: (third-party ones stay loaded), so an import cycle shows wherever it starts.
EACH_MODULE_FIRST = """
import pkgutil, sys, importlib
import mm_lightning
names = [m.name for m in pkgutil.walk_packages(mm_lightning.__path__, 'mm_lightning.')]
failed = []
for name in names:
    for loaded in [n for n in sys.modules if n == 'mm_lightning' or n.startswith('mm_lightning.')]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ImportError as err:
        failed.append(f'{name}: {err}')
print(len(names))
print('\\n'.join(failed))
"""


def test_every_module_imports_first():
    result = subprocess.run([sys.executable, '-c', EACH_MODULE_FIRST], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    count, *failed = result.stdout.strip().split('\n')
    assert int(count) > 40 and failed == []


def test_public_names_and_their_old_paths():
    from mm_lightning.config import ConfigError, config_error, load_config
    from mm_lightning.runner import FlexibleRunner
    assert FlexibleRunner is mm_lightning.FlexibleRunner and load_config is mm_lightning.load_config
    assert isinstance(config_error('x: y', KeyError), (ConfigError, KeyError))
    for name in mm_lightning.__all__:
        assert getattr(mm_lightning, name).__name__ == name
