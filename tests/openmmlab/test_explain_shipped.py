"""`mm-lightning explain` of configs the eight OpenMMLab repos ship: a report (exit 0, or 1 with a
refusal), never a crash, and no files written."""
import pytest

from . import compat
from .available import missing
from .shipped import check_explains, sample_configs

#: package -> its import fixes (compat), applied before asking whether it imports.
PACKAGES = {'mmdet': None, 'mmseg': None, 'mmpretrain': None, 'mmpose': compat.mmpose,
            'mmaction': compat.mmaction, 'mmocr': compat.mmocr, 'mmagic': compat.mmagic, 'mmyolo': compat.mmyolo}
PER_PACKAGE = 2


@pytest.mark.parametrize('package', list(PACKAGES))
@pytest.mark.parametrize('index', range(PER_PACKAGE))
def test_shipped_configs_are_explained(package, index, tmp_path, monkeypatch, capsys):
    if PACKAGES[package] is not None:
        PACKAGES[package]()
    failures = missing(package)
    if failures:
        pytest.skip(f'needs {failures[0]}')
    monkeypatch.chdir(tmp_path)
    check_explains(sample_configs(package, PER_PACKAGE)[index], capsys)
