"""Loaders built as mmengine's Runner builds them, with errors that name the config key."""
import pytest

from mm_lightning import ConfigError
from mm_lightning.runtime.loaders import build_dataloader


def test_a_missing_annotation_file_is_a_config_error_naming_its_key(tmp_path):
    """mmengine's BaseDataset reads its ann_file when built: the error names the key and the path."""
    from mmengine.dataset import BaseDataset
    spec = dict(dataset=dict(type=BaseDataset, data_root=str(tmp_path), ann_file='missing.json'),
                sampler=dict(type='DefaultSampler'), batch_size=2)
    with pytest.raises(ConfigError) as err:
        build_dataloader(spec, 'val_dataloader')
    assert str(err.value) == f"val_dataloader.dataset.ann_file: file not found: '{tmp_path / 'missing.json'}'"
    assert isinstance(err.value, FileNotFoundError)
