"""Building config entries through mmengine's registries, with errors that name the key.

mmengine's own error for an unknown ``type`` names the registry but not where in the
config the entry sits; a config has many ``type`` keys, so we add the key path.
"""
from __future__ import annotations

import difflib
import inspect
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Optional

from mmengine.registry import Registry
from mmengine.utils import get_object_from_string

from .config import ConfigError, config_error


def build(registry: Registry, cfg: Any, key: str, default_args: Optional[dict] = None) -> Any:
    """Build ``cfg`` (a dict with ``type``) from ``registry``; errors name ``key``."""
    if not isinstance(cfg, Mapping) or 'type' not in cfg:
        raise config_error(f"{key}: expected a dict with a 'type' key, got {cfg!r}",
                           KeyError if isinstance(cfg, Mapping) else TypeError)
    obj_type = cfg['type']
    if isinstance(obj_type, str):
        check_type_known(registry, obj_type, f'{key}.type', scope=cfg.get('_scope_'))
    with config_key(key):
        return registry.build(cfg, default_args=default_args)


def check_type_known(registry: Registry, name: str, key: str, scope: Optional[str] = None) -> None:
    """Raise a ``ConfigError`` naming ``key`` and the registry when ``name`` is not registered."""
    with registry.switch_scope_and_registry(scope) as scoped:
        try:
            found = scoped.get(name)
        except RuntimeError:  # mmengine's "Failed to get" for a dotted name whose object cannot be imported
            found = None
        if found is not None:
            return
        known = _registered_names(scoped)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f' Did you mean {", ".join(map(repr, close))}?' if close else ''
    raise config_error(
        f'{key}: {name!r} is not in the {scoped.scope}::{scoped.name} registry (nor its parents), '
        f'and is not an importable dotted name.{hint} Register it, import its module through '
        "custom_imports=dict(imports=[...]), or check default_scope.", KeyError)


@contextmanager
def config_key(key: str) -> Iterator[None]:
    """Attach ``key`` to errors raised while building that config entry."""
    try:
        yield
    except ConfigError:
        raise
    except KeyError as err:
        message = err.args[0] if err.args else ''
        if isinstance(message, str) and 'is not in the' in message and 'registry' in message:
            raise config_error(f'{key}: {message}', KeyError) from err
        _note(err, key)
        raise
    except Exception as err:
        _note(err, key)
        raise


def type_name(obj_type: Any) -> str:
    """A config ``type``'s short name: ``'a.b.Name'``, ``'Name'`` and the class ``Name`` all give ``'Name'``."""
    if isinstance(obj_type, str):
        return obj_type.rsplit('.', 1)[-1]
    return getattr(obj_type, '__name__', repr(obj_type))


def resolve_type(obj_type: Any) -> Any:
    """The object a dotted ``type`` string names (``None`` if it cannot be imported); others as given."""
    if isinstance(obj_type, str) and '.' in obj_type:
        try:
            return get_object_from_string(obj_type)
        except (ImportError, AttributeError):
            return None
    return obj_type


def names_subclass_of(entry: Any, base: type) -> bool:
    """Whether a config entry is, or names by its ``type`` (class or dotted name), a ``base``."""
    if isinstance(entry, base):
        return True
    if isinstance(entry, Mapping) and 'type' in entry:
        obj_type = resolve_type(entry['type'])
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
