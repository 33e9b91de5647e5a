"""The datamodule: loaders served to Lightning as views, the stream's position in its checkpoints."""
import copy

import pytest
import torch
from conftest import data
from torch.utils.data import DataLoader

from mm_lightning import ConfigError
from mm_lightning.runtime.data import ConfigDataModule, EvalBatches
from mm_lightning.runtime.loaders import build_dataloader

AUGMENTED = dict(data(size=40, batch_size=4), dataset=dict(type='AugmentedBlobDataset', size=40))


def _loader(num_workers=0, **changes):
    return build_dataloader(dict(copy.deepcopy(AUGMENTED), num_workers=num_workers, **changes),
                            'train_dataloader', seed=3)


def test_datamodule_position_survives_a_checkpoint_round_trip():
    dm = ConfigDataModule.from_loaders(AUGMENTED)
    dm.setup('fit')
    iterator = iter(dm.train_dataloader())
    for _ in range(3):
        next(iterator)
    state = dm.state_dict()
    torch.save(state, '/dev/null')
    restored = ConfigDataModule.from_loaders(AUGMENTED)
    restored.load_state_dict(state)  # before the stream exists, as Lightning restores it
    assert restored.train_stream.position()['in_pass'] == 3 and restored.train_stream.mid_pass


def test_eval_batches_hide_the_loader_and_start_it_lazily():
    loader = _loader()
    batches = EvalBatches(loader)
    assert not isinstance(batches, DataLoader) and len(batches) == len(loader)
    before = torch.get_rng_state()
    iterator = iter(batches)  # Lightning probes iter(); no worker seed is drawn yet
    assert torch.equal(torch.get_rng_state(), before)
    assert len(list(iterator)) == 10


def test_predict_dataloader_is_the_test_loader_and_refused_without_one():
    datamodule = ConfigDataModule.from_loaders(test_dataloader=data(size=6, shuffle=False, batch_size=4))
    assert [len(batch['index']) for batch in datamodule.predict_dataloader()] == [4, 2]
    with pytest.raises(ConfigError, match='test_dataloader: prediction runs over the test loader'):
        ConfigDataModule.from_loaders(train_dataloader=data()).predict_dataloader()
