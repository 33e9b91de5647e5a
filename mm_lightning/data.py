"""Dataloaders built by mmengine, served to Lightning by a LightningDataModule.

mmengine's ``build_dataloader`` builds dataset, sampler, batch sampler, collate and
worker seeding exactly as under its Runner. Lightning receives the loaders as they
are (the Trainer must run with ``use_distributed_sampler=False``). Iteration-based
training sees one endless stream, as mmengine's IterBasedTrainLoop does.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Dict, Iterator, Mapping, Optional, Union

import lightning.pytorch as pl
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmengine.runner.loops import _InfiniteDataloaderIterator
from torch.utils.data import DataLoader

from .config import ConfigError, ConfigLike, load_config
from .loops import parse_train_cfg
from .registry import config_key

SPLITS = ('train', 'val', 'test')
LoaderSpec = Union[DataLoader, Mapping[str, Any], None]


def build_dataloader(spec: Union[DataLoader, Mapping[str, Any]], key: str, seed: Optional[int] = None,
                     diff_rank_seed: bool = False) -> DataLoader:
    """mmengine's ``Runner.build_dataloader`` with errors that name ``key``."""
    if isinstance(spec, DataLoader):
        return spec
    if not isinstance(spec, Mapping):
        raise ConfigError(f'{key}: expected a dict or a DataLoader, got {spec!r}')
    for required in ('dataset', 'sampler'):
        if required not in spec:
            raise ConfigError(f'{key}: `{required}` is required (mmengine builds it from config)')
    with config_key(key):
        return Runner.build_dataloader(copy.deepcopy(dict(spec)), seed=seed, diff_rank_seed=diff_rank_seed)


def train_iterations(train_cfg: Any) -> Optional[int]:
    """``max_iters`` of an iteration-based ``train_cfg``; ``None`` for epoch-based or no training."""
    if train_cfg is None:
        return None
    parsed = parse_train_cfg(train_cfg)
    return None if parsed['by_epoch'] else parsed['max_iters']


class IterationLoader:
    """An iteration-based run's training stream: ``len`` batches from an endless iterator.

    mmengine's IterBasedTrainLoop draws every batch from one ``_InfiniteDataloaderIterator``
    (restarting the loader when a finite sampler runs out) and, on resume, skips the
    batches already trained. Lightning sees a sized iterable of the remaining batches,
    so it neither prefetches nor restarts it.
    """

    def __init__(self, dataloader: DataLoader, total: int) -> None:
        self.dataloader = dataloader
        self.total = total
        self.start = 0
        # Created now, as mmengine's loop does when it is built.
        self._stream = _InfiniteDataloaderIterator(dataloader)
        self._skipped = False

    def resume_at(self, iteration: int) -> None:
        self.start = iteration

    def __len__(self) -> int:
        return max(self.total - self.start, 0)

    def __iter__(self) -> Iterator[Any]:
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        if self.start and not self._skipped:
            print_log(f'Advance dataloader {self.start} steps to skip data that has already been trained',
                      logger='current', level=logging.WARNING)
            for _ in range(self.start):
                next(self._stream)
        self._skipped = True
        for _ in range(len(self)):
            yield next(self._stream)


class ConfigDataModule(pl.LightningDataModule):
    """Train/val/test dataloaders from an mmengine config, built once by mmengine.

    Loaders are built on first use (``setup`` at the latest, after the process group
    exists) so samplers see the right rank and world size.
    """

    def __init__(self, train_dataloader: LoaderSpec = None, val_dataloader: LoaderSpec = None,
                 test_dataloader: LoaderSpec = None, *, seed: Optional[int] = None,
                 diff_rank_seed: bool = False, train_iterations: Optional[int] = None) -> None:
        super().__init__()
        self._specs: Dict[str, LoaderSpec] = dict(train=train_dataloader, val=val_dataloader,
                                                   test=test_dataloader)
        self._loaders: Dict[str, DataLoader] = {}
        self.seed = seed
        self.diff_rank_seed = diff_rank_seed
        self.train_iterations = train_iterations
        self._train_stream: Optional[IterationLoader] = None

    @classmethod
    def from_config(cls, cfg: ConfigLike, cfg_options: Any = None) -> 'ConfigDataModule':
        """Loaders from ``*_dataloader`` keys; seeds from ``randomness`` as mmengine does."""
        cfg = load_config(cfg, cfg_options)
        randomness = cfg.get('randomness') or {}
        return cls(cfg.get('train_dataloader'), cfg.get('val_dataloader'), cfg.get('test_dataloader'),
                   seed=randomness.get('seed'), diff_rank_seed=randomness.get('diff_rank_seed', False),
                   train_iterations=train_iterations(cfg.get('train_cfg')))

    def has(self, split: str) -> bool:
        return self._specs[split] is not None

    def loader(self, split: str) -> DataLoader:
        """The mmengine-built loader for ``split`` (built on first call)."""
        if split not in self._loaders:
            spec = self._specs[split]
            if spec is None:
                raise ConfigError(f'{split}_dataloader is not configured')
            self._loaders[split] = build_dataloader(spec, f'{split}_dataloader', self.seed, self.diff_rank_seed)
            if split == 'train' and self.train_iterations is not None:
                self._train_stream = IterationLoader(self._loaders[split], self.train_iterations)
        return self._loaders[split]

    def resume_at(self, iteration: int) -> None:
        """Skip the iterations a resumed iteration-based run has already trained."""
        if self.train_iterations is not None:
            self.loader('train')
            assert self._train_stream is not None
            self._train_stream.resume_at(iteration)

    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        return batch  # the model's data_preprocessor moves data to the device, as under mmengine

    def setup(self, stage: str) -> None:
        wanted = {'fit': ('train', 'val'), 'validate': ('val',), 'test': ('test',)}.get(stage, ())
        for split in wanted:
            if self.has(split):
                self.loader(split)

    def train_dataloader(self) -> Any:
        loader = self.loader('train')
        return self._train_stream if self._train_stream is not None else loader

    def val_dataloader(self) -> Any:
        return self.loader('val') if self.has('val') else []

    def test_dataloader(self) -> Any:
        return self.loader('test') if self.has('test') else []
