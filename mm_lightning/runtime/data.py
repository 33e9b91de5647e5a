"""Dataloaders built by mmengine, served to Lightning by a LightningDataModule.

mmengine's ``build_dataloader`` (:mod:`mm_lightning.runtime.loaders`) builds dataset, sampler,
batch sampler, collate and worker seeding exactly as under its Runner. Lightning receives them
behind thin views (:class:`~mm_lightning.runtime.train_stream.TrainStream`, :class:`EvalBatches`)
that are not ``DataLoader`` objects, so it cannot swap their samplers or set their epochs;
mmengine's hooks and samplers do that. The training stream's position is
:class:`ConfigDataModule`'s state, carried in checkpoints (how a resume reaches it:
:mod:`mm_lightning.runtime.train_stream`).
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, Mapping, Optional, Union

import lightning.pytorch as pl
from torch.utils.data import DataLoader
from typing_extensions import override

from mm_lightning.config.loading import CfgOptions, ConfigError, ConfigLike, load_config
from mm_lightning.runtime.loaders import build_dataloader
from mm_lightning.runtime.train_stream import TrainStream
from mm_lightning.state.serialization import from_safe, to_safe

__all__ = ['LoaderSpec', 'SPLITS', 'EvalBatches', 'ConfigDataModule', 'config_datamodule']

LoaderSpec = Union[DataLoader, Mapping[str, Any], None]
#: The splits a config's ``<split>_dataloader`` keys name.
SPLITS = ('train', 'val', 'test')


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
