"""Loading mmengine configs in every form mmengine takes them.

A config can be a path (``.py``, ``.json``, ``.yaml``; ``_base_`` inheritance and
pure-Python lazy-import configs included), a plain dict or an mmengine ``Config``.
``--cfg-options`` style overrides are applied the way mmengine's tools apply them.
"""
from __future__ import annotations

import argparse
import copy
import os
from typing import Any, Dict, Iterable, Mapping, Optional, Type, Union

from mmengine.config import Config, DictAction
from mmengine.utils import import_modules_from_strings

__all__ = ['ConfigLike', 'CfgOptions', 'ConfigError', 'ConfigTypeError', 'ConfigAssertionError', 'ConfigKeyError',
           'ConfigRuntimeError', 'config_error', 'default_work_dir', 'load_config', 'parse_cfg_options',
           'require_together', 'TextCachingConfig', 'private_copy']

#: A config as every entry point takes it. ``os.PathLike`` is unsubscripted: ``LightningCLI``'s parser keeps
#: a path as a path with it (given ``os.PathLike[str]``, it reads the file and passes its text).
ConfigLike = Union[str, os.PathLike, Mapping[str, Any], Config]
CfgOptions = Union[Mapping[str, Any], Iterable[str], None]


class ConfigError(ValueError):
    """A config value mm_lightning cannot use. The message names the config key.

    Where mmengine raises another built-in type for the same mistake (a ``TypeError`` for a
    value of the wrong kind, an ``AssertionError`` from its checks, a ``KeyError`` for a name
    no registry knows), the error is also an instance of that type: :func:`config_error`
    picks the class, so ``except`` clauses written for mmengine still catch it.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


class ConfigTypeError(ConfigError, TypeError):
    """A :class:`ConfigError` where mmengine raises ``TypeError``."""


class ConfigAssertionError(ConfigError, AssertionError):
    """A :class:`ConfigError` where mmengine's checks fail an ``assert``."""


class ConfigKeyError(ConfigError, KeyError):
    """A :class:`ConfigError` where mmengine raises ``KeyError`` (its message is not quoted)."""


class ConfigRuntimeError(ConfigError, RuntimeError):
    """A :class:`ConfigError` where mmengine raises ``RuntimeError``."""


#: mmengine's exception type -> the ConfigError that is also one.
_AS_MMENGINE_RAISES: Dict[Optional[type], Type[ConfigError]] = {
    None: ConfigError, ValueError: ConfigError, TypeError: ConfigTypeError, AssertionError: ConfigAssertionError,
    KeyError: ConfigKeyError, RuntimeError: ConfigRuntimeError}


def config_error(message: str, like: Optional[type] = None) -> ConfigError:
    """A :class:`ConfigError` with ``message`` that is also a ``like`` (the type mmengine raises).

    Args:
        message: the error's message, starting with the config key it names.
        like: the built-in type mmengine raises for the same mistake: ``ValueError``, ``TypeError``,
            ``AssertionError``, ``KeyError`` or ``RuntimeError``. None: a plain :class:`ConfigError`.

    Returns:
        The error, to raise: a :class:`ConfigError` (a ``ValueError``) that is also a ``like``.
    """
    return _AS_MMENGINE_RAISES[like](message)


def default_work_dir(cfg: Any) -> str:
    """Where a run without ``work_dir`` writes: ``work_dirs/<config name>``, as OpenMMLab's tools choose
    (``work_dirs`` for a config that is not a file), so two configs never share a ``last_checkpoint``."""
    filename = getattr(cfg, 'filename', None)
    if not filename:
        return 'work_dirs'
    return os.path.join('work_dirs', os.path.splitext(os.path.basename(filename))[0])


def load_config(source: ConfigLike, cfg_options: CfgOptions = None) -> Config:
    """Return a private ``Config`` copy of ``source`` with ``cfg_options`` merged in.

    ``custom_imports`` are imported here for dicts and ``Config`` objects; mmengine
    already imports them while reading a file.

    Args:
        source: a config file path (``.py``, ``.json``, ``.yaml``), a dict or an mmengine ``Config``;
            it is copied, never changed.
        cfg_options: overrides of config keys, as ``--cfg-options`` gives them: ``KEY=VALUE`` strings
            (parsed by :func:`parse_cfg_options`) or a mapping of dotted keys to values. None: no overrides.

    Returns:
        The config, with ``cfg_options`` merged in.

    Raises:
        ConfigError: the file does not exist, reading it fails on an import (``custom_imports`` or a
            lazy-import config's), ``source`` is of another type, ``custom_imports`` is malformed, or a
            ``cfg_options`` item is not ``KEY=VALUE``.
        ImportError: a dict's or ``Config``'s ``custom_imports`` names a module that cannot be imported
            (unless ``allow_failed_imports=True``).
    """
    if isinstance(source, Config):
        cfg = copy.deepcopy(source)
        _import_custom_modules(cfg)
    elif isinstance(source, Mapping):
        cfg = Config(copy.deepcopy(dict(source)))
        _import_custom_modules(cfg)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise ConfigError(f'config file not found: {path!r}')
        try:
            cfg = Config.fromfile(path)
        except ImportError as err:  # the file's custom_imports (or a lazy-import config's imports)
            cause = err.__cause__ or err
            raise ConfigError(f'custom_imports: reading {path!r} failed: {type(cause).__name__}: {cause}') from err
    else:
        raise ConfigError('a config must be a file path, a dict or an mmengine Config, '
                          f'got {type(source).__name__}')
    options = parse_cfg_options(cfg_options)
    if options:
        cfg.merge_from_dict(options)
    return cfg


def parse_cfg_options(options: CfgOptions) -> dict:
    """Parse ``KEY=VALUE`` items as mmengine's ``DictAction`` does (lists, tuples, bools).

    A mapping is taken as already parsed.

    Args:
        options: ``KEY=VALUE`` strings (one string or several), a mapping of dotted keys to values, or None.

    Returns:
        The overrides as a dict of dotted keys to parsed values (``{}`` for None).

    Raises:
        ConfigError: an item has no ``=`` or an empty key.
    """
    if options is None:
        return {}
    if isinstance(options, Mapping):
        return dict(options)
    items = [options] if isinstance(options, str) else list(options)
    for item in items:
        key, sep, _ = str(item).partition('=')
        if not sep or not key.strip():
            raise ConfigError(f'bad --cfg-options item {item!r}: expected KEY=VALUE, '
                              'for example train_cfg.max_epochs=12')
    namespace = argparse.Namespace()
    DictAction(option_strings=[], dest='options')(None, namespace, items)
    return namespace.options


def _import_custom_modules(cfg: Config) -> None:
    custom_imports = cfg.get('custom_imports')
    if not custom_imports:
        return
    if not isinstance(custom_imports, Mapping) or 'imports' not in custom_imports:
        raise ConfigError("custom_imports: expected dict(imports=[...], allow_failed_imports=False), "
                          f'got {custom_imports!r}')
    import_modules_from_strings(**custom_imports)


def require_together(**items: Any) -> None:
    """Keys that must be all given or all absent (e.g. train_dataloader, train_cfg, optim_wrapper)."""
    given = [key for key, value in items.items() if value is not None]
    if given and len(given) != len(items):
        missing = [key for key in items if key not in given]
        raise ConfigError(f'{", ".join(items)} should be either all None or not None: got {", ".join(given)} '
                          f'without {", ".join(missing)}')


class TextCachingConfig(Config):
    """A ``Config`` that formats its Python text once per content.

    mmengine formats the text (with yapf) for the log, the dumped config and every
    visualizer backend; that formatting is most of a run's start-up time.
    """

    @property
    def pretty_text(self) -> str:
        key = repr(self._cfg_dict)
        cached = self.__dict__.get('_cached_pretty_text')
        if cached is None or cached[0] != key:
            cached = (key, super().pretty_text)
            object.__setattr__(self, '_cached_pretty_text', cached)
        return cached[1]


def private_copy(cfg: Union[Config, Mapping[str, Any], None]) -> Config:
    """A deep copy of ``cfg`` that the runner may change and format cheaply."""
    if isinstance(cfg, Config):
        return TextCachingConfig(copy.deepcopy(cfg.to_dict()), cfg_text=cfg.text, filename=cfg.filename,
                                 env_variables=cfg.env_variables)
    return TextCachingConfig(copy.deepcopy(dict(cfg or {})))
