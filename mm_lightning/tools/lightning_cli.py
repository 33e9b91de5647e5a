"""Lightning's command line for config-built runs: ``LightningCLI`` with the config's Trainer settings.

``LightningCLI(ConfigModule, ConfigDataModule)`` works as it is (``--model.config PATH
--data.config PATH``), with Lightning's Trainer defaults; a ``--trainer.*`` setting that a config key
decides becomes that key's value (:mod:`mm_lightning.runtime.trainer_settings`). :class:`ConfigCLI` is
that CLI with what a config implies:

- ``--model.config`` is given once; the datamodule reads the same config (``--model.cfg_options`` too);
- the Trainer gets ``trainer_kwargs(cfg)`` (strategy, precision, loggers from ``vis_backends``,
  the config's Lightning callbacks, ``work_dir``...), and each ``--trainer.*`` given on the
  command line wins over the config's value; ``--trainer.callbacks`` add to the config's;
- the config's ``randomness`` seeds the run (``seed_everything`` is off unless given).

``mm-lightning-cli fit|validate|test|predict --model.config PATH`` runs it.
"""
from __future__ import annotations

import importlib.util
import sys
from typing import Any, Dict, List, Optional

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from typing_extensions import override

from mm_lightning.config.loading import ConfigError
from mm_lightning.ground.internals import cli_parser, cli_value, instantiate_cli_trainer
from mm_lightning.runtime.data import ConfigDataModule
from mm_lightning.runtime.module import ConfigModule
from mm_lightning.runtime.trainer import trainer_kwargs
from mm_lightning.tools.cli import import_from_working_directory
from mm_lightning.translate.progress import lightning_info_to_file

__all__ = ['ConfigCLI', 'run']

#: What ``LightningCLI`` needs and ``pip install 'mm_lightning[cli]'`` installs.
MISSING_PARSER = "ConfigCLI needs jsonargparse, which LightningCLI parses with: pip install 'mm_lightning[cli]'"

#: The datamodule arguments that follow the module's (one config for both).
LINKED_ARGUMENTS = ('config', 'cfg_options')


class ConfigCLI(LightningCLI):
    """``LightningCLI`` for :class:`~mm_lightning.ConfigModule` and :class:`~mm_lightning.ConfigDataModule`.

    Over ``LightningCLI`` it links ``--data.config``/``--data.cfg_options`` to ``--model.config``/
    ``--model.cfg_options``, builds the Trainer from ``trainer_kwargs(cfg)`` (each ``--trainer.*`` given on
    the command line winning, ``--trainer.callbacks`` added to the config's) and leaves seeding to the
    config's ``randomness``.

    Args:
        model_class: the module class (``ConfigModule`` or a subclass).
        datamodule_class: the datamodule class (``ConfigDataModule`` or a subclass).
        seed_everything_default: Lightning's ``seed_everything`` before the classes are built;
            off by default, since the config's ``randomness`` seeds the run as mmengine does.
        **kwargs: the rest of ``LightningCLI``'s arguments (``args``, ``run``, ``parser_kwargs``...).

    Raises:
        ModuleNotFoundError: jsonargparse is not installed (``pip install 'mm_lightning[cli]'``).
    """

    def __init__(self, model_class: type = ConfigModule, datamodule_class: type = ConfigDataModule, *,
                 seed_everything_default: Any = False, **kwargs: Any) -> None:
        if importlib.util.find_spec('jsonargparse') is None:
            raise ModuleNotFoundError(MISSING_PARSER)
        super().__init__(model_class, datamodule_class, seed_everything_default=seed_everything_default, **kwargs)

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for argument in LINKED_ARGUMENTS:
            parser.link_arguments(f'model.{argument}', f'data.{argument}')

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The config's Trainer settings, then the ones the command line gives (``kwargs`` last)."""
        module = self.model
        settings = trainer_kwargs(module.cfg, logger=module.context.lightning_loggers or False)
        given = self._given_trainer_settings()
        callbacks: List[Any] = settings.pop('callbacks') + _as_list(given.pop('callbacks', None))
        callback_keys = cli_parser(self, self.subcommand).callback_keys
        extra_callbacks = [cli_value(self, self.config_init, key) for key in callback_keys]
        with lightning_info_to_file(module.context.log_to_file):  # Lightning's setup lines: the run's log file
            return instantiate_cli_trainer(self, {**settings, **given, 'callbacks': callbacks, **kwargs},
                                           extra_callbacks)

    def _given_trainer_settings(self) -> Dict[str, Any]:
        """The ``--trainer.*`` values (built) that differ from the parser's defaults: the command line's own."""
        parsed = vars(cli_value(self, self.config, 'trainer'))
        defaults = vars(cli_value(self, cli_parser(self, self.subcommand).get_defaults(), 'trainer'))
        built = cli_value(self, self.config_init, 'trainer')
        return {key: built[key] for key, value in parsed.items() if value != defaults.get(key)}


def _as_list(value: Optional[Any]) -> List[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def run(args: Optional[List[str]] = None) -> None:
    """``mm-lightning-cli``: :class:`ConfigCLI` on the command line (or ``args``).

    Args:
        args: the arguments to parse (``fit --model.config PATH ...``). None: ``sys.argv``'s.

    Raises:
        SystemExit: jsonargparse is not installed (with the message to install it), as ``LightningCLI``
            exits (``--help``, a parse error), or with status 2 on a ``ConfigError`` (its message on stderr).
    """
    if importlib.util.find_spec('jsonargparse') is None:
        sys.exit(f'mm-lightning-cli: {MISSING_PARSER}')
    import_from_working_directory()  # a config's custom_imports of the project being run
    try:
        ConfigCLI(args=args)
    except ConfigError as err:  # a bad config, as mm-lightning reports it: one line naming the key, exit status 2
        print(f'mm-lightning-cli: error: {err}', file=sys.stderr)
        sys.exit(2)


if __name__ == '__main__':
    run()
