"""Dataloaders built by mmengine, served to Lightning by a LightningDataModule.

mmengine's ``build_dataloader`` builds dataset, sampler, batch sampler, collate and
worker seeding exactly as under its Runner. Lightning receives them behind thin views
(:class:`TrainStream`, :class:`EvalBatches`) that are not ``DataLoader`` objects, so it
cannot swap their samplers or set their epochs; mmengine's hooks and samplers do that.

:class:`TrainStream` draws training batches in mmengine's order and knows its position
(passes started, batches drawn), which :class:`ConfigDataModule` carries in checkpoints.
Resuming recreates the interrupted pass and moves to that position:

* without loader workers, at the sampler: the skipped indices are drawn from the batch
  sampler, nothing is loaded (random augmentation in the main process follows the
  restored global random state, so the result is identical);
* with workers, by replaying the pass from its start, with the random state it started
  with, so worker seeds and per-worker random streams match (a progress bar shows it).

With ``persistent_workers=True`` the worker processes keep their own random state
across passes; a resumed run starts a new pool, so random augmentation inside workers
after a resume follows a fresh pool, as under mmengine. Everything else is exact.
"""
from __future__ import annotations

import copy
import logging
from functools import partial
from typing import Any, Dict, Iterator, List, Mapping, Optional, Union

import lightning.pytorch as pl
from lightning.fabric.utilities.rank_zero import rank_zero_only
from mmengine.dataset import InfiniteSampler
from mmengine.logging import print_log
from mmengine.runner import Runner
from torch.utils.data import DataLoader
from tqdm import tqdm
from typing_extensions import override

from mm_lightning.config.loading import CfgOptions, ConfigError, ConfigLike, config_error, load_config
from mm_lightning.config.registry import config_key
from mm_lightning.state import rng
from mm_lightning.state.serialization import from_safe, to_safe

__all__ = ['LoaderSpec', 'SPLITS', 'build_dataloader', 'loader_seed', 'set_loader_seed', 'TrainStream', 'EvalBatches',
           'ConfigDataModule', 'config_datamodule']

LoaderSpec = Union[DataLoader, Mapping[str, Any], None]
#: The splits a config's ``<split>_dataloader`` keys name.
SPLITS = ('train', 'val', 'test')


def build_dataloader(spec: Union[DataLoader, Mapping[str, Any]], key: str, seed: Optional[int] = None,
                     diff_rank_seed: bool = False) -> DataLoader:
    """mmengine's ``Runner.build_dataloader`` with errors that name ``key``.

    Args:
        spec: a ``DataLoader`` (returned as it is) or its config: ``dataset`` and ``sampler`` (required),
            ``batch_size``, ``num_workers``, ``collate_fn``... as mmengine takes them.
        key: the config key ``spec`` came from (``train_dataloader``...), named in errors.
        seed: the run's seed (``randomness.seed``): the sampler's default ``seed`` and the seed of
            mmengine's default ``worker_init_fn``. None: neither is seeded from it.
        diff_rank_seed: ``randomness.diff_rank_seed``; when True, ``seed`` is not given to the sampler, as
            mmengine's Runner does.

    Returns:
        The built loader.

    Raises:
        ConfigError: ``spec`` is neither a dict nor a ``DataLoader`` (also a ``TypeError``), or lacks
            ``dataset`` or ``sampler``, names a type no registry knows (also a ``KeyError``), or names a file
            that does not exist (``dataset.ann_file``...: also a ``FileNotFoundError``). Other errors raised while
            building it carry a note that names ``key``.
    """
    if isinstance(spec, DataLoader):
        return spec
    if not isinstance(spec, Mapping):
        raise config_error(f'{key}: expected a dict or a DataLoader, got {spec!r}', TypeError)
    for required in ('dataset', 'sampler'):
        if required not in spec:
            raise config_error(f'{key}: `{required}` is required (mmengine builds it from config)', KeyError)
    with config_key(key, spec):
        return Runner.build_dataloader(copy.deepcopy(dict(spec)), seed=seed, diff_rank_seed=diff_rank_seed)


class _SkipBatches:
    """A batch sampler view that leaves out the first ``count`` batches of ``batch_sampler``."""

    def __init__(self, batch_sampler: Any, count: int) -> None:
        self.batch_sampler = batch_sampler
        self.count = count

    def __iter__(self) -> Iterator[Any]:
        indices = iter(self.batch_sampler)
        for _ in range(self.count):
            next(indices)
        yield from indices

    def __len__(self) -> int:
        return max(len(self.batch_sampler) - self.count, 0)


def _rest_of_pass(loader: DataLoader, skipped: int) -> DataLoader:
    """The same loader without its first ``skipped`` batches (no workers: nothing else differs)."""
    return DataLoader(loader.dataset, batch_sampler=_SkipBatches(loader.batch_sampler, skipped), num_workers=0,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, timeout=loader.timeout,
                      generator=loader.generator, pin_memory_device=loader.pin_memory_device)


def _set_sampler_epoch(loader: DataLoader, epoch: int) -> None:
    """What mmengine's iteration stream does when it restarts an exhausted loader."""
    batch_sampler_sampler = getattr(loader.batch_sampler, 'sampler', None)  # a BatchSampler's
    if hasattr(loader.sampler, 'set_epoch'):
        loader.sampler.set_epoch(epoch)
    elif batch_sampler_sampler is not None and hasattr(batch_sampler_sampler, 'set_epoch'):
        batch_sampler_sampler.set_epoch(epoch)


def _samplers(loader: DataLoader) -> List[Any]:
    return [sampler for sampler in (loader.sampler, getattr(loader.batch_sampler, 'sampler', None))
            if sampler is not None]


def loader_seed(loader: DataLoader) -> Optional[int]:
    """The seed the loader's order comes from: its sampler's (mmengine's samplers shuffle by ``seed + epoch``).

    Without ``randomness.seed`` each run draws its own, and mmengine builds the loader before a resume
    gives the run the checkpoint's: the resumed order would be another one (mmengine's too).
    """
    return next((sampler.seed for sampler in _samplers(loader) if isinstance(getattr(sampler, 'seed', None), int)),
                None)


def set_loader_seed(loader: DataLoader, seed: int) -> None:
    """Give the loader's sampler, and the workers mmengine's ``worker_init_fn`` seeds, the order's ``seed``."""
    for sampler in _samplers(loader):
        if isinstance(getattr(sampler, 'seed', None), int):
            sampler.seed = seed
    init = loader.worker_init_fn
    if isinstance(init, partial) and 'seed' in init.keywords:
        loader.worker_init_fn = partial(init.func, *init.args, **dict(init.keywords, seed=seed))


def _is_endless(loader: DataLoader) -> bool:
    samplers = (loader.sampler, getattr(loader.batch_sampler, 'sampler', None))
    return any(isinstance(sampler, InfiniteSampler) for sampler in samplers)


class TrainStream:
    """The training batches in mmengine's order, from a resumable position.

    Epoch-based (``total_iters=None``): every ``iter()`` continues or starts one pass over
    the loader; the hook bridge ends the pass with :meth:`finish_pass` after its last batch,
    running the sampler's code after its last ``yield`` as mmengine's ``for`` loop does.
    Iteration-based: one stream of ``total_iters`` batches from an endless iterator in which
    an exhausted loader restarts with the sampler's next epoch, as mmengine's
    ``IterBasedTrainLoop`` does; its first pass starts when the stream is built, as
    mmengine's starts when its loop is built.

    :meth:`follow` ties the stream to mmengine's training loop object: each pass iterates
    the loop's ``dataloader`` (a loader a hook assigns is what the next pass iterates), and
    an iteration-based stream draws from the loop's own ``dataloader_iterator``.
    """

    def __init__(self, loader: DataLoader, total_iters: Optional[int] = None) -> None:
        self._loader = loader
        self._loop: Any = None
        self.total_iters = total_iters
        self._passes = 0  # passes started
        self._in_pass = 0  # batches drawn from the current pass
        self._drawn = 0  # batches drawn in all
        self._drained = True  # the current pass has ended (or none started)
        self._pass_rng: Optional[rng.RngState] = None
        self._iterator: Optional[Iterator[Any]] = None
        self._recreate = False  # restored mid-pass: rebuild the pass at its position first
        if total_iters is not None:
            self._pass_rng = rng.capture()
            self._begin_endless(iter(loader))

    def follow(self, loop: Any, by_epoch: bool, pass_rng: Optional[rng.RngState] = None) -> None:
        """Draw from mmengine's training loop ``loop``; ``pass_rng``: the random state its construction
        started an iteration-based pass with."""
        self._loop = loop
        if by_epoch:
            self.total_iters = None
            return
        self.total_iters = loop.max_iters
        if self._drawn == 0 and not self._recreate:  # the loop's construction started the first pass
            self._pass_rng = pass_rng
            self._passes, self._in_pass, self._drained = 1, 0, False
            self._iterator = loop.dataloader_iterator

    @property
    def loader(self) -> DataLoader:
        """The loader the current pass iterates (the training loop's, when following one)."""
        return self._loop.dataloader if self._loop is not None else self._loader

    @property
    def by_epoch(self) -> bool:
        return self.total_iters is None

    def __len__(self) -> int:
        if self.by_epoch:
            return len(self.loader)
        # Lightning does not start a fit with no batches (no before_train, no validation that was due,
        # no after_train): a finished stream, resumed, claims one batch, never drawn as the run stops first.
        return max(self._iteration_budget() - self._drawn, 1)

    def _iteration_budget(self) -> int:
        if self.total_iters is None:
            raise RuntimeError('an epoch-based stream has no iteration budget')
        return self.total_iters

    def __iter__(self) -> Iterator[Any]:
        return self._epoch_batches() if self.by_epoch else self._stream_batches()

    @property
    def batch_index(self) -> int:
        """mmengine's ``batch_idx`` of the batch drawn last (within its epoch)."""
        return self._in_pass - 1

    @property
    def mid_pass(self) -> bool:
        """A pass is open: an epoch-based run stopped inside an epoch, or any iteration-based run."""
        return not self._drained

    @property
    def pass_complete(self) -> bool:
        """Every batch of the epoch drawn, the pass not yet ended."""
        return self.by_epoch and not self._drained and self._in_pass >= len(self.loader)

    def finish_pass(self) -> None:
        """End an epoch's pass as mmengine's ``for`` loop does: ask for one more batch."""
        self._ensure_iterator()
        try:
            next(self._pass_iterator)
        except StopIteration:
            self._drained = True
            self._iterator = None
            return
        raise ConfigError(f'train_dataloader: the loader yields more batches per epoch than its len() '
                          f'({len(self.loader)}); mmengine would train on them, Lightning stops at len()')

    # -- drawing ----------------------------------------------------------------------------------
    def _start_pass(self) -> None:
        self._pass_rng = rng.capture()
        self._iterator = iter(self.loader)
        self._passes += 1
        self._in_pass = 0
        self._drained = False

    def _begin_endless(self, first_pass: Iterator[Any]) -> None:
        self._passes, self._in_pass, self._drained = max(self._passes, 1), self._in_pass, False
        self._iterator = self._restarting(first_pass, self._passes - 1)

    def _restarting(self, iterator: Iterator[Any], epoch: int) -> Iterator[Any]:
        """mmengine's ``_InfiniteDataloaderIterator`` from ``iterator`` (a pass of sampler epoch ``epoch``) on."""
        while True:
            yield from iterator
            print_log('Reach the end of the dataloader, it will be restarted and continue to iterate. It is '
                      'recommended to use `mmengine.dataset.InfiniteSampler` to enable the dataloader to '
                      'iterate infinitely.', logger='current', level=logging.WARNING)
            epoch += 1
            _set_sampler_epoch(self.loader, epoch)
            iterator = iter(self.loader)

    @property
    def _pass_iterator(self) -> Iterator[Any]:
        """The iterator of the open pass (:meth:`_ensure_iterator` opens one)."""
        if self._iterator is None:
            raise RuntimeError('train_dataloader: no pass is open to draw from')
        return self._iterator

    def _ensure_iterator(self) -> None:
        if self._recreate:
            self._recreate = False
            iterator = self._fast_forward()
            if self.by_epoch:
                self._iterator = iterator
            else:
                self._begin_endless(iterator)
        elif self._drained and self.by_epoch:
            self._start_pass()

    def _draw(self) -> Any:
        batch = next(self._pass_iterator)
        self._in_pass += 1
        self._drawn += 1
        return batch

    def _epoch_batches(self) -> Iterator[Any]:
        self._ensure_iterator()
        while self._in_pass < len(self.loader):
            try:
                batch = self._draw()
            except StopIteration:
                raise ConfigError(f'train_dataloader: the loader ended after {self._in_pass} batches but its '
                                  f'len() is {len(self.loader)}; epoch-based training needs a sized loader') from None
            yield batch

    def _stream_batches(self) -> Iterator[Any]:
        self._ensure_iterator()
        endless = _is_endless(self.loader)
        total_iters = self._iteration_budget()
        while self._drawn < total_iters:
            if not endless and self._in_pass >= len(self.loader):  # this draw restarts the loader
                self._passes += 1
                self._in_pass = 0
                self._pass_rng = rng.capture()
            yield self._draw()

    # -- position (the datamodule's state; not named state_dict, so Lightning does not save it twice) -----
    def position(self) -> Dict[str, Any]:
        return dict(passes=self._passes, in_pass=self._in_pass, drawn=self._drawn, drained=self._drained,
                    pass_rng=self._pass_rng, seed=loader_seed(self.loader))

    def set_position(self, state: Mapping[str, Any]) -> None:
        if state.get('seed') is not None:
            set_loader_seed(self.loader, state['seed'])
        self._passes = int(state['passes'])
        self._in_pass = int(state['in_pass'])
        self._drawn = int(state['drawn'])
        self._drained = bool(state['drained'])
        self._pass_rng = state.get('pass_rng')
        self._iterator = None
        self._recreate = not self._drained

    def state_from_meta(self, epoch: int, iteration: int) -> Dict[str, Any]:
        """The position after ``iteration`` batches, for checkpoints that record only counters."""
        length = len(self.loader)
        if self.by_epoch:
            in_pass = iteration - epoch * length
            return dict(passes=epoch + (in_pass > 0), in_pass=in_pass, drawn=iteration, drained=in_pass == 0,
                        pass_rng=None)
        if _is_endless(self.loader) or iteration == 0:
            return dict(passes=1, in_pass=iteration, drawn=iteration, drained=False, pass_rng=None)
        passes = -(-iteration // length)
        return dict(passes=passes, in_pass=iteration - (passes - 1) * length, drawn=iteration, drained=False,
                    pass_rng=None)

    def _fast_forward(self) -> Iterator[Any]:
        """The interrupted pass, positioned after its first ``in_pass`` batches.

        The global random state is left as it was: the caller restores the checkpoint's.
        """
        skipped = self._in_pass
        with rng.preserved():
            if self._pass_rng is not None:
                rng.restore(self._pass_rng)
            if not self.by_epoch and self._passes > 1:
                _set_sampler_epoch(self.loader, self._passes - 1)
            if self.loader.num_workers == 0 and self.loader.batch_sampler is not None:
                return iter(_rest_of_pass(self.loader, skipped))
            iterator = iter(self.loader)
            _replay(iterator, skipped)
        return iterator


@rank_zero_only
def _log_replay(count: int) -> None:
    print_log(f'Replaying {count} batches to the resume position (loader workers keep their own random '
              'state, so the batches are loaded again)', logger='current', level=logging.INFO)


def _replay(iterator: Iterator[Any], count: int) -> None:
    if count:
        _log_replay(count)
    rank = getattr(rank_zero_only, 'rank', 0)  # Lightning sets it on the function when the run starts
    for _ in tqdm(range(count), desc='replaying data to the resume position', disable=count < 1 or rank != 0,
                  leave=False):
        next(iterator)


class EvalBatches:
    """An evaluation loader as Lightning sees it: sized and iterable, not a ``DataLoader``.

    Lightning would replace a ``DataLoader``'s sampler under ``use_distributed_sampler``;
    mmengine's samplers already shard and pad. ``loader=None``: one step with no batch, for
    an evaluation loop whose own ``run`` iterates its loaders.
    """

    def __init__(self, loader: Optional[DataLoader]) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return 1 if self.loader is None else len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        # A generator: the loader's iterator (which draws a worker seed from the global random state)
        # is made at the first batch, as mmengine's loop makes it, not when Lightning probes iter().
        if self.loader is None:
            yield None
        else:
            yield from self.loader


class ConfigDataModule(pl.LightningDataModule):
    """Train/val/test dataloaders from an mmengine config, built once by mmengine.

    Loaders are built on first use (``setup`` at the latest, after the process group
    exists) so samplers see the right rank and world size. The position in the training
    stream is this module's state (``state_dict``), saved in Lightning checkpoints and,
    through the runner, in mmengine-format ones. A ``*_dataloader`` that is not a loader
    config (a list of them, for loops such as mmagic's ``MultiValLoop``) is handed to its
    loop as it is; that loop builds and iterates its loaders itself.

    Args:
        config: an mmengine config (a file path, a dict or a ``Config``) whose ``*_dataloader``
            and ``randomness`` keys it reads; ``LightningCLI`` gives it as ``--data.config PATH``.
            None: no loaders (what :meth:`from_loaders` starts from).
        cfg_options: overrides of config keys, as ``--cfg-options`` gives them. None: no overrides.

    :meth:`from_loaders` takes the loaders as mmengine's runner does (built or as configs).
    """

    def __init__(self, config: Optional[ConfigLike] = None, cfg_options: CfgOptions = None) -> None:
        super().__init__()
        cfg = load_config(config, cfg_options) if config is not None else {}
        randomness = cfg.get('randomness') or {}
        self._configure({split: cfg.get(f'{split}_dataloader') for split in SPLITS}, randomness.get('seed'),
                        randomness.get('diff_rank_seed', False))
        self._loaders: Dict[str, DataLoader] = {}
        self._train_stream: Optional[TrainStream] = None
        self._stream_state: Optional[Mapping[str, Any]] = None
        self._one_step: Dict[str, bool] = {}

    def _configure(self, specs: Dict[str, Any], seed: Optional[int], diff_rank_seed: bool) -> None:
        """The loaders' specs by split and their seeding: what the constructor and :meth:`from_loaders` set."""
        self._specs = specs
        self.seed = seed
        self.diff_rank_seed = diff_rank_seed

    @classmethod
    def from_config(cls, cfg: ConfigLike, cfg_options: CfgOptions = None) -> 'ConfigDataModule':
        """Loaders from ``*_dataloader`` keys; seeds from ``randomness`` as mmengine does (the constructor's).

        Args:
            cfg: an mmengine config: a file path, a dict or a ``Config``.
            cfg_options: overrides of config keys, as ``--cfg-options`` gives them. None: no overrides.

        Returns:
            The datamodule; its loaders are built on first use.
        """
        return cls(cfg, cfg_options)

    @classmethod
    def from_loaders(cls, train_dataloader: LoaderSpec = None, val_dataloader: Any = None,
                     test_dataloader: Any = None, *, seed: Optional[int] = None,
                     diff_rank_seed: bool = False) -> 'ConfigDataModule':
        """Loaders given as mmengine's runner takes them: built ``DataLoader`` objects or their configs.

        Args:
            train_dataloader: the training loader or its config (``train_dataloader``). None: no training data.
            val_dataloader: the validation loader or its config (``val_dataloader``), or a list of configs
                handed as it is to a loop that builds its own loaders. None: no validation data.
            test_dataloader: as ``val_dataloader``, for testing (``test_dataloader``); prediction iterates it
                too. None: no test data.
            seed: the run's seed (``randomness.seed``) for the loaders built from configs (see
                :func:`build_dataloader`). None: not seeded from it.
            diff_rank_seed: ``randomness.diff_rank_seed`` for those loaders (see :func:`build_dataloader`).

        Returns:
            The datamodule; the loaders given as configs are built on first use.
        """
        datamodule = cls()
        datamodule._configure(dict(train=train_dataloader, val=val_dataloader, test=test_dataloader), seed,
                              diff_rank_seed)
        return datamodule

    def has(self, split: str) -> bool:
        return self._specs[split] is not None

    def spec(self, split: str) -> Any:
        """``split``'s ``*_dataloader`` as configured (mmengine's ``_train_dataloader``...)."""
        return self._specs[split]

    def is_loader(self, split: str) -> bool:
        """Whether ``split``'s spec is one loader (a config dict or a ``DataLoader``)."""
        return isinstance(self._specs[split], (Mapping, DataLoader))

    def loader(self, split: str) -> DataLoader:
        """The mmengine-built loader for ``split`` (built on first call)."""
        if split not in self._loaders:
            spec = self._specs[split]
            if spec is None:
                raise ConfigError(f'{split}_dataloader is not configured')
            self._loaders[split] = build_dataloader(spec, f'{split}_dataloader', self.seed, self.diff_rank_seed)
        return self._loaders[split]

    def loop_dataloader(self, split: str) -> Any:
        """What ``split``'s mmengine loop is built with: the built loader, or a spec that is not one loader."""
        return self.loader(split) if self.is_loader(split) else self._specs[split]

    @property
    def train_stream(self) -> TrainStream:
        """The training batches as Lightning draws them (built with the train loader)."""
        if self._train_stream is None:
            self._train_stream = TrainStream(self.loader('train'))
            if self._stream_state is not None:
                self._train_stream.set_position(self._stream_state)
                self._stream_state = None
        return self._train_stream

    @override
    def setup(self, stage: str) -> None:
        # Only the training loader (fitting starts with it): an evaluation loader is built with its loop,
        # after the training loop, in mmengine's order, or by the loop itself.
        if stage == 'fit' and self.has('train'):
            self.loader('train')

    def evaluate_in_one_step(self, split: str, one_step: bool) -> None:
        """Serve ``split`` as one step without a batch (its evaluation loop's own ``run`` iterates)."""
        self._one_step[split] = one_step

    def _eval_batches(self, split: str) -> Any:
        if not self.has(split):
            return []
        return EvalBatches(None if self._one_step.get(split, False) else self.loader(split))

    @override
    def train_dataloader(self) -> Any:
        return self.train_stream

    @override
    def val_dataloader(self) -> Any:
        return self._eval_batches('val')

    @override
    def test_dataloader(self) -> Any:
        return self._eval_batches('test')

    @override
    def predict_dataloader(self) -> Any:
        """The test loader: mmengine has no predict loop, and its test step is what predicts."""
        if not self.has('test'):
            raise ConfigError('test_dataloader: prediction runs over the test loader, which is not configured')
        if not self.is_loader('test'):
            raise ConfigError('test_dataloader: prediction needs one loader config, not a list of them')
        return EvalBatches(self.loader('test'))

    @override
    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        return batch  # the model's data_preprocessor moves data to the device, as under mmengine

    @override
    def state_dict(self) -> Dict[str, Any]:
        """The position in the training data (in a form ``torch.load(weights_only=True)`` reads)."""
        if self._train_stream is not None:
            return to_safe({'train': self._train_stream.position()})
        return to_safe({'train': self._stream_state}) if self._stream_state is not None else {}

    @override
    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        train = from_safe(state_dict).get('train')
        if train is None:
            return
        if self._train_stream is not None:
            self._train_stream.set_position(train)
        else:
            self._stream_state = train


def config_datamodule(trainer: pl.Trainer) -> ConfigDataModule:
    """The datamodule of a Trainer running a ConfigModule (Lightning sets ``trainer.datamodule`` when a stage
    starts; it is not a declared attribute).

    Args:
        trainer: the Trainer running a :class:`~mm_lightning.ConfigModule`.

    Returns:
        The Trainer's :class:`ConfigDataModule`.

    Raises:
        ConfigError: the Trainer runs without a ConfigDataModule.
    """
    datamodule = getattr(trainer, 'datamodule', None)
    if not isinstance(datamodule, ConfigDataModule):
        raise ConfigError('a ConfigModule runs with a ConfigDataModule: '
                          'trainer.fit(module, datamodule=ConfigDataModule.from_config(cfg))')
    return datamodule
