"""Checkpoint files on disk: safe to load, and never half-written.

mmengine 0.10 pickles ``HistoryBuffer`` objects (and numpy arrays) into its checkpoints,
which ``torch.load``'s default ``weights_only=True`` refuses; we store them as tagged plain
data, so our files load safely, and turn them back when reading.

mmengine writes a checkpoint in place, so a kill during the write leaves a truncated file,
often the only one (``filename_tmpl='latest.pth'``). Local files are written to a temporary
file in the same directory, flushed and fsynced, then renamed over the target: a kill at
any moment leaves the previous file whole. A write that fails for lack of space is one
:class:`~mm_lightning.state.disk.DiskFullError` that says so (:func:`naming_a_full_disk`, also for the
sharded and DeepSpeed directory writers), with the temporary file removed.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import pickle
import secrets
import shutil
import zipfile
from typing import IO, Any, Callable, Iterator, Optional

import numpy as np
import torch
from mmengine.fileio import FileClient, LocalBackend, get_file_backend
from mmengine.logging import HistoryBuffer

from mm_lightning.config.loading import ConfigError
from mm_lightning.ground.internals import load_checkpoint_file
from mm_lightning.state.disk import DiskFullError, free_bytes, full_disk_cause, latest_checkpoint, size_on_disk

__all__ = ['HISTORY_BUFFER_TAG', 'NDARRAY_TAG', 'to_safe', 'from_safe', 'UnsafeCheckpointError', 'to_bytes',
           'from_bytes', 'UnreadableCheckpointError', 'LEGACY_HEAD', 'unsafe_checkpoint_error', 'read', 'read_trusted',
           'make_safe', 'write', 'write_atomically', 'write_text_atomically', 'serialized_size',
           'naming_a_full_disk', 'replace_path', 'is_whole']

HISTORY_BUFFER_TAG = '__history_buffer__'
NDARRAY_TAG = '__ndarray__'


def to_safe(obj: Any) -> Any:
    """Replace HistoryBuffers and numpy values by tagged plain data (see module doc)."""
    if isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {HISTORY_BUFFER_TAG: True, 'log_history': torch.from_numpy(np.asarray(log, dtype=np.float64)),
                'count_history': torch.from_numpy(np.asarray(count, dtype=np.float64)),
                'max_length': obj.max_length}
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        return {NDARRAY_TAG: True, 'data': torch.from_numpy(np.ascontiguousarray(obj)), 'dtype': str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    return _map_containers(obj, to_safe)


def from_safe(obj: Any) -> Any:
    """Inverse of :func:`to_safe`."""
    if isinstance(obj, dict):
        if obj.get(HISTORY_BUFFER_TAG) is True:
            return HistoryBuffer(obj['log_history'].tolist(), obj['count_history'].tolist(), obj['max_length'])
        if obj.get(NDARRAY_TAG) is True:
            return obj['data'].numpy().astype(obj['dtype'])
    return _map_containers(obj, from_safe)


def _map_containers(obj: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply ``fn`` to the values of dicts (keeping their type: OrderedDict, Counter...) and lists."""
    if isinstance(obj, dict):
        mapped = copy.copy(obj)
        for key, value in obj.items():
            mapped[key] = fn(value)
        return mapped
    if type(obj) in (list, tuple):
        return type(obj)(fn(value) for value in obj)
    return obj


class UnsafeCheckpointError(ConfigError):
    """A checkpoint that ``torch.load(weights_only=True)`` refuses (see :func:`make_safe`)."""


def to_bytes(obj: Any) -> bytes:
    """``obj`` in the safe form, as bytes (to send between processes without pickling tensors)."""
    buffer = io.BytesIO()
    torch.save(to_safe(obj), buffer)
    return buffer.getvalue()


def from_bytes(payload: bytes) -> Any:
    return from_safe(torch.load(io.BytesIO(payload), map_location='cpu', weights_only=True))


class UnreadableCheckpointError(ConfigError):
    """A file that is not a whole checkpoint: cut short (a kill during a write), or not one at all."""


#: How a file in ``torch.save``'s legacy format (before torch 1.6; not a zip archive) begins: a pickled magic number.
LEGACY_HEAD = b'\x80\x02\x8a\n'


def unsafe_checkpoint_error(filename: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f'{filename}: this checkpoint pickles Python objects that torch.load(weights_only=True) refuses '
        '(mmengine 0.10 stores HistoryBuffer objects in its message hub). If you trust the file, convert '
        f'it once: `mm-lightning convert-checkpoint {filename} OUT.pth`')


def read(filename: str, map_location: Any = 'cpu') -> dict:
    """Load a checkpoint with ``weights_only=True`` and restore tagged values.

    A local file that is not a whole one is refused by name before torch reads it (torch's own
    errors for such files range from ``KeyError: 101`` to ``OSError: Invalid argument``).
    """
    path = os.path.expanduser(filename)
    local = os.path.isfile(path)
    if local and not _looks_whole(path):
        raise _unreadable(filename)
    try:
        checkpoint = load_checkpoint_file(filename, map_location=map_location)
    except pickle.UnpicklingError as err:
        if local and not is_whole(path):  # a legacy-format file cut short
            raise _unreadable(filename) from err
        raise unsafe_checkpoint_error(filename) from err
    return from_safe(checkpoint)


def _looks_whole(filepath: str) -> bool:
    if is_whole(filepath):
        return True
    with open(filepath, 'rb') as f:
        return f.read(len(LEGACY_HEAD)) == LEGACY_HEAD


def _unreadable(filename: str) -> UnreadableCheckpointError:
    return UnreadableCheckpointError(f'{filename}: not a whole checkpoint (cut short, or not a file torch.save '
                                     'wrote)')


def read_trusted(filename: str) -> dict:
    """Unpickle a checkpoint in full (only for files you trust), in the safe form's values."""
    return from_safe(to_safe(torch.load(filename, map_location='cpu', weights_only=False)))


def make_safe(src: str, dst: str) -> None:
    """Rewrite a trusted mmengine checkpoint in the safe form (unpickles ``src`` fully)."""
    write(to_safe(torch.load(src, map_location='cpu', weights_only=False)), dst)


def write(checkpoint: dict, filepath: str, file_client_args: Optional[dict] = None,
          backend_args: Optional[dict] = None) -> None:
    """Save ``checkpoint`` in the safe form; local files atomically (see module doc)."""
    checkpoint = to_safe(checkpoint)
    if file_client_args is not None:
        backend: Any = FileClient.infer_client(file_client_args, filepath)
    else:
        backend = get_file_backend(filepath, backend_args=backend_args)
    if isinstance(getattr(backend, 'client', backend), LocalBackend):  # FileClient wraps its backend
        write_atomically(checkpoint, filepath)
        return
    with io.BytesIO() as buffer:  # object stores replace an object in one put
        torch.save(checkpoint, buffer)
        backend.put(buffer.getvalue(), filepath)


def write_atomically(obj: Any, filepath: str) -> None:
    """``torch.save`` to a temporary file beside ``filepath``, fsync, then rename over it."""
    os.makedirs(os.path.dirname(os.path.abspath(filepath)), exist_ok=True)
    _replace(filepath, 'wb', lambda f: torch.save(obj, f), lambda: serialized_size(obj))


def write_text_atomically(text: str, filepath: str) -> None:
    """Replace a small text file (``last_checkpoint``) in one rename."""
    _replace(filepath, 'w', lambda f: f.write(text), lambda: len(text.encode()))


class _Counter:
    """A file that keeps nothing and counts what is written to it."""

    def __init__(self) -> None:
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def serialized_size(obj: Any) -> int:
    """The bytes ``torch.save(obj, f)`` writes (serialised again, to nowhere: for a write that failed)."""
    counter = _Counter()
    torch.save(obj, counter)  # type: ignore[arg-type]  # torch.save takes any object with write and flush
    return counter.count


@contextlib.contextmanager
def naming_a_full_disk(path: str, partial: Optional[str] = None,
                       needed: Optional[Callable[[], int]] = None) -> Iterator[None]:
    """A write of ``path`` inside this block that fails for lack of space raises one ``DiskFullError`` instead
    (naming the file, the bytes needed and free, and the previous checkpoint; the cause chained).

    ``partial`` (the temporary file or directory the write goes to, beside ``path``) is removed after any
    failure; give it on one rank only. ``needed()`` gives the bytes the write needs, asked only after a
    full disk; without it the message gives the bytes written before the failure.
    """
    try:
        yield
    except BaseException as err:
        # before partial is removed; torch's CheckpointException is a BaseException
        code = None if isinstance(err, (KeyboardInterrupt, SystemExit)) else full_disk_cause(err, path)
        written = size_on_disk(partial) if partial is not None and os.path.exists(partial) else None
        _remove(partial)
        if code is None:
            raise
        raise DiskFullError(code, path, None if needed is None else needed(), free_bytes(path),
                            _previous_checkpoint(path), written) from err


def _remove(partial: Optional[str]) -> None:
    if partial is None or not os.path.lexists(partial):
        return
    if os.path.isdir(partial):
        shutil.rmtree(partial, ignore_errors=True)  # ranks may remove it at once
    else:
        os.unlink(partial)


def _previous_checkpoint(path: str) -> Optional[str]:
    """What a failed write of ``path`` leaves whole: ``path`` itself if there, else the checkpoint
    ``last_checkpoint`` beside it names."""
    if os.path.exists(path):
        return path
    return latest_checkpoint(os.path.dirname(os.path.abspath(path)))


def _replace(filepath: str, mode: str, write_to: Callable[[IO], Any], needed: Callable[[], int]) -> None:
    """Write a new file beside ``filepath`` through ``write_to``, fsync it, rename it over ``filepath``.

    The temporary file is created with mode 0o666, as ``open()`` creates files, so the umask
    (and a directory's default ACL) decide who may read the result; ``tempfile.mkstemp``'s
    0o600 would survive the rename and lock a shared work_dir's group out.
    """
    directory, name = os.path.split(os.path.abspath(filepath))
    tmp_path = os.path.join(directory, f'.{name}.{secrets.token_hex(8)}.tmp')
    with naming_a_full_disk(filepath, tmp_path, needed):  # creating the file may find no room already
        handle = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0), 0o666)
        with os.fdopen(handle, mode) as f:
            write_to(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, filepath)
    _fsync_directory(directory)


def replace_path(new: str, path: str) -> None:
    """``new`` (a written file or directory) at ``path``. A checkpoint directory written again under its name
    (``CheckpointHook`` rewrites ``epoch_N.pth`` after a new best) is whole under one of two names throughout."""
    if os.path.isdir(path):
        old = f'{path}.old'
        if os.path.exists(old):
            shutil.rmtree(old)
        os.rename(path, old)
        os.rename(new, path)
        shutil.rmtree(old)
    else:
        os.replace(new, path)
    _fsync_directory(os.path.dirname(os.path.abspath(path)))


def _fsync_directory(directory: str) -> None:
    if hasattr(os, 'O_DIRECTORY'):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def is_whole(filepath: str) -> bool:
    """Whether a local checkpoint file is complete (``torch.save`` writes a zip; a cut one has no end record)."""
    return os.path.isfile(filepath) and zipfile.is_zipfile(filepath)
