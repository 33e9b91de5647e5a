"""Room on disk for a run's checkpoints: a full disk named, and a warning before training time is spent.

A local checkpoint is written in full beside the file it replaces (:mod:`.serialization`), so the
old and the new one are on disk at once: overwriting one 96 MB ``latest.pth`` needs 96 MB free
besides it, where mmengine's in-place write reuses the old file's room. A write that fails for lack of space is
one :class:`DiskFullError` naming the file, the bytes it needs, the bytes free and the previous
checkpoint, which is intact. :func:`check_room` warns when a run starts (the model and the
optimizer exist, nothing is trained yet) and :func:`room_for_latest` in ``explain`` (nothing is
built: the measure is the latest checkpoint already in the work_dir), when there is less free
space than the checkpoints a ``CheckpointHook`` holds at once.
"""
from __future__ import annotations

import errno
import inspect
import os
import shutil
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from mmengine.hooks import CheckpointHook
from torch.distributed.tensor import DTensor

from mm_lightning.ground.contract import RunModule
from mm_lightning.ground.parts import wrappers_of

__all__ = ['FULL_DISK_ERRNOS', 'NEARLY_FULL', 'PROBE_SIDE', 'DiskFullError', 'full_disk_cause', 'free_bytes',
           'size_on_disk', 'format_bytes', 'tensor_bytes', 'state_bytes', 'model_state_bytes', 'optimizer_state_bytes',
           'held_copies', 'checkpoint_directory', 'latest_checkpoint', 'room_warning', 'check_room', 'room_for_latest']

#: The errors of a write that found no room: the file system is full, or the user's quota is.
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

#: Free space below which a write that failed without an errno (``torch.save`` to a path reports a full disk as
#: its own ``RuntimeError``) is taken to have filled the disk: a full file system leaves less than a block or two.
NEARLY_FULL = 1 << 20

#: The side of the parameter an optimizer's state is probed with: a parameter's number of dimensions, each this
#: long (:func:`optimizer_state_bytes`; a factored state, Adafactor's, has the same layout as on the real one).
PROBE_SIDE = 4


class DiskFullError(OSError):
    """A checkpoint write that found no room; ``errno`` is ENOSPC or EDQUOT, ``filename`` the file it wrote.

    An ``OSError``, as the failure it reports; its text is one line (the command line prints it as is).
    """

    def __init__(self, code: int, path: str, needed: Optional[int], free: int, previous: Optional[str],
                 written: Optional[int] = None) -> None:
        super().__init__(code, os.strerror(code), path)
        self.needed, self.free, self.previous, self.written = needed, free, previous, written
        need = (f'needs {format_bytes(needed)}' if needed is not None
                else f'needs more than the {format_bytes(written or 0)} written before the write failed')
        kept = (f'the previous checkpoint {previous} is intact: free space and resume from it (resume=True, --resume)'
                if previous is not None else 'no existing checkpoint was changed')
        self.message = (f'{path}: {os.strerror(code).lower()}: writing this checkpoint {need}, '
                        f'{format_bytes(free)} free in {os.path.dirname(os.path.abspath(path))}; {kept}')

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        """Pickled with its own arguments (``OSError`` would pass only errno and text)."""
        return type(self), (self.errno, self.filename, self.needed, self.free, self.previous, self.written)


def full_disk_cause(err: BaseException, path: str) -> Optional[int]:
    """The errno (ENOSPC, EDQUOT) of a write of ``path`` that failed for lack of space, else None.

    Found anywhere in the chain of causes (``torch.save`` raises its own ``RuntimeError`` with the
    file's ``OSError`` as context; torch's distributed checkpoint gathers each rank's failure in a
    ``CheckpointException``). A ``RuntimeError`` without an errno (``torch.save`` to a path) counts
    when the file system has (nearly) nothing left: call this before the partial files are removed.
    """
    from torch.distributed.checkpoint.api import CheckpointException
    seen: List[BaseException] = []
    pending = [err]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.append(current)
        if isinstance(current, OSError) and current.errno in FULL_DISK_ERRNOS:
            return current.errno
        if isinstance(current, CheckpointException):
            pending += [failure[0] if isinstance(failure, tuple) else failure for failure in current.failures.values()]
        pending += [link for link in (current.__cause__, current.__context__) if link is not None]
    if any(type(current) is RuntimeError for current in seen) and free_bytes(path) < NEARLY_FULL:
        return errno.ENOSPC
    return None


def free_bytes(path: str) -> int:
    """Bytes free for this user on the file system ``path`` is (or would be created) on."""
    directory = os.path.abspath(path)
    while not os.path.exists(directory):
        directory = os.path.dirname(directory)
    return shutil.disk_usage(directory).free


def size_on_disk(path: str) -> int:
    """The bytes of a checkpoint file, or of every file of a checkpoint directory (sharded, DeepSpeed)."""
    if not os.path.isdir(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def format_bytes(count: int) -> str:
    """``91.6 MiB (96,013,728 bytes)``: readable, and exact."""
    size, unit = float(count), 'bytes'
    for unit in ('bytes', 'KiB', 'MiB', 'GiB', 'TiB'):
        if size < 1024 or unit == 'TiB':
            break
        size /= 1024
    return f'{count:,} bytes' if unit == 'bytes' else f'{size:.1f} {unit} ({count:,} bytes)'


# -- what a checkpoint of this model and optimizer holds ----------------------------------------------
def tensor_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of the tensors among ``tensors``, each whole: a sharded one (DTensor, FSDP2) counts its global
    shape, a ZeRO-3 partition its full size (DeepSpeed's ``ds_numel``)."""
    total = 0
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor):
            numel = getattr(tensor, 'ds_numel', None)
            total += (tensor.numel() if numel is None else numel) * tensor.dtype.itemsize
    return total


def state_bytes(state: Any) -> int:
    """Bytes of the tensors in a nested state (dicts, lists, tuples), each counted whole (:func:`tensor_bytes`)."""
    if isinstance(state, dict):
        return sum(state_bytes(value) for value in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(value) for value in state)
    return tensor_bytes([state])


def model_state_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers (read without ``state_dict()``, a collective under FSDP1)."""
    return tensor_bytes(model.parameters()) + tensor_bytes(model.buffers())


def optimizer_state_bytes(optimizer: Any) -> Tuple[int, bool]:
    """Bytes of the optimizer's state once every trained parameter has some; and whether that is all of it.

    A parameter with state counts what it holds. Before the first step there is none: a probe of the
    same class, with the same group settings, takes one step on a small parameter of the same dtype,
    device and number of dimensions, and the state it keeps tells the bytes per element (tensors the
    parameter's size) and per parameter (the rest: Adam's ``step``, Adafactor's row and column
    factors, counted at the probe's size). An optimizer that cannot be probed so (a constructor that
    needs more than its ``defaults``, a step that needs a closure) counts what it holds: a lower bound.
    """
    total, complete = 0, True
    probes: Dict[Tuple[Any, ...], Optional[Tuple[int, int]]] = {}
    defaults = getattr(optimizer, 'defaults', None)
    for group in optimizer.param_groups:
        settings = {key: value for key, value in group.items() if key != 'params'}
        for param in group['params']:
            state = optimizer.state.get(param)
            if state:
                total += tensor_bytes(state.values())
                continue
            if not param.requires_grad:
                continue
            device = param.to_local().device if isinstance(param, DTensor) else param.device
            key = (param.dtype, device, param.dim(), repr(sorted(settings.items())))
            if key not in probes:
                probes[key] = None if not isinstance(defaults, dict) else _probe(
                    type(optimizer), defaults, settings, torch.zeros((PROBE_SIDE,) * param.dim(), dtype=param.dtype,
                                                                     device=device))
            probe = probes[key]
            if probe is None:
                complete = False
                continue
            per_element, per_parameter = probe
            total += per_element * (getattr(param, 'ds_numel', None) or param.numel()) + per_parameter
    return total, complete


def _probe(cls: type, defaults: Dict[str, Any], settings: Dict[str, Any],
           zeros: torch.Tensor) -> Optional[Tuple[int, int]]:
    """(bytes per element, bytes per parameter) of the state ``cls`` keeps for a parameter like ``zeros``; None if
    it cannot be probed. The constructor gets the ``defaults`` it takes, the group all ``settings``."""
    param = torch.nn.Parameter(zeros)
    param.grad = torch.full_like(param, 1e-3)
    accepted = inspect.signature(cls).parameters
    if not any(entry.kind is inspect.Parameter.VAR_KEYWORD for entry in accepted.values()):
        defaults = {key: value for key, value in defaults.items() if key in accepted}
    with torch.random.fork_rng(devices=[]):  # a probe leaves the run's random stream alone
        try:
            probe = cls([param], **defaults)
            probe.param_groups[0].update(settings)
            probe.step()
        except (TypeError, ValueError, RuntimeError, NotImplementedError):  # not probed: counted as unknown
            return None
    state = [value for value in probe.state.get(param, {}).values() if isinstance(value, torch.Tensor)]
    per_element = sum(value.dtype.itemsize for value in state if value.shape == param.shape)
    return per_element, tensor_bytes(value for value in state if value.shape != param.shape)


# -- how many checkpoints are on disk at once, and where ----------------------------------------------
def held_copies(hook: CheckpointHook) -> int:
    """How many of a ``CheckpointHook``'s full checkpoints are on disk at once while it writes one.

    Two, the new one and the one before it: a file written again (``filename_tmpl='latest.pth'``,
    ``epoch_N.pth`` after a new best) stays whole until the new one replaces it, and a kept one
    stays anyway. One where only the newest is kept and never written again (``max_keep_ckpts=1``,
    no ``save_best``): mmengine removes the old one before writing. Each best file is one more (a
    best checkpoint here holds the optimizer too; the previous best is removed first).
    """
    best = hook.save_best
    bests = 0 if not best else len(best) if isinstance(best, (list, tuple)) else 1
    return (1 if hook.max_keep_ckpts == 1 and not bests else 2) + bests


def checkpoint_directory(hook: CheckpointHook, work_dir: str) -> Optional[str]:
    """The local directory a ``CheckpointHook`` writes to (its ``out_dir`` joined with the work_dir's name, as
    mmengine joins it), or None for an object store."""
    if getattr(hook, 'file_backend', None) is not None:  # before_train has resolved out_dir
        out_dir = str(hook.out_dir)
    else:
        out_dir = str(hook.out_dir or work_dir)
        if out_dir != work_dir:
            out_dir = os.path.join(out_dir, os.path.basename(work_dir.rstrip(os.sep)))
    backends = [(hook.backend_args or {}).get('backend', 'local'), (hook.file_client_args or {}).get('backend', 'disk')]
    return out_dir if '://' not in out_dir and backends == ['local', 'disk'] else None


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``last_checkpoint`` in ``work_dir`` names, if it is there."""
    pointer = os.path.join(work_dir, 'last_checkpoint')
    if not os.path.isfile(pointer):
        return None
    try:
        with open(pointer) as f:
            latest = f.read().strip()
    except (OSError, UnicodeDecodeError):  # an unreadable last_checkpoint: no latest to name
        return None
    return latest if latest and os.path.exists(latest) else None


def _directories(hooks: Iterable[Any], work_dir: str) -> Dict[str, List[CheckpointHook]]:
    found: Dict[str, List[CheckpointHook]] = {}
    for hook in hooks:
        if isinstance(hook, CheckpointHook) and (directory := checkpoint_directory(hook, work_dir)) is not None:
            found.setdefault(directory, []).append(hook)
    return found


def _overwrites(hook: CheckpointHook, path: str) -> bool:
    """Whether the hook writes its checkpoints under ``path``'s name (a ``filename_tmpl`` without a number)."""
    tmpl = hook.filename_tmpl
    return tmpl.format(1) == tmpl.format(2) and tmpl.format(1) == os.path.basename(path)


def room_warning(key: str, directory: str, one: int, copies: int, present: int, basis: str,
                 at_least: bool = False) -> Optional[str]:
    """The warning when ``directory`` has less free space than ``copies`` checkpoints of ``one`` byte need, less
    the ``present`` bytes of one of them already there; None when there is room. ``basis`` says where ``one``
    comes from; ``at_least``: it is a lower bound."""
    needed = max(copies * one - present, 0)
    free = free_bytes(directory)
    if free >= needed:
        return None
    held = (f'{copies} on disk at once (a checkpoint is written in full before the one it replaces is removed)'
            if copies > 1 else 'one at a time (the old one is removed before the next is written)')
    there = ', one of them already there' if present else ''
    return (f'{key}: {directory} has {format_bytes(free)} free; the run\'s checkpoints need {format_bytes(needed)} '
            f'there: {held}{there}, each {"at least" if at_least else "about"} {format_bytes(one)} ({basis}). '
            'A checkpoint write will fail for lack of space: free some, or choose another work_dir')


def _key(directory: str, work_dir: str) -> str:
    return 'work_dir' if os.path.abspath(directory) == os.path.abspath(work_dir) else 'CheckpointHook.out_dir'


def check_room(module: RunModule) -> List[str]:
    """Warn (rank 0, in the run's log) where the run's checkpoints will not fit; returns the warnings.

    Called when a fit starts, with the model and the optimizer set up. A sharded run's ranks write
    one directory: its whole size (global shapes) counts once, on rank 0's view of the disk. Under
    Lightning's FSDPStrategy (FSDP1: flat local shards) and DeepSpeed (its directory adds fp32 master
    weights) the count is a lower bound, and says so.
    """
    context = module.context
    if context.rank != 0:
        return []
    directories = _directories(module.hooks.hooks, context.work_dir)
    if not directories:
        return []
    trainer = module.attached_trainer
    one = model_state_bytes(module.model)
    complete = trainer is None or not isinstance(trainer.strategy, (FSDPStrategy, DeepSpeedStrategy))
    for wrapper in wrappers_of(module.optim_wrapper):
        state, known = optimizer_state_bytes(wrapper.optimizer)
        one, complete = one + state, complete and known
    latest = latest_checkpoint(context.work_dir)
    found = []
    for directory, hooks in directories.items():
        present = 0
        if latest is not None and os.path.dirname(os.path.abspath(latest)) == os.path.abspath(directory) and (
                module.resumed or any(_overwrites(hook, latest) for hook in hooks)):
            present = min(size_on_disk(latest), one)
        message = room_warning(_key(directory, context.work_dir), directory, one,
                               sum(held_copies(hook) for hook in hooks), present, 'this model and its optimizer',
                               not complete)
        if message is not None:
            context.logger.warning(message)
            found.append(message)
    return found


def room_for_latest(work_dir: str, hooks: Iterable[Any], resume: bool) -> List[str]:
    """``explain``'s warnings: nothing is built, so a checkpoint's size is known only from the latest one in the
    work_dir (none there: nothing is said)."""
    latest = latest_checkpoint(work_dir)
    if latest is None:
        return []
    one = size_on_disk(latest)
    found = []
    for directory, directory_hooks in _directories(hooks, work_dir).items():
        here = os.path.dirname(os.path.abspath(latest)) == os.path.abspath(directory)
        present = one if here and (resume or any(_overwrites(hook, latest) for hook in directory_hooks)) else 0
        message = room_warning(_key(directory, work_dir), directory, one,
                               sum(held_copies(hook) for hook in directory_hooks), present,
                               f'the size of the latest checkpoint, {latest}')
        if message is not None:
            found.append(message)
    return found
