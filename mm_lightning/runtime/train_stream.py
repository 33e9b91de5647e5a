"""The training batches in mmengine's order, resumable at the batch a run stopped at.

:class:`TrainStream` draws training batches as mmengine's training loops do and knows its
position (passes started, batches drawn), which the datamodule carries in checkpoints.
Resuming recreates the interrupted pass and moves to that position:

* without loader workers, at the sampler: the skipped indices are drawn from the batch
  sampler, nothing is loaded (random augmentation in the main process follows the
  restored global random state, so the result is identical);
* with workers, by replaying the pass from its start, with the random state it started
  with, so worker seeds and per-worker random streams match (a progress bar shows it).

With ``persistent_workers=True`` the worker processes keep their own random state
across passes; a resumed run starts a new pool, so random augmentation inside workers
after a resume follows a fresh pool, as under mmengine. Everything else is exact. It is
separate from :mod:`mm_lightning.runtime.data` (which serves it to Lightning) because
resuming a pass is a concept of its own, with its own tests.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, Mapping, Optional

from lightning.fabric.utilities.rank_zero import rank_zero_only
from mmengine.dataset import InfiniteSampler
from mmengine.logging import print_log
from torch.utils.data import DataLoader
from tqdm import tqdm

from mm_lightning.config.loading import ConfigError
from mm_lightning.runtime.loaders import loader_seed, set_loader_seed
from mm_lightning.state import rng

__all__ = ['TrainStream']


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
