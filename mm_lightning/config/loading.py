"""Loading mmengine configs in every form mmengine takes them.

A config can be a path (``.py``, ``.json``, ``.yaml``; ``_base_`` inheritance and
pure-Python lazy-import configs included), a plain dict or an mmengine ``Config``.
``--cfg-options`` style overrides are applied the way mmengine's tools apply them.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import os
import traceback
import warnings
from typing import Any, Dict, Iterable, Mapping, Optional, Type, Union

from mmengine.config import Config, DictAction

__all__ = ['ConfigLike', 'CfgOptions', 'ConfigError', 'ConfigTypeError', 'ConfigAssertionError', 'ConfigKeyError',
           'ConfigRuntimeError', 'ConfigImportError', 'ConfigFileNotFoundError', 'config_error', 'default_work_dir',
           'load_config', 'parse_cfg_options', 'require_together', 'TextCachingConfig', 'private_copy']

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


class ConfigImportError(ConfigError, ImportError):
    """A :class:`ConfigError` where mmengine raises ``ImportError`` (``custom_imports`` that fail)."""


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """A :class:`ConfigError` for a file a config names that does not exist (a dataset's ``ann_file``)."""


#: mmengine's exception type -> the ConfigError that is also one.
_AS_MMENGINE_RAISES: Dict[Optional[type], Type[ConfigError]] = {
    None: ConfigError, ValueError: ConfigError, TypeError: ConfigTypeError, AssertionError: ConfigAssertionError,
    KeyError: ConfigKeyError, RuntimeError: ConfigRuntimeError, ImportError: ConfigImportError,
    FileNotFoundError: ConfigFileNotFoundError}


def config_error(message: str, like: Optional[type] = None) -> ConfigError:
    """A :class:`ConfigError` with ``message`` that is also a ``like`` (the type mmengine raises).

    Args:
        message: the error's message, starting with the config key it names.
        like: the built-in type mmengine raises for the same mistake: ``ValueError``, ``TypeError``,
            ``AssertionError``, ``KeyError``, ``RuntimeError``, ``ImportError`` or ``FileNotFoundError``.
            None: a plain :class:`ConfigError`.

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

    ``custom_imports`` are imported here, for a file too (rather than while mmengine reads it), so that
    a module that fails to import is one error naming ``custom_imports``, the module and its error.

    Args:
        source: a config file path (``.py``, ``.json``, ``.yaml``), a dict or an mmengine ``Config``;
            it is copied, never changed.
        cfg_options: overrides of config keys, as ``--cfg-options`` gives them: ``KEY=VALUE`` strings
            (parsed by :func:`parse_cfg_options`) or a mapping of dotted keys to values. None: no overrides.

    Returns:
        The config, with ``cfg_options`` merged in.

    Raises:
        ConfigError: the file does not exist, reading it fails on an import (``custom_imports`` or a
            lazy-import config's; that error is also an ``ImportError``, as mmengine's), ``source`` is of
            another type, ``custom_imports`` is malformed, or a ``cfg_options`` item is not ``KEY=VALUE``.
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
        try:  # custom_imports are imported below, where a failure can name the module and its error
            cfg = Config.fromfile(path, import_custom_modules=False)
        except ImportError as err:  # a lazy-import config's own imports
            cause = err.__cause__ or err
            raise config_error(f'{path}: reading the config failed: {type(cause).__name__}: {cause}',
                               ImportError) from err
        _import_custom_modules(cfg, path)
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


def _import_custom_modules(cfg: Config, path: Optional[str] = None) -> None:
    """Import ``custom_imports`` as mmengine's ``Config.fromfile`` does; a module that fails to import is one
    :class:`ConfigImportError` naming ``custom_imports``, the module and its error (chained), as every entry
    point reports it. With ``allow_failed_imports=True`` an ``ImportError`` is a warning, as in mmengine."""
    custom_imports = cfg.get('custom_imports')
    if not custom_imports:
        return
    if not isinstance(custom_imports, Mapping) or 'imports' not in custom_imports:
        raise ConfigError("custom_imports: expected dict(imports=[...], allow_failed_imports=False), "
                          f'got {custom_imports!r}')
    imports = custom_imports['imports']
    names = [imports] if isinstance(imports, str) else imports
    if not isinstance(names, (list, tuple)) or not all(isinstance(name, str) for name in names):
        raise config_error(f'custom_imports.imports: expected a module name or a list of them, got {imports!r}',
                           TypeError)
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            if custom_imports.get('allow_failed_imports', False):
                warnings.warn(f'{name} failed to import and is ignored.', UserWarning)  # mmengine's words
                continue
            raise _custom_import_error(name, err, path) from err
        except Exception as err:  # any error of the user's module, reported with its cause
            raise _custom_import_error(name, err, path) from err


def _custom_import_error(name: str, err: BaseException, path: Optional[str]) -> ConfigError:
    """``custom_imports: importing 'name' (listed in path) failed: Error: message (file, line N)``."""
    listed = f' (listed in {path})' if path else ''
    machinery = (__file__, os.path.dirname(importlib.__file__ or ''))
    frames = [frame for frame in traceback.extract_tb(err.__traceback__)
              if not frame.filename.startswith('<frozen') and not frame.filename.startswith(machinery)]
    where = ''
    if isinstance(err, SyntaxError) and err.filename:
        where = f' ({err.filename}, line {err.lineno})'
    elif frames:  # the line of the user's code that raised
        where = f' ({frames[-1].filename}, line {frames[-1].lineno})'
    hint = ''
    if isinstance(err, ModuleNotFoundError) and err.name and name.startswith(err.name):
        hint = '; set PYTHONPATH so that sys.path holds the directory it is in'
    text = err.msg if isinstance(err, SyntaxError) else str(err)  # a SyntaxError's str repeats its place
    message = text.splitlines()[0] if text else ''
    return config_error(f'custom_imports: importing {name!r}{listed} failed: {type(err).__name__}: {message}'
                        f'{where}{hint}', ImportError)


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
        key = repr(self)  # Config's repr: its filename and every key's value
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
