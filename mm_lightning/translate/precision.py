"""mmengine's precision settings as Lightning precision.

``AmpOptimWrapper`` scales losses and casts forward passes itself; under Lightning the
precision plugin does both, so the wrapper is built as a plain ``OptimWrapper`` (same
accumulation and clipping) and its ``dtype``/``loss_scale`` become a precision plugin
with an equivalent ``GradScaler`` (``MixedPrecision``, or ``FSDPPrecision`` under FSDP).
Under DeepSpeed the DeepSpeed config's ``fp16``/``bf16`` sections set the precision.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Literal, Mapping, Optional, Tuple, Union

import torch
from lightning.pytorch.plugins.precision import FSDPPrecision, MixedPrecision
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

from mm_lightning.config.loading import ConfigError
from mm_lightning.config.registry import type_name

if TYPE_CHECKING:  # at run time imported where a sharded scaler is made, as FSDP runs need it
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

__all__ = ['AMP_WRAPPER', 'AMP_ONLY_KEYS', 'AMP_DTYPES', 'StaticGradScaler', 'amp_settings', 'strip_amp', 'amp_flag',
           'precision_settings']

AMP_WRAPPER = 'AmpOptimWrapper'
#: Keys of AmpOptimWrapper that the precision plugin takes over.
AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')
#: AmpOptimWrapper ``dtype`` -> Lightning precision flag.
MixedFlag = Literal['16-mixed', 'bf16-mixed']
AMP_DTYPES: Dict[Any, MixedFlag] = {
    None: '16-mixed', 'float16': '16-mixed', 'half': '16-mixed', torch.float16: '16-mixed',
    'bfloat16': 'bf16-mixed', torch.bfloat16: 'bf16-mixed',
}


class _StaticScale:
    """Keeps the initial scale, as ``AmpOptimWrapper(loss_scale=<number>)`` does."""

    static_scale: float

    def update(self, new_scale: Optional[Union[float, torch.Tensor]] = None) -> None:
        # the checker sees object as this mixin's base; at run time super() is the scaler it is mixed into
        super().update(self.static_scale if new_scale is None else new_scale)  # type: ignore[misc]


class StaticGradScaler(_StaticScale, torch.amp.GradScaler):
    def __init__(self, scale: float, device: str = 'cuda') -> None:
        super().__init__(device=device, init_scale=scale)
        self.static_scale = float(scale)


def _sharded_scaler(loss_scale: Any, device: str) -> ShardedGradScaler:
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    class StaticShardedGradScaler(_StaticScale, ShardedGradScaler):
        pass

    if isinstance(loss_scale, (int, float)) and not isinstance(loss_scale, bool):
        scaler = StaticShardedGradScaler(device=device, init_scale=float(loss_scale))
        scaler.static_scale = float(loss_scale)
        return scaler
    return ShardedGradScaler(device=device, **(dict(loss_scale) if isinstance(loss_scale, Mapping) else {}))


def amp_settings(optim_wrapper_cfg: Any) -> List[Tuple[str, Mapping[str, Any]]]:
    """Every ``AmpOptimWrapper`` entry in an optim_wrapper config, as (key path, entry)."""
    found: List[Tuple[str, Mapping[str, Any]]] = []
    if not isinstance(optim_wrapper_cfg, Mapping):
        return found
    if type_name(optim_wrapper_cfg.get('type')) == AMP_WRAPPER:
        found.append(('optim_wrapper', optim_wrapper_cfg))
    if 'optimizer' not in optim_wrapper_cfg:  # several optimizers, one entry each
        for name, entry in optim_wrapper_cfg.items():
            if isinstance(entry, Mapping) and type_name(entry.get('type')) == AMP_WRAPPER:
                found.append((f'optim_wrapper.{name}', entry))
    return found


def strip_amp(optim_wrapper_cfg: Any) -> Any:
    """The config with each AmpOptimWrapper turned into an OptimWrapper (see module doc)."""
    if not amp_settings(optim_wrapper_cfg):
        return optim_wrapper_cfg
    cfg = dict(optim_wrapper_cfg)
    if type_name(cfg.get('type')) == AMP_WRAPPER:
        cfg = _as_plain(cfg)
    if 'optimizer' not in cfg:
        cfg = {name: _as_plain(entry) if isinstance(entry, Mapping)
               and type_name(entry.get('type')) == AMP_WRAPPER else entry
               for name, entry in cfg.items()}
    return cfg


def amp_flag(optim_wrapper_cfg: Any) -> Optional[Tuple[str, MixedFlag, Any]]:
    """(key, Lightning precision flag, loss_scale) of the config's AMP, or None."""
    entries = amp_settings(optim_wrapper_cfg)
    if not entries:
        return None
    for key, entry in entries:
        if entry.get('dtype') not in AMP_DTYPES:
            raise ConfigError(f'{key}.dtype: expected float16 or bfloat16, got {entry.get("dtype")!r}')
    flags = {AMP_DTYPES[entry.get('dtype')] for _, entry in entries}
    if len(flags) > 1:
        raise ConfigError(f'{entries[0][0]}: all AmpOptimWrapper entries must use one dtype, got {sorted(flags)}')
    key, entry = entries[0]
    return key, flags.pop(), entry.get('loss_scale', 'dynamic')


def precision_settings(optim_wrapper_cfg: Any, strategy: Any, accelerator: str) -> Dict[str, Any]:
    """Trainer arguments (``precision`` or ``plugins``) for the config's precision."""
    amp = amp_flag(optim_wrapper_cfg)
    if _is_deepspeed(strategy):
        if amp is not None:
            raise ConfigError(f'{amp[0]}: with DeepSpeedStrategy use DeepSpeedOptimWrapper and set fp16/bf16 '
                              'in the strategy (its DeepSpeed config), as mmengine requires')
        from mm_lightning.translate.strategies import deepspeed_precision
        flag = deepspeed_precision(strategy.config)
        return {'precision': flag} if flag else {}
    if amp is None:
        return {}
    key, flag, loss_scale = amp
    device = 'cuda' if accelerator == 'gpu' else accelerator
    if flag == '16-mixed' and device == 'cpu':
        raise ConfigError(f"{key}: AmpOptimWrapper with float16 needs a GPU; on CPU use dtype='bfloat16' "
                          '(bf16-mixed precision)')
    if isinstance(strategy, FSDPStrategy):
        plugin = FSDPPrecision(flag)
        if flag == '16-mixed':
            # Set after construction: FSDPPrecision(scaler=...) refuses any scaler (Lightning 2.6 compares
            # the precision before storing it) and would drop it.
            plugin.scaler = _sharded_scaler(loss_scale, device)
        return {'plugins': [plugin]}
    scaler = _grad_scaler(key, loss_scale, device) if flag == '16-mixed' else None
    return {'plugins': [MixedPrecision(flag, device=device, scaler=scaler)]}


def _is_deepspeed(strategy: Any) -> bool:
    return isinstance(strategy, DeepSpeedStrategy)  # Lightning's, or the one that also runs on CPU


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

