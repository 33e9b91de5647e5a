"""The training stream: mmengine's order of batches, a resumable position, fast-forward without loading."""
import copy

import pytest
import torch
from conftest import data
from mmengine.dataset import DefaultSampler
from torch.utils.data import DataLoader

from mm_lightning import ConfigError
from mm_lightning.runtime.loaders import build_dataloader
from mm_lightning.runtime.train_stream import TrainStream
from mm_lightning.state import rng

AUGMENTED = dict(data(size=40, batch_size=4), dataset=dict(type='AugmentedBlobDataset', size=40))


def _loader(num_workers=0, **changes):
    return build_dataloader(dict(copy.deepcopy(AUGMENTED), num_workers=num_workers, **changes),
                            'train_dataloader', seed=3)


def _inputs(batches):
    return [torch.stack(batch['inputs']) if isinstance(batch['inputs'], list) else batch['inputs']
            for batch in batches]


def _interrupted_and_resumed(num_workers, stop_at, total_iters=None):
    """The batches after ``stop_at`` of one pass, uninterrupted and after a resume in a new stream."""
    torch.manual_seed(0)
    stream = TrainStream(_loader(num_workers), total_iters)
    batches, position, random_state = [], None, None
    for index, batch in enumerate(stream):
        batches.append(batch)
        if index + 1 == stop_at:
            position, random_state = copy.deepcopy(stream.position()), rng.capture()
    torch.manual_seed(123)  # a new process: other random state until the checkpoint's is restored
    resumed = TrainStream(_loader(num_workers), total_iters)
    resumed.set_position(position)
    iterator = iter(resumed)
    rng.restore(random_state)
    return _inputs(batches[stop_at:]), _inputs(list(iterator)), resumed


def test_fast_forward_without_workers_skips_at_the_sampler():
    expected, actual, resumed = _interrupted_and_resumed(num_workers=0, stop_at=6)
    assert len(actual) == 4 and all(torch.equal(a, b) for a, b in zip(expected, actual))
    assert resumed.loader.dataset.loads == 4 * 4  # only the batches after the position were loaded


def test_fast_forward_with_workers_replays_the_pass():
    expected, actual, _ = _interrupted_and_resumed(num_workers=2, stop_at=6)
    assert len(actual) == 4 and all(torch.equal(a, b) for a, b in zip(expected, actual))


def test_iteration_stream_restarts_exhausted_loaders_and_resumes_in_a_later_pass():
    # 10 batches per pass: position 23 is in the third pass (sampler epoch 2)
    expected, actual, resumed = _interrupted_and_resumed(num_workers=0, stop_at=23, total_iters=30)
    assert len(actual) == 7 and all(torch.equal(a, b) for a, b in zip(expected, actual))
    assert resumed.loader.sampler.epoch == 2


class FlushingBatchSampler:
    """A batch sampler with work after its last ``yield``, like mmdet's AspectRatioBatchSampler."""

    def __init__(self, sampler, batch_size):
        self.sampler, self.batch_size = sampler, batch_size
        self.finished_passes = 0

    def __iter__(self):
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        self.finished_passes += 1  # runs only when the pass is asked for one more batch

    def __len__(self):
        return len(self.sampler) // self.batch_size


def test_a_pass_runs_the_batch_sampler_to_its_end():
    dataset = _loader().dataset
    batch_sampler = FlushingBatchSampler(DefaultSampler(dataset, shuffle=False), 4)
    stream = TrainStream(DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=lambda b: b))
    assert sum(1 for _ in stream) == 10 and stream.pass_complete
    assert batch_sampler.finished_passes == 0  # Lightning stops at len(): the generator is suspended
    stream.finish_pass()
    assert batch_sampler.finished_passes == 1 and not stream.mid_pass


def test_a_loader_shorter_than_its_len_is_an_error():
    class Short(FlushingBatchSampler):
        def __len__(self):
            return 11
    dataset = _loader().dataset
    stream = TrainStream(DataLoader(dataset, batch_sampler=Short(DefaultSampler(dataset, shuffle=False), 4),
                                    collate_fn=lambda b: b))
    with pytest.raises(ConfigError, match=r'train_dataloader: the loader ended after 10 batches but its len\(\) is 11'):
        list(stream)
