"""mmengine's AMP settings as Lightning precision.

``AmpOptimWrapper`` scales losses and casts forward passes itself; under Lightning the
precision plugin does both, so the wrapper is built as a plain ``OptimWrapper`` (same
accumulation and clipping) and its ``dtype``/``loss_scale`` become a ``MixedPrecision``
plugin with an equivalent ``GradScaler``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision

from .config import ConfigError

AMP_WRAPPER = 'AmpOptimWrapper'
#: Keys of AmpOptimWrapper that the precision plugin takes over.
AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')
#: AmpOptimWrapper ``dtype`` -> Lightning precision flag.
AMP_DTYPES: Dict[Any, str] = {
    None: '16-mixed', 'float16': '16-mixed', 'half': '16-mixed', torch.float16: '16-mixed',
    'bfloat16': 'bf16-mixed', torch.bfloat16: 'bf16-mixed',
}


class StaticGradScaler(torch.amp.GradScaler):
    """A GradScaler that keeps a fixed scale, as ``AmpOptimWrapper(loss_scale=<float>)`` does."""

    def __init__(self, scale: float, device: str = 'cuda') -> None:
        super().__init__(device=device, init_scale=scale)
        self.static_scale = float(scale)

    def update(self, new_scale: Optional[Union[float, torch.Tensor]] = None) -> None:
        super().update(self.static_scale if new_scale is None else new_scale)


def amp_settings(optim_wrapper_cfg: Any) -> List[Tuple[str, Mapping[str, Any]]]:
    """Every ``AmpOptimWrapper`` entry in an optim_wrapper config, as (key path, entry)."""
    found = []
    if not isinstance(optim_wrapper_cfg, Mapping):
        return found
    if _type_name(optim_wrapper_cfg.get('type')) == AMP_WRAPPER:
        found.append(('optim_wrapper', optim_wrapper_cfg))
    if 'optimizer' not in optim_wrapper_cfg:  # several optimizers, one entry each
        for name, entry in optim_wrapper_cfg.items():
            if isinstance(entry, Mapping) and _type_name(entry.get('type')) == AMP_WRAPPER:
                found.append((f'optim_wrapper.{name}', entry))
    return found


def strip_amp(optim_wrapper_cfg: Any) -> Any:
    """The config with each AmpOptimWrapper turned into an OptimWrapper (see module doc)."""
    if not amp_settings(optim_wrapper_cfg):
        return optim_wrapper_cfg
    cfg = dict(optim_wrapper_cfg)
    if _type_name(cfg.get('type')) == AMP_WRAPPER:
        cfg = _as_plain(cfg)
    if 'optimizer' not in cfg:
        cfg = {name: _as_plain(entry) if isinstance(entry, Mapping)
               and _type_name(entry.get('type')) == AMP_WRAPPER else entry
               for name, entry in cfg.items()}
    return cfg


def precision_plugin(optim_wrapper_cfg: Any, accelerator: str) -> Optional[Precision]:
    """The Lightning precision plugin for ``optim_wrapper``; ``None`` for full precision."""
    entries = amp_settings(optim_wrapper_cfg)
    if not entries:
        return None
    flags = {AMP_DTYPES.get(entry.get('dtype'), 'unknown') for _, entry in entries}
    for key, entry in entries:
        if entry.get('dtype') not in AMP_DTYPES:
            raise ConfigError(f'{key}.dtype: expected float16 or bfloat16, got {entry.get("dtype")!r}')
    if len(flags) > 1:
        raise ConfigError(f'{entries[0][0]}: all AmpOptimWrapper entries must use one dtype, got {sorted(flags)}')
    flag = flags.pop()
    device = 'cuda' if accelerator in ('gpu', 'cuda') else accelerator
    if flag == '16-mixed' and device == 'cpu':
        raise ConfigError(f'{entries[0][0]}: AmpOptimWrapper with float16 needs a GPU; on CPU use '
                          "dtype='bfloat16' (bf16-mixed precision)")
    scaler = None
    if flag == '16-mixed':
        scaler = _grad_scaler(entries[0][0], entries[0][1].get('loss_scale', 'dynamic'), device)
    return MixedPrecision(flag, device=device, scaler=scaler)


def _grad_scaler(key: str, loss_scale: Any, device: str) -> torch.amp.GradScaler:
    if loss_scale == 'dynamic':
        return torch.amp.GradScaler(device=device)
    if isinstance(loss_scale, (int, float)) and not isinstance(loss_scale, bool):
        return StaticGradScaler(float(loss_scale), device=device)
    if isinstance(loss_scale, Mapping):
        return torch.amp.GradScaler(device=device, **loss_scale)
    raise ConfigError(f"{key}.loss_scale: expected 'dynamic', a number or a dict of GradScaler "
                      f'arguments, got {loss_scale!r}')


def _as_plain(entry: Mapping[str, Any]) -> dict:
    plain = {k: v for k, v in entry.items() if k not in AMP_ONLY_KEYS}
    plain['type'] = 'OptimWrapper'
    return plain


def _type_name(obj_type: Any) -> Optional[str]:
    if obj_type is None or isinstance(obj_type, str):
        return obj_type.rsplit('.', 1)[-1] if isinstance(obj_type, str) else None
    return getattr(obj_type, '__name__', None)
