"""mmengine's loaders, built as its Runner builds them, and the seed their order comes from.

:func:`build_dataloader` is mmengine's ``Runner.build_dataloader`` (dataset, sampler, batch
sampler, collate and worker seeding exactly as under its Runner) with errors that name the
config key; :func:`loader_seed` and :func:`set_loader_seed` read and set the seed a built
loader's order comes from, which a resume restores. They are separate from the datamodule
(:mod:`mm_lightning.runtime.data`) because the runner view and the training stream use them
too, each without the other.
"""
from __future__ import annotations

import copy
from functools import partial
from typing import Any, List, Mapping, Optional, Union

from mmengine.runner import Runner
from torch.utils.data import DataLoader

from mm_lightning.config.loading import config_error
from mm_lightning.config.registry import config_key

__all__ = ['build_dataloader', 'loader_seed', 'set_loader_seed']


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
