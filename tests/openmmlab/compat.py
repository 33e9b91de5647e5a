"""Import-time fixes for OpenMMLab releases that do not import as published beside this stack.

Each fixes the import only (a version pin, a file missing from the wheel, a name removed from
numpy) and changes nothing that a run computes; the suite applies them before it asks whether
a package imports (:mod:`available`), so both runners see the same, fixed modules.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types


def allow_mmocr_on_mmdet_3_3() -> None:
    """mmocr 1.0.1 (its last release) asserts ``mmdet < 3.2.0`` at import; the suite's mmdet is 3.3.0.

    mmocr's main branch lifts the cap to 3.4.0 with no code change (open-mmlab/mmocr#2023). Show
    mmocr's ``__init__`` a 3.1 version while it imports, then put the real one back.
    """
    _import_showing_version('mmocr', 'mmdet', '3.1.0')


def stub_mmaction_drn() -> None:
    """mmaction2 1.2.0's wheel and sdist lack ``mmaction/models/localizers/drn/`` (no ``__init__.py``
    there upstream, so setuptools left it out: open-mmlab/mmaction2#2714), yet
    ``mmaction.models.localizers`` imports ``DRN`` from it, so nothing of ``mmaction.models`` imports.
    Stand in an empty module for the missing one (DRN, a temporal grounding localizer, is not used here)."""
    name = 'mmaction.models.localizers.drn'
    spec = importlib.util.find_spec('mmaction')
    if spec is None or name in sys.modules:
        return
    localizers = os.path.join(os.path.dirname(spec.origin), 'models', 'localizers')
    if os.path.isdir(os.path.join(localizers, 'drn')) or not os.path.isdir(localizers):
        return  # a release that ships it, or one laid out differently
    package = types.ModuleType(name)
    package.__path__ = []
    module = types.ModuleType(name + '.drn')

    class DRN:  # noqa: D401 - placeholder, never registered
        """Placeholder for the localizer missing from the mmaction2 1.2.0 wheel."""

        def __init__(self, *args, **kwargs):
            raise ImportError('mmaction2 1.2.0 was published without mmaction/models/localizers/drn')

    module.DRN = DRN
    sys.modules[name] = package
    sys.modules[name + '.drn'] = module
    package.drn = module


def numpy_sctypes_for_imgaug() -> None:
    """imgaug 0.4.0 (mmocr imports it in ``mmocr.datasets.transforms``) reads ``np.sctypes`` at import,
    which numpy 2 removed. Put back the table numpy 1.x had."""
    import numpy as np
    if 'sctypes' in vars(np):
        return
    np.sctypes = {'int': [np.int8, np.int16, np.int32, np.int64],
                  'uint': [np.uint8, np.uint16, np.uint32, np.uint64],
                  'float': [np.float16, np.float32, np.float64, np.longdouble],
                  'complex': [np.complex64, np.complex128, np.clongdouble],
                  'others': [bool, object, bytes, str, np.void]}


def _import_showing_version(package: str, dependency: str, version: str) -> None:
    """Import ``package`` while ``dependency.__version__`` reads ``version`` (a version cap at import)."""
    if package in sys.modules or importlib.util.find_spec(package) is None:
        return
    try:
        needed = importlib.import_module(dependency)
    except Exception:  # reported by available.requires
        return
    real = needed.__version__
    needed.__version__ = version
    try:
        importlib.import_module(package)
    except Exception:  # reported by available.requires, which imports it again
        pass
    finally:
        needed.__version__ = real


def allow_mmyolo_on_mmcv_2_1() -> None:
    """mmyolo 0.6.0 (its last release) asserts ``mmcv < 2.1.0`` at import; the suite's mmcv is 2.1.0, the
    one the other repos need. Nothing else in mmyolo depends on it (open-mmlab/mmyolo#922, where raising
    the bound is the known workaround): show its ``__init__`` 2.0.1 while it imports."""
    _import_showing_version('mmyolo', 'mmcv', '2.0.1')


def numpy_bool8_for_mmagic() -> None:
    """mmagic 1.2.0's ``mmagic/utils/trans_utils.py`` names ``np.bool8`` (as a duplicate key of
    ``np.bool_``), removed in numpy 2: put the alias back."""
    import numpy as np
    if 'bool8' not in vars(np):
        np.bool8 = np.bool_


def mmyolo() -> None:
    os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')  # mmdet's Albu: no update check against PyPI
    allow_mmyolo_on_mmcv_2_1()


def mmagic() -> None:
    numpy_bool8_for_mmagic()


def mmocr() -> None:
    numpy_sctypes_for_imgaug()
    allow_mmocr_on_mmdet_3_3()


def mmaction() -> None:
    stub_mmaction_drn()


def mmpose() -> None:
    # albumentations (RTMPose's pipelines) asks PyPI for a newer release when it is imported.
    os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')
