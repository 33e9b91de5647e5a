"""Whether the OpenMMLab packages a test module needs import here, and why not."""
import importlib
import os
from typing import List

import pytest

INSTALL = ('install the OpenMMLab stack with .ci/install-openmmlab in a fresh venv (torch 2.14.1 + torchvision '
           '0.29.1, mmcv 2.1 with its compiled ops from ../shared/wheels, the OpenMMLab packages)')
#: Set to ``required`` (as CI does where it installed the stack) to make a missing package an error, not a skip.
REQUIRED_VARIABLE = 'MM_LIGHTNING_OPENMMLAB'


def missing(*modules: str) -> List[str]:
    """The modules that fail to import, each with its error's first line."""
    failures = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as err:  # ImportError, or a compiled extension that fails to load
            first_line = str(err).splitlines()[0] if str(err) else ''
            failures.append(f'{name} ({type(err).__name__}: {first_line})')
    return failures


def requires(*modules: str, install: str = INSTALL) -> pytest.MarkDecorator:
    """Skip (with the import errors as the reason, and how to install) unless ``modules`` import.

    Under ``MM_LIGHTNING_OPENMMLAB=required`` a missing module is an error instead.
    """
    failures = missing(*modules)
    if failures and os.environ.get(REQUIRED_VARIABLE) == 'required':
        raise ImportError(f'{REQUIRED_VARIABLE}=required, but this needs {", ".join(failures)}; {install}')
    return pytest.mark.skipif(bool(failures), reason=f'needs {", ".join(failures)}; {install}')
