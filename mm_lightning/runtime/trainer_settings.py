"""A user's Trainer settings, read as the config keys that mean the same.

mmengine builds the training loop, the parameter schedulers and ``CheckpointHook`` from
``train_cfg``, and accumulates and clips gradients in the optim wrapper. A Trainer's own
length, validation cadence, accumulation or clipping is therefore moved into the config when
fitting starts, before any of those is built: the run is then exactly the run of the same
value given through ``--cfg-options`` (schedulers ending with it, the last epoch validating and
saving). Lightning's own copy of a moved setting is put back to the neutral value
``trainer_kwargs`` gives, since the hook bridge and the optim wrapper carry it out; nothing
else of the Trainer is changed. A setting with no mmengine meaning for the config's loop is
refused, naming both values.

How each resolves (:data:`TRANSLATIONS`; an epoch-based loop | an iteration-based one):

- ``max_epochs``: ``train_cfg.max_epochs`` | only 1 (one Lightning epoch holds every iteration).
- ``max_steps``: refused (mmengine's epoch loop has no iteration limit) | ``train_cfg.max_iters``.
- ``check_val_every_n_epoch``: ``train_cfg.val_interval`` | only 1 or None.
- ``val_check_interval``: only 1.0 (validation at epoch ends) | ``train_cfg.val_interval``: an int as it
  is, a fraction of ``max_iters`` as Lightning takes a fraction of its epoch.
- ``accumulate_grad_batches``: ``optim_wrapper.accumulative_counts``.
- ``gradient_clip_val``: ``optim_wrapper.clip_grad``: ``max_norm`` (``gradient_clip_algorithm='norm'``,
  other ``clip_grad`` keys kept) or ``dict(type='value', clip_value=...)``.

A setting left at Lightning's default (``max_epochs=None`` reads 1000, or -1 with ``max_time``)
leaves the config's value, and Lightning's ``max_epochs`` becomes the config's length, so its
progress bars count the config's epochs.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

import lightning.pytorch as pl
from mmengine.runner.base_loop import BaseLoop

from mm_lightning.config.loading import ConfigError
from mm_lightning.runtime.fidelity import TRAINER_SETTINGS
from mm_lightning.runtime.loops import train_loop_kind

if TYPE_CHECKING:  # the module's protocol; the module itself imports this one
    from mm_lightning.runtime.contract import RunModule

__all__ = ['LOOP_DEFAULTS', 'UNSET', 'NEUTRAL', 'Translation', 'TRANSLATIONS', 'TrainerSettings', 'read_settings',
           'config_overrides', 'apply_overrides', 'check_built', 'lightning_epochs', 'hand_over',
           'take_trainer_settings']

#: mmengine's loop defaults (by ``by_epoch``) for the keys a Trainer setting can set.
LOOP_DEFAULTS: Dict[bool, Dict[str, Any]] = {True: dict(val_interval=1), False: dict(val_interval=1000)}
#: The Trainer's values that leave the config's own: Lightning's defaults (``max_epochs=None`` reads 1000, or -1).
UNSET: Dict[str, Tuple[Any, ...]] = dict(
    max_epochs=(None, 1000, -1), max_steps=(-1,), check_val_every_n_epoch=(1,), val_check_interval=(1.0,),
    accumulate_grad_batches=(1,), gradient_clip_val=(None, 0, 0.0))
#: Lightning's copy of each moved setting once the config carries it (``trainer_kwargs``' values).
NEUTRAL: Dict[str, Any] = dict(
    max_steps=TRAINER_SETTINGS['max_steps'], check_val_every_n_epoch=TRAINER_SETTINGS['check_val_every_n_epoch'],
    val_check_interval=1.0, accumulate_grad_batches=TRAINER_SETTINGS['accumulate_grad_batches'],
    gradient_clip_val=None)
LENGTH_BY_ITERATION = ("mmengine's EpochBasedTrainLoop has no iteration limit; set max_epochs "
                       '(train_cfg.max_epochs) instead')
EPOCHS_OF_ITERATIONS = ('the iteration-based loop runs as one Lightning epoch holding every iteration; set '
                        'max_steps (train_cfg.max_iters) instead')
WITHIN_EPOCH = ("mmengine's EpochBasedTrainLoop validates at epoch ends only; set check_val_every_n_epoch "
                '(train_cfg.val_interval) instead')
EPOCH_CADENCE = ('the iteration-based loop runs as one Lightning epoch; set val_check_interval '
                 '(train_cfg.val_interval, in iterations) instead')
SEVERAL_WRAPPERS = 'optim_wrapper holds several optim wrappers; set the key in each of them'
BUILT_WRAPPER = 'optim_wrapper is already built; it keeps its own settings'


class Translation(NamedTuple):
    """How a Trainer setting reads for one kind of training loop (what ``explain`` shows)."""

    setting: str
    key: Optional[str]  # the config key the Trainer's value sets; None: only its unset values run
    reads: str  # how the Trainer's value becomes the key's value, or why it has no meaning


#: The Trainer settings a config decides, for epoch-based (True) and iteration-based (False) loops.
TRANSLATIONS: Dict[bool, Tuple[Translation, ...]] = {
    True: (
        Translation('max_epochs', 'train_cfg.max_epochs', 'the same number'),
        Translation('max_steps', None, LENGTH_BY_ITERATION),
        Translation('check_val_every_n_epoch', 'train_cfg.val_interval', 'the same number'),
        Translation('val_check_interval', None, WITHIN_EPOCH),
        Translation('accumulate_grad_batches', 'optim_wrapper.accumulative_counts', 'the same number'),
        Translation('gradient_clip_val', 'optim_wrapper.clip_grad', "max_norm, or clip_value with algorithm 'value'"),
    ),
    False: (
        Translation('max_epochs', None, EPOCHS_OF_ITERATIONS),
        Translation('max_steps', 'train_cfg.max_iters', 'the same number'),
        Translation('check_val_every_n_epoch', None, EPOCH_CADENCE),
        Translation('val_check_interval', 'train_cfg.val_interval', 'an int as it is; a fraction of max_iters'),
        Translation('accumulate_grad_batches', 'optim_wrapper.accumulative_counts', 'the same number'),
        Translation('gradient_clip_val', 'optim_wrapper.clip_grad', "max_norm, or clip_value with algorithm 'value'"),
    ),
}


@dataclass
class TrainerSettings:
    """The Trainer's values of the settings a config decides (``read_settings``)."""

    values: Dict[str, Any]
    clip_algorithm: str = 'norm'
    given: List[str] = field(default_factory=list)  # the settings not at an unset value, in table order


def _is_unset(setting: str, value: Any) -> bool:
    if setting == 'check_val_every_n_epoch' and value is None:
        return False  # None is a choice: validation by val_check_interval steps across epochs
    return any(value is unset or (type(value) is type(unset) and value == unset) for unset in UNSET[setting])


def read_settings(trainer: pl.Trainer) -> TrainerSettings:
    """The settings of ``trainer`` that a config decides, and which of them it sets."""
    values = {setting: getattr(trainer, setting, 'a time interval') for setting in UNSET}
    algorithm = getattr(trainer, 'gradient_clip_algorithm', None)
    return TrainerSettings(values, str(getattr(algorithm, 'value', algorithm) or 'norm'),
                           [setting for setting, value in values.items() if not _is_unset(setting, value)])


def _refusal(setting: str, value: Any, config: str, why: str) -> ConfigError:
    return ConfigError(f'Trainer({setting}={value!r}) has no meaning for {config}: {why}; or leave {setting} unset')


def _loop_values(train: Any, by_epoch: bool) -> Dict[str, Any]:
    if isinstance(train, BaseLoop):
        return dict(max_epochs=train.max_epochs, max_iters=train.max_iters, val_interval=train.val_interval)
    return {**LOOP_DEFAULTS[by_epoch], **train}


def _single_wrapper(optim_wrapper: Any, key: str, setting: str, value: Any) -> None:
    if not isinstance(optim_wrapper, Mapping):
        raise _refusal(setting, value, key, BUILT_WRAPPER)
    if 'optimizer' not in optim_wrapper and 'type' not in optim_wrapper:
        raise _refusal(setting, value, key, SEVERAL_WRAPPERS)


def _clip_grad(configured: Any, value: float, algorithm: str) -> Dict[str, Any]:
    """``clip_grad`` as ``--cfg-options optim_wrapper.clip_grad.max_norm=value`` leaves it (a norm's other keys
    kept), or clipping by value."""
    if algorithm == 'value':
        return dict(type='value', clip_value=value)
    kept = dict(configured) if isinstance(configured, Mapping) and configured.get('type', 'norm') == 'norm' else {}
    return {**kept, 'max_norm': value}


def config_overrides(settings: TrainerSettings, train: Any, optim_wrapper: Any) -> Dict[str, Any]:
    """The config keys (dotted) and values that the Trainer's given settings mean, as ``--cfg-options`` takes them,
    where they change the config.

    Args:
        settings: what :func:`read_settings` read from the Trainer.
        train: ``train_cfg``, or the training loop already built from it.
        optim_wrapper: ``optim_wrapper``'s config, or the built wrapper.

    Raises:
        ConfigError: a given setting has no meaning for the config's loop, naming both values.
    """
    by_epoch = train_loop_kind(train)
    if by_epoch is None or not settings.given:
        return {}  # a loop Lightning cannot drive is refused by name when training starts
    loop = _loop_values(train, by_epoch)
    length_key = 'max_epochs' if by_epoch else 'max_iters'
    config = f'the {"epoch" if by_epoch else "iteration"}-based train_cfg.{length_key}={loop.get(length_key)!r}'
    overrides: Dict[str, Any] = {}
    for translation in TRANSLATIONS[by_epoch]:
        setting = translation.setting
        if setting not in settings.given:
            continue
        value = settings.values[setting]
        if translation.key is None or (setting == 'check_val_every_n_epoch' and value is None):
            if not by_epoch and (setting, value) in (('max_epochs', 1), ('check_val_every_n_epoch', None)):
                continue  # one Lightning epoch: how an iteration-based loop runs
            raise _refusal(setting, value, config, translation.reads if translation.key is None else WITHIN_EPOCH)
        if setting == 'val_check_interval':
            overrides[translation.key] = _iterations(value, overrides.get('train_cfg.max_iters', loop['max_iters']))
        elif setting == 'gradient_clip_val':
            _single_wrapper(optim_wrapper, translation.key, setting, value)
            overrides[translation.key] = _clip_grad(optim_wrapper.get('clip_grad'), value, settings.clip_algorithm)
        elif translation.key.startswith('optim_wrapper.'):
            _single_wrapper(optim_wrapper, translation.key, setting, value)
            overrides[translation.key] = value
        else:
            overrides[translation.key] = value
    current = {**{f'train_cfg.{key}': value for key, value in loop.items()},
               **({f'optim_wrapper.{key}': value for key, value in optim_wrapper.items()}
                  if isinstance(optim_wrapper, Mapping) else {})}
    return {key: value for key, value in overrides.items() if key not in current or current[key] != value}


def _iterations(value: Any, max_iters: int) -> int:
    """``val_check_interval`` in iterations: an int as it is, a fraction of the run as Lightning takes one of its
    epoch (the iteration-based loop's one epoch)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f'Trainer(val_check_interval={value!r}) has no meaning for train_cfg.val_interval: it '
                          'takes iterations (an int) or a fraction of train_cfg.max_iters; or leave it unset')
    return value if isinstance(value, int) else max(1, int(max_iters * value))


def apply_overrides(config: Any, overrides: Mapping[str, Any]) -> Any:
    """A copy of the mapping ``config`` (``train_cfg``, ``optim_wrapper``) with ``overrides`` (keys below it) set."""
    updated = copy.deepcopy(config)
    for key, value in overrides.items():
        updated[key] = copy.deepcopy(value)
    return updated


def check_built(overrides: Mapping[str, Any], train_loop: BaseLoop) -> None:
    """Refuse overrides of a training loop that is already built (a second fit, or a loop given built)."""
    for key, value in overrides.items():
        name = key.rpartition('.')[2]
        if key.startswith('train_cfg.') and getattr(train_loop, name, value) != value:
            raise ConfigError(f'{key}: the training loop is already built with {name}={getattr(train_loop, name)!r}; '
                              f"the Trainer's {value!r} comes too late (set it before the first fit)")


def lightning_epochs(train: Any) -> Optional[int]:
    """Lightning's ``max_epochs`` for a training loop (built, or its config): its epochs, or one epoch holding
    every iteration. None without training, or for a loop Lightning cannot drive (refused when training starts)."""
    by_epoch = train_loop_kind(train)
    if by_epoch is None:
        return None
    if not by_epoch:
        return 1
    return train.max_epochs if isinstance(train, BaseLoop) else int(train.get('max_epochs', 0))


def hand_over(trainer: pl.Trainer, epochs: int) -> None:
    """Lightning's copies of the moved settings become neutral, and its ``max_epochs`` the config's length
    (``epochs``: the loop's epochs, 1 for an iteration-based loop)."""
    trainer.fit_loop.max_epochs = epochs
    trainer.fit_loop.epoch_loop.max_steps = NEUTRAL['max_steps']
    for setting in ('check_val_every_n_epoch', 'val_check_interval', 'accumulate_grad_batches', 'gradient_clip_val'):
        setattr(trainer, setting, NEUTRAL[setting])


def take_trainer_settings(module: RunModule, trainer: pl.Trainer) -> None:
    """Move ``trainer``'s own settings that config keys decide into ``module``'s config, as ``--cfg-options`` with
    the same values would set them, before the loop, optim wrapper and schedulers are built from it."""
    train_loop = module.train_loop
    train = train_loop if train_loop is not None else module.loops.train_cfg
    overrides = config_overrides(read_settings(trainer), train, module.optim_wrapper)
    if train_loop is not None:
        check_built(overrides, train_loop)
    elif overrides:
        for part in ('train_cfg', 'optim_wrapper'):
            below = {key.partition('.')[2]: value for key, value in overrides.items() if key.startswith(part)}
            if below:
                if part == 'train_cfg':
                    updated = module.loops.train_cfg = apply_overrides(module.loops.train_cfg, below)
                else:
                    updated = module.optim_wrapper = apply_overrides(module.optim_wrapper, below)
                module.cfg[part] = updated  # the config dumped and saved in checkpoints says what runs
                module.keywords = {**module.keywords, part: updated}
        module.context.logger.info('Trainer settings taken into the config: ' + ', '.join(
            f'{key}={value!r}' for key, value in overrides.items()))
    epochs = lightning_epochs(module.train_loop if module.train_loop is not None else module.loops.train_cfg)
    if epochs is not None:
        hand_over(trainer, epochs)
