"""Checkpoint conversion, both ways: mmengine ``.pth`` files and Lightning ``.ckpt`` files.

Both formats of a run carry the same state (see :mod:`mm_lightning.state.checkpoint`), in
different places: mmengine keeps bare model keys and its own ``optimizer``,
``param_schedulers`` and ``message_hub`` entries; Lightning keeps ``model.``-prefixed keys,
a list of optimizer states, the AMP scaler with its precision plugin and the data position
with the datamodule. A converted ``.ckpt`` resumes with ``Trainer.fit(ckpt_path=...)``; a
converted ``.pth`` with ``resume=`` and loads with mmengine's ``load_checkpoint``.

Every entry point also reads the other format, converted in memory by the same rules: the
mmengine side (``load_from``, ``resume``, ``runner.load_checkpoint``) through
:func:`as_mmengine`, a Trainer's ``ckpt_path`` through :class:`EitherFormatCheckpointIO`.
The format is recognised by content, not by the file's name.
"""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from typing import Any, Callable, Dict

import lightning.pytorch as pl
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from typing_extensions import override

from mm_lightning.config.loading import ConfigError
from mm_lightning.state import deepspeed_state, serialization, sharded_state

__all__ = ['STATE_KEY', 'MODULE_PREFIX', 'HOOK_KEYS', 'LIGHTNING_VERSION_KEY', 'RESUME_KEYS', 'PRECISION_KEYS',
           'DATAMODULE_KEY', 'MMENGINE_KEYS', 'is_lightning_checkpoint', 'bare_keys', 'own_rank_state',
           'lightning_from_mmengine', 'mmengine_from_lightning', 'as_mmengine', 'as_lightning', 'check_resumable',
           'EitherFormatCheckpointIO', 'convert']

#: Where mm_lightning's own state sits in a checkpoint of either format.
STATE_KEY = 'mm_lightning'
#: The ConfigModule attribute holding the mmengine model (Lightning state keys start with it).
MODULE_PREFIX = 'model.'
#: Where mm_lightning's state lists the entries hooks added to a Lightning checkpoint (EMAHook's
#: ``ema_state_dict``...), which travel at its top level as in an mmengine file.
HOOK_KEYS = 'hook_keys'
#: What every Lightning checkpoint has and no mmengine one does.
LIGHTNING_VERSION_KEY = 'pytorch-lightning_version'
#: What a checkpoint needs to continue a run (one with weights only can be given as load_from).
RESUME_KEYS = ('meta', 'message_hub')
#: Where Lightning's precision plugins keep the AMP scaler's state.
PRECISION_KEYS = ('MixedPrecision', 'FSDPPrecision')
DATAMODULE_KEY = 'ConfigDataModule'
#: The entries of an mmengine-format file that are not a hook's (EMAHook's ``ema_state_dict``, say).
MMENGINE_KEYS = ('meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers', STATE_KEY)


def is_lightning_checkpoint(checkpoint: Dict[str, Any]) -> bool:
    return LIGHTNING_VERSION_KEY in checkpoint


def bare_keys(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """The mmengine model's keys of a ConfigModule's state dict (``model.`` taken off)."""
    return OrderedDict((key[len(MODULE_PREFIX):], value) for key, value in state_dict.items()
                       if key.startswith(MODULE_PREFIX))


def own_rank_state(state: Dict[str, Any], rank: int) -> Dict[str, Any]:
    """This rank's part of a checkpoint's state (files of one process before per-rank state: the top level)."""
    ranks = state.get('ranks')
    if not ranks:
        return {key: state[key] for key in ('rng', 'gradients', 'data') if key in state}
    return ranks[rank] if rank < len(ranks) else ranks[0]


def lightning_from_mmengine(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """A Lightning checkpoint with the state of an mmengine-format one."""
    meta = checkpoint.get('meta') or {}
    ours = dict(checkpoint.get(STATE_KEY) or {})
    loop = ours.get('loop') or dict(epoch=meta.get('epoch', 0), iter=meta.get('iter', 0), from_meta=True)
    optimizer = dict(checkpoint.get('optimizer') or ours.get('optimizer') or {})
    scaler = optimizer.pop('loss_scaler', None)
    names = [name for name, value in optimizer.items() if isinstance(value, dict) and 'param_groups' in value]
    optimizer_states = [optimizer[name] for name in names] if names else ([optimizer] if optimizer else [])
    # mm_lightning's own state travels as it is (random state, gradients of an open window, ...).
    state = {key: value for key, value in ours.items() if key not in ('data', 'optimizer')}
    state.update(loop=loop, message_hub=checkpoint.get('message_hub', {}), meta=meta, optimizer_names=names or None)
    if checkpoint.get('param_schedulers') is not None:
        state['param_schedulers'] = checkpoint['param_schedulers']
    converted: Dict[str, Any] = {
        'epoch': loop['epoch'], 'global_step': loop.get('optimizer_steps', loop['iter']),
        LIGHTNING_VERSION_KEY: pl.__version__,
        'state_dict': OrderedDict((MODULE_PREFIX + key, value) for key, value in checkpoint['state_dict'].items()),
        'callbacks': {}, 'optimizer_states': optimizer_states, 'lr_schedulers': [],
        STATE_KEY: state,
    }
    state[HOOK_KEYS] = [key for key in checkpoint if key not in MMENGINE_KEYS]
    converted.update((key, checkpoint[key]) for key in state[HOOK_KEYS])
    if scaler is not None:
        converted['MixedPrecision'] = scaler
    data = own_rank_state(ours, 0).get('data')  # Lightning's datamodule entry: rank 0's, as Lightning saves it
    if data is not None:
        converted[DATAMODULE_KEY] = data
    return converted


def mmengine_from_lightning(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """An mmengine-format checkpoint with the state of a Lightning one written from a ConfigModule."""
    if STATE_KEY not in checkpoint:
        raise ConfigError('convert-checkpoint: this Lightning checkpoint has no mm_lightning state (it was not '
                          'written from a ConfigModule)')
    state = dict(checkpoint[STATE_KEY])
    model_state = bare_keys(checkpoint['state_dict'])
    names = state.pop('optimizer_names', None)
    optimizer_states = checkpoint.get('optimizer_states') or []
    optimizer: Dict[str, Any] = dict(zip(names, optimizer_states)) if names else \
        (dict(optimizer_states[0]) if optimizer_states else {})
    for key in PRECISION_KEYS:
        if checkpoint.get(key):
            optimizer['loss_scaler'] = checkpoint[key]
    meta = dict(state.pop('meta', {}))
    meta.update(epoch=state['loop']['epoch'], iter=state['loop']['iter'])
    converted: Dict[str, Any] = {'meta': meta, 'state_dict': model_state,
                                 'message_hub': state.pop('message_hub', {})}
    converted.update((key, checkpoint[key]) for key in state.pop(HOOK_KEYS, []) if key in checkpoint)
    if optimizer:
        converted['optimizer'] = optimizer
    if 'param_schedulers' in state:
        converted['param_schedulers'] = state.pop('param_schedulers')
    if 'ranks' not in state:  # written before each rank's part was kept
        state['data'] = checkpoint.get(DATAMODULE_KEY)
    converted[STATE_KEY] = state
    return converted


def as_mmengine(checkpoint: Any, filename: str) -> Dict[str, Any]:
    """A checkpoint of either format, as what reads mmengine's (``load_from``, ``resume``) reads it.

    A Lightning checkpoint without mm_lightning's state (not written from a ConfigModule while
    fitting) gives its model's weights only.
    """
    checkpoint = _as_dict(checkpoint, filename)
    if not is_lightning_checkpoint(checkpoint):
        return checkpoint
    if STATE_KEY not in checkpoint:
        return {'state_dict': bare_keys(checkpoint.get('state_dict') or {})}
    return mmengine_from_lightning(checkpoint)


def as_lightning(checkpoint: Any, filename: str, resuming: bool) -> Dict[str, Any]:
    """A checkpoint of either format, in the form Lightning's ``ckpt_path`` loading expects (the safe form,
    as :func:`convert` writes it); ``resuming``: for ``Trainer.fit``, which needs a run to continue."""
    checkpoint = _as_dict(checkpoint, filename)
    if is_lightning_checkpoint(checkpoint):
        return checkpoint
    if 'state_dict' not in checkpoint:
        raise ConfigError(f'ckpt_path: {filename} is neither a Lightning nor an mmengine checkpoint '
                          f'(keys: {sorted(map(str, checkpoint))[:8]})')
    if resuming:
        check_resumable(checkpoint, filename, 'ckpt_path')
    return serialization.to_safe(lightning_from_mmengine(serialization.from_safe(checkpoint)))


def check_resumable(checkpoint: Dict[str, Any], filename: str, key: str) -> None:
    """Refuse by name to resume from an mmengine-format checkpoint that holds weights only."""
    missing = [name for name in RESUME_KEYS if name not in checkpoint]
    if missing:
        raise ConfigError(f'{key}: {filename} holds no {" or ".join(missing)}: it has weights but no run to '
                          'continue; give it as load_from to start from its weights')


def _as_dict(checkpoint: Any, filename: str) -> Dict[str, Any]:
    if not isinstance(checkpoint, dict):
        raise ConfigError(f'{filename}: not a checkpoint (it holds a {type(checkpoint).__name__}, not a dict)')
    return checkpoint


class EitherFormatCheckpointIO(CheckpointIO):
    """A Trainer's checkpoint IO that also reads mmengine-format files (``ckpt_path='epoch_4.pth'``).

    Lightning reads ``ckpt_path`` through its strategy's checkpoint IO and then migrates the
    dict, which needs Lightning's version key; an mmengine-format file is converted here, right
    after loading. Saving, removing and loading itself stay the wrapped IO's.
    """

    def __init__(self, io: CheckpointIO, trainer: pl.Trainer) -> None:
        super().__init__()
        self.io = io
        self.trainer = trainer  # whose stage says whether the file must hold a run to continue

    @override
    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Any = None) -> None:
        self.io.save_checkpoint(checkpoint, path, storage_options=storage_options)

    @override
    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        try:
            checkpoint = self.io.load_checkpoint(path, *args, **kwargs)
        except pickle.UnpicklingError as err:
            raise serialization.unsafe_checkpoint_error(str(path)) from err
        return as_lightning(checkpoint, str(path), resuming=self.trainer.state.fn == TrainerFn.FITTING)

    @override
    def remove_checkpoint(self, path: Any) -> None:
        self.io.remove_checkpoint(path)

    @override
    def teardown(self) -> None:
        self.io.teardown()


def convert(src: str, dst: str) -> str:
    """Convert ``src`` for the format ``dst`` asks for; returns what was done.

    ``.ckpt`` -> ``.pth``: Lightning to mmengine. ``.pth`` -> ``.ckpt``: mmengine to Lightning.
    ``.pth`` -> ``.pth``: an mmengine file rewritten so it loads with ``weights_only=True``.
    A sharded directory (FSDP ``state_dict_cfg='local'``) -> one full file of either format.
    A DeepSpeed directory -> one file of either format, with the weights DeepSpeed gathers in fp32 and
    no optimizer state (it stays in the directory's ZeRO partitions).
    The source is unpickled in full: convert only files you trust.
    """
    sharded = sharded_state.is_sharded_checkpoint(src)
    deepspeed = deepspeed_state.is_deepspeed_checkpoint(src)
    if not (sharded or deepspeed or os.path.isfile(src)):
        raise ConfigError(f'convert-checkpoint: file not found: {src!r}')
    read = serialization.read_trusted
    if deepspeed:
        checkpoint = _from_deepspeed(src, read)
    else:
        checkpoint = sharded_state.read_full(src, read) if sharded else read(src)
    to_lightning = dst.endswith('.ckpt')
    if is_lightning_checkpoint(checkpoint):
        if to_lightning:
            raise ConfigError(f'convert-checkpoint: {src} is already a Lightning checkpoint; name DST *.pth')
        serialization.write(mmengine_from_lightning(checkpoint), dst)
        return 'Lightning checkpoint -> mmengine checkpoint'
    if 'state_dict' not in checkpoint:
        raise ConfigError(f'convert-checkpoint: {src} is neither an mmengine nor a Lightning checkpoint '
                          f'(keys: {sorted(checkpoint)[:8]})')
    if to_lightning:
        serialization.write_atomically(serialization.to_safe(lightning_from_mmengine(checkpoint)), dst)
        return 'mmengine checkpoint -> Lightning checkpoint'
    serialization.write(checkpoint, dst)
    if deepspeed:
        return 'DeepSpeed checkpoint -> one mmengine checkpoint (fp32 weights, no optimizer state)'
    if sharded:
        return 'sharded checkpoint -> one full mmengine checkpoint'
    return 'mmengine checkpoint -> mmengine checkpoint loadable with weights_only=True'


def _from_deepspeed(src: str, read: Callable[[str], Dict[str, Any]]) -> Dict[str, Any]:
    """A DeepSpeed directory as an mmengine checkpoint: its client state, with the fp32 weights under bare keys
    (the engine's carry the ConfigModule's ``model.``)."""
    checkpoint = deepspeed_state.read_client_state(src, read)
    checkpoint['state_dict'] = bare_keys(deepspeed_state.fp32_weights(src))
    checkpoint.pop('optimizer', None)  # {ENGINE_KEY: True}: the state is in the directory's partitions
    return checkpoint
