"""Whether the OpenMMLab packages a test module needs import here, and why not."""
import importlib
from typing import List

import pytest

INSTALL = ('install an mmcv 2.1 wheel built for this torch, then mmdet==3.3.0 mmsegmentation==1.2.2 '
           'mmpretrain==1.2.0 pycocotools ftfy regex (mmpretrain also needs a torchvision that imports '
           'beside this torch)')

# mmyolo 0.6 / mmagic 1.2 beside that stack: the pip commands are in .ci/openmmlab-extra-b.txt.
MMYOLO_INSTALL = ('pip install --no-deps mmyolo==0.6.0 albumentations==1.4.6 and pip install scikit-image, then '
                  'allow mmcv 2.1 in mmyolo/__init__.py (mmcv_maximum_version); see .ci/openmmlab-extra-b.txt')
MMAGIC_INSTALL = ('pip install --no-deps mmagic==1.2.0 and its imported dependencies, and drop np.bool8 from '
                  'mmagic/utils/trans_utils.py (numpy 2); see .ci/openmmlab-extra-b.txt')


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
    """Skip (with the import errors as the reason, and how to install) unless ``modules`` import."""
    failures = missing(*modules)
    return pytest.mark.skipif(bool(failures), reason=f'needs {", ".join(failures)}; {install}')
