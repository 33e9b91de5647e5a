"""Building config entries through mmengine's registries, with errors that name the key.

mmengine's own error for an unknown ``type`` names the registry but not where in the
config the entry sits; a config has many ``type`` keys, so we add the key path.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import os
from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from mmengine.registry import Registry
from mmengine.utils import get_object_from_string

from mm_lightning.config.loading import ConfigError, config_error

__all__ = ['build', 'check_type_known', 'suggestions', 'unexpected_arguments', 'config_key', 'missing_file_error',
           'type_name', 'resolve_type', 'check_importable', 'names_subclass_of']


def build(registry: Registry, cfg: Any, key: str, default_args: Optional[dict] = None) -> Any:
    """Build ``cfg`` (a dict with ``type``) from ``registry``; errors name ``key``."""
    if not isinstance(cfg, Mapping) or 'type' not in cfg:
        raise config_error(f"{key}: expected a dict with a 'type' key, got {cfg!r}",
                           KeyError if isinstance(cfg, Mapping) else TypeError)
    obj_type = cfg['type']
    if isinstance(obj_type, str):
        check_type_known(registry, obj_type, f'{key}.type', scope=cfg.get('_scope_'))
    with config_key(key, cfg):
        return registry.build(cfg, default_args=default_args)


def check_type_known(registry: Registry, name: str, key: str, scope: Optional[str] = None) -> Any:
    """What ``name`` is registered as; a ``ConfigError`` naming ``key`` and the registry when it is not."""
    with registry.switch_scope_and_registry(scope) as scoped:
        try:
            found = scoped.get(name)
        except RuntimeError:  # mmengine's "Failed to get" for a dotted name whose object cannot be imported
            found = None
        if found is not None:
            return found
        check_importable(name, key)
        known = _registered_names(scoped)
    close = suggestions(name, known)
    hint = f' Did you mean {", ".join(map(repr, close))}?' if close else ''
    raise config_error(
        f'{key}: {name!r} is not in the {scoped.scope}::{scoped.name} registry (nor its parents), '
        f'and is not an importable dotted name.{hint} Register it, import its module through '
        "custom_imports=dict(imports=[...]), or check default_scope.", KeyError)


def suggestions(name: str, known: Iterable[str], n: int = 3) -> List[str]:
    """The known names closest to ``name``, case ignored (``Adamw`` -> ``AdamW`` first)."""
    by_lower: Dict[str, str] = {}
    for candidate in known:
        by_lower.setdefault(candidate.lower(), candidate)
    return [by_lower[match] for match in difflib.get_close_matches(name.lower(), list(by_lower), n=n)]


def unexpected_arguments(cfg: Mapping[str, Any], cls: Any, key: str, filled: Iterable[str] = ()) -> None:
    """Refuse, naming ``key.<argument>`` and the valid names, a config entry's argument ``cls`` does not take.

    Only where the signature says so: a class whose ``__init__`` takes ``**kwargs`` passes its
    arguments on, and what it accepts is not known here. ``filled`` are the arguments the builder
    gives itself (an optimizer's ``params``) or consumes (``_scope_``)."""
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # a builtin or an object without a signature: nothing to say
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    valid = [name for name, p in parameters.items() if p.kind not in (inspect.Parameter.VAR_POSITIONAL,)]
    ignored = {'type', '_scope_', *filled}
    for name in cfg:
        if name not in valid and name not in ignored:
            close = suggestions(name, [*(v for v in valid if v not in filled), 'type'])  # not what it is given
            hint = f'; did you mean {", ".join(map(repr, close))}?' if close else ''
            raise config_error(f'{key}.{name}: {type_name(cls)} takes no argument {name!r} (it takes '
                               f'{", ".join(v for v in valid if v not in filled) or "none"}){hint}', TypeError)


@contextmanager
def config_key(key: str, cfg: Any = None) -> Iterator[None]:
    """Attach ``key`` to errors raised while building that config entry (``cfg``, where given).

    A file that does not exist (a dataset's ``ann_file``, a ``data_root``) is one :class:`ConfigError`, also a
    ``FileNotFoundError``, naming the key in ``cfg`` that leads to it and the path: the config is what to fix."""
    try:
        yield
    except ConfigError:
        raise
    except FileNotFoundError as err:
        raise missing_file_error(err, key, cfg) from err
    except KeyError as err:
        message = err.args[0] if err.args else ''
        if isinstance(message, str) and 'is not in the' in message and 'registry' in message:
            raise config_error(f'{key}: {message}', KeyError) from err
        _note(err, key)
        raise
    except Exception as err:
        _note(err, key)
        raise


def missing_file_error(err: FileNotFoundError, key: str, cfg: Any = None) -> ConfigError:
    """``<key>.ann_file: file not found: '<path>'``: the key of ``cfg`` whose value names the missing file (or
    the directory it is in: ``data_root``, ``data_prefix.img``), else ``key``; a ``data_root`` that does not
    exist is named after it."""
    missing = err.filename if isinstance(err.filename, str) else None
    leaves = list(_string_leaves(cfg, key))
    if missing is None:  # raised with a message only (``FileNotFoundError(f'{path} does not exist')``)
        named = [(path, value) for path, value in leaves if _looks_like_path(value) and value in str(err)]
        missing = max(named, key=lambda item: len(item[1]))[1] if named else None
    if missing is None:
        return config_error(f'{key}: {err}', FileNotFoundError)
    target = os.path.normpath(missing)
    names_file = [(path, value) for path, value in leaves if _path_ends_with(target, value)]
    holds_file = [(path, value) for path, value in leaves
                  if value and target.startswith(os.path.normpath(value).rstrip(os.sep) + os.sep)]
    culprit = max(names_file, key=lambda item: len(item[1]))[0] if names_file else key
    if names_file:  # the folders of the same entry (its data_root), not a sibling dataset's
        holds_file = [(path, value) for path, value in holds_file if culprit.startswith(path.rpartition('.')[0] + '.')]
    absent = [f' ({path}={value!r} does not exist)' for path, value in holds_file
              if path != culprit and not os.path.exists(value)]
    return config_error(f'{culprit}: file not found: {missing!r}{absent[0] if absent else ""}', FileNotFoundError)


def _looks_like_path(value: str) -> bool:
    return len(value) > 2 and (os.sep in value or '.' in value)


def _path_ends_with(path: str, value: str) -> bool:
    if not value or value in ('.', os.sep):
        return False
    tail = os.path.normpath(value)
    return path == tail or path.endswith(os.sep + tail.lstrip(os.sep))


def _string_leaves(cfg: Any, key: str) -> Iterator[Tuple[str, str]]:
    """``(key path, value)`` of every string in a config entry (dicts and lists walked)."""
    if isinstance(cfg, str):
        yield key, cfg
    elif isinstance(cfg, Mapping):
        for name, value in cfg.items():
            yield from _string_leaves(value, f'{key}.{name}')
    elif isinstance(cfg, (list, tuple)):
        for index, value in enumerate(cfg):
            yield from _string_leaves(value, f'{key}[{index}]')


def type_name(obj_type: Any) -> str:
    """A config ``type``'s short name: ``'a.b.Name'``, ``'Name'`` and the class ``Name`` all give ``'Name'``."""
    if isinstance(obj_type, str):
        return obj_type.rsplit('.', 1)[-1]
    return getattr(obj_type, '__name__', repr(obj_type))


def resolve_type(obj_type: Any, key: str = 'type') -> Any:
    """The object a dotted ``type`` string names (``None`` where no module has that path: a registry
    name such as ``'mmdet.RetinaNet'``); others as given. A module that exists and fails to import is
    a ``ConfigError`` chained to its error."""
    if isinstance(obj_type, str) and '.' in obj_type:
        found = get_object_from_string(obj_type)  # mmengine's lookup, which returns None on any ImportError
        if found is None:
            check_importable(obj_type, key)
        return found
    return obj_type


def check_importable(dotted: str, key: str) -> None:
    """Raise, naming ``key`` and chained to the cause, the error a module on ``dotted``'s path raises
    while importing; nothing where the path simply names no module (mmengine then says "not found").
    A ``KeyError``, as mmengine's own "not in the registry" for such a ``type`` is one."""
    parts = dotted.split('.')
    for end in range(1, len(parts)):
        module = '.'.join(parts[:end])
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name == module:
                return  # no such module: not an import path
            raise config_error(f'{key}: {dotted!r}: importing {module} failed: {err}', KeyError) from err
        except Exception as err:  # any error of the user's module, re-raised with its cause
            raise config_error(f'{key}: {dotted!r}: importing {module} failed: {type(err).__name__}: {err}',
                               KeyError) from err


def names_subclass_of(entry: Any, base: type, key: str = 'entry') -> bool:
    """Whether a config entry (at ``key``) is, or names by its ``type`` (class or dotted name), a ``base``."""
    if isinstance(entry, base):
        return True
    if isinstance(entry, Mapping) and 'type' in entry:
        obj_type = resolve_type(entry['type'], f'{key}.type')
        return inspect.isclass(obj_type) and issubclass(obj_type, base)
    return False


def _note(err: BaseException, key: str) -> None:
    if hasattr(err, 'add_note'):
        err.add_note(f'(while building config key {key!r})')


def _registered_names(registry: Registry) -> list:
    names: list = []
    node: Optional[Registry] = registry
    while node is not None:
        names.extend(node.module_dict)
        node = node.parent
    return names
