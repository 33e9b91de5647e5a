"""Whether the OpenMMLab packages a test module needs import here, and why not."""
import importlib
from typing import List

import pytest

INSTALL = ('install an mmcv 2.1 wheel built for this torch, then mmdet==3.3.0 mmsegmentation==1.2.2 '
           'mmpretrain==1.2.0 pycocotools ftfy regex (mmpretrain also needs a torchvision that imports '
           'beside this torch)')


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


#: For the modules of mmpose, mmaction2 and mmocr, which install beside the stack above.
INSTALL_EXTRA = 'then the packages of .ci/openmmlab-extra.txt, in its order'


def requires(*modules: str, install: str = INSTALL) -> pytest.MarkDecorator:
    """Skip (with the import errors as the reason) unless ``modules`` import."""
    failures = missing(*modules)
    return pytest.mark.skipif(bool(failures), reason=f'needs {", ".join(failures)}; {install}')
