"""The Trainer settings a config decides, and the refusal of a Trainer that contradicts them.

mmengine builds a run's loop, parameter schedulers and ``CheckpointHook`` from ``train_cfg``,
and accumulates gradients by ``optim_wrapper.accumulative_counts``: the config is the run's
single source of truth. A user's own ``Trainer`` that sets the run's length, its validation
cadence or accumulation differently would stop, validate or step where the config's
schedulers, final validation and last checkpoint do not follow, so it is refused when
fitting starts, before any training step, by one error naming both values. The rules
(:data:`RULES`), as Trainer setting: config key; agreeing Trainer value:

- ``max_epochs``: ``train_cfg.max_epochs``, the same number; iteration-based, ``train_cfg.max_iters``
  and 1 (one Lightning epoch holds every iteration).
- ``max_steps``: the same length key; -1 (Lightning counts optimizer steps, mmengine iterations).
- ``accumulate_grad_batches``: ``optim_wrapper.accumulative_counts``; 1 (the optim wrapper accumulates).
- ``check_val_every_n_epoch`` and ``val_check_interval``: ``train_cfg.val_interval``; 1 and 1.0 (the
  hook bridge schedules validation by ``val_begin``, ``val_interval`` and ``dynamic_intervals``).

These are the values ``trainer_kwargs(cfg)`` gives and Lightning's defaults, so a Trainer that
leaves them unset agrees. ``max_epochs=None`` becomes 1000 (-1 with ``max_time``) when fitting
starts; both let the config decide, unless the config has more than 1000 epochs.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, NamedTuple, Tuple

import lightning.pytorch as pl
from mmengine.runner.base_loop import BaseLoop

from mm_lightning.config.loading import ConfigError
from mm_lightning.runtime.fidelity import TRAINER_SETTINGS
from mm_lightning.runtime.loops import train_loop_kind

__all__ = ['LENGTH', 'CADENCE', 'ACCUMULATION', 'AS_CONFIGURED', 'UNSET_MAX_EPOCHS', 'DEFAULT_VAL_CHECK_INTERVAL',
           'LOOP_DEFAULTS', 'TIME_INTERVAL', 'Rule', 'RULES', 'configured_values', 'agrees', 'contradiction',
           'check_trainer']

LENGTH = "the config sets the run's length (its schedulers, validation and last checkpoint follow it)"
CADENCE = ("the config's val_begin, val_interval and dynamic_intervals decide when training validates "
           "(mm_lightning schedules validation by them)")
ACCUMULATION = ("optim_wrapper accumulates gradients (Lightning's accumulation does not apply to the manual "
                "optimization mmengine's train_step does)")

#: Stands for "the configured value itself" as a rule's agreeing Trainer value.
AS_CONFIGURED = object()
#: What ``max_epochs=None`` becomes when fitting starts (1000; -1 with ``max_time``).
UNSET_MAX_EPOCHS = (1000, -1)
#: Lightning's ``val_check_interval`` when none is given: validate at each epoch's end.
DEFAULT_VAL_CHECK_INTERVAL = 1.0
#: mmengine's loop defaults (by ``by_epoch``) for the keys the rules read from a ``train_cfg``.
LOOP_DEFAULTS: Dict[bool, Dict[str, Any]] = {True: dict(val_interval=1), False: dict(val_interval=1000)}
#: How a time-based ``val_check_interval`` reads (Lightning keeps it privately).
TIME_INTERVAL = 'a time interval'


class Rule(NamedTuple):
    """A Trainer setting that a config key decides."""

    setting: str  # the Trainer's attribute
    key: str  # the config key that decides it
    agrees: Any  # the Trainer value that agrees with the config (AS_CONFIGURED: the key's value)
    why: str
    movable: bool  # the Trainer's value, set at ``key``, means the same


#: The rules for epoch-based (True) and iteration-based (False) configs, in the order they are checked.
RULES: Dict[bool, Tuple[Rule, ...]] = {
    True: (
        Rule('max_epochs', 'train_cfg.max_epochs', AS_CONFIGURED, LENGTH, movable=True),
        Rule('max_steps', 'train_cfg.max_epochs', TRAINER_SETTINGS['max_steps'], LENGTH, movable=False),
        Rule('accumulate_grad_batches', 'optim_wrapper.accumulative_counts',
             TRAINER_SETTINGS['accumulate_grad_batches'], ACCUMULATION, movable=True),
        Rule('check_val_every_n_epoch', 'train_cfg.val_interval', TRAINER_SETTINGS['check_val_every_n_epoch'],
             CADENCE, movable=True),
        Rule('val_check_interval', 'train_cfg.val_interval', DEFAULT_VAL_CHECK_INTERVAL, CADENCE, movable=False),
    ),
    False: (
        Rule('max_epochs', 'train_cfg.max_iters', 1, LENGTH, movable=False),
        Rule('max_steps', 'train_cfg.max_iters', TRAINER_SETTINGS['max_steps'], LENGTH, movable=False),
        Rule('accumulate_grad_batches', 'optim_wrapper.accumulative_counts',
             TRAINER_SETTINGS['accumulate_grad_batches'], ACCUMULATION, movable=True),
        Rule('check_val_every_n_epoch', 'train_cfg.val_interval', TRAINER_SETTINGS['check_val_every_n_epoch'],
             CADENCE, movable=False),
        Rule('val_check_interval', 'train_cfg.val_interval', DEFAULT_VAL_CHECK_INTERVAL, CADENCE, movable=False),
    ),
}


def configured_values(train: Any, optim_wrapper: Any, by_epoch: bool) -> Dict[str, Any]:
    """The rules' config keys and their values: a built loop's own, else ``train_cfg``'s or mmengine's defaults.

    ``accumulative_counts`` is None for an optim wrapper given built (its count is its own).
    """
    if isinstance(train, BaseLoop):
        loop = dict(max_epochs=train.max_epochs, max_iters=train.max_iters, val_interval=train.val_interval)
    else:
        loop = {**LOOP_DEFAULTS[by_epoch], **train}
    counts = optim_wrapper.get('accumulative_counts', 1) if isinstance(optim_wrapper, Mapping) else None
    return {**{f'train_cfg.{key}': value for key, value in loop.items()}, 'optim_wrapper.accumulative_counts': counts}


def agrees(rule: Rule, value: Any, expected: Any) -> bool:
    """Whether the Trainer's ``value`` of ``rule.setting`` runs the config as it is (``expected``)."""
    if rule.setting == 'max_epochs' and value in UNSET_MAX_EPOCHS:
        return value == -1 or value >= expected  # Lightning's "unset": the config's end comes first
    return type(value) is type(expected) and value == expected  # 1 (every batch) is not 1.0 (every epoch)


def contradiction(rule: Rule, value: Any, configured: Any, expected: Any) -> str:
    """One line naming the Trainer's value and the config's, why the config decides, and the fix."""
    config = rule.key if configured is None else f'{rule.key}={configured!r}'
    if rule.movable and value == configured:
        fix = f'{rule.key} already says so:'
    elif rule.movable:
        fix = f'set {rule.key}={value!r} (--cfg-options {rule.key}={value!r}) or'
    else:
        fix = f'set {rule.key} instead (--cfg-options {rule.key}=...) or'
    return (f'Trainer({rule.setting}={value!r}) contradicts {config}: {rule.why}; '
            f'{fix} leave {rule.setting} unset (or {expected!r})')


def check_trainer(trainer: pl.Trainer, train: Any, optim_wrapper: Any) -> None:
    """Refuse a ``trainer`` whose settings contradict the training loop ``train`` (built, or its config)
    and ``optim_wrapper`` (its config) with a :class:`ConfigError` naming both values."""
    by_epoch = train_loop_kind(train)
    if by_epoch is None:
        return  # no loop Lightning can drive: refused by name when training starts
    values = configured_values(train, optim_wrapper, by_epoch)
    for rule in RULES[by_epoch]:
        configured = values.get(rule.key)
        if rule.agrees is AS_CONFIGURED and configured is None:
            continue  # not configured: building the loop names the missing key
        expected = configured if rule.agrees is AS_CONFIGURED else rule.agrees
        value = getattr(trainer, rule.setting, TIME_INTERVAL)  # only val_check_interval can be absent
        if not agrees(rule, value, expected):
            raise ConfigError(contradiction(rule, value, configured, expected))
