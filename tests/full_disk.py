"""A disk that fills during a checkpoint write, without a small file system: injected into the file writes.

mm_lightning writes a local checkpoint through ``os.fdopen`` on a temporary file
(:mod:`mm_lightning.state.serialization`); :func:`fill_at` makes the ``number``-th binary one take
``room`` bytes and then fail as a full disk does (``OSError(ENOSPC)``; torch wraps it in its own
``RuntimeError`` when the write happens inside ``torch.save``). ``shutil.disk_usage`` can be set to a
small free space with :func:`report_free`.
"""
from __future__ import annotations

import errno
import os
import shutil
from typing import Any


class FillingFile:
    """A binary file that takes ``room`` bytes, then raises ``OSError(code)``."""

    def __init__(self, file: Any, room: int, code: int) -> None:
        self._file, self._room, self._code = file, room, code

    def write(self, data: Any) -> int:
        if len(data) > self._room:
            self._file.write(bytes(data)[:self._room])
            self._room = 0
            raise OSError(self._code, os.strerror(self._code))
        self._room -= len(data)
        return self._file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __enter__(self) -> 'FillingFile':
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._file.close()


def fill_at(monkeypatch, number: int, room: int = 4096, code: int = errno.ENOSPC) -> list:
    """The ``number``-th (from 1) binary ``os.fdopen`` from now fills after ``room`` bytes; returns the list
    of opened count (one entry per binary open)."""
    opened: list = []
    fdopen = os.fdopen

    def filling_fdopen(fd: int, mode: str = 'r', *args: Any, **kwargs: Any) -> Any:
        file = fdopen(fd, mode, *args, **kwargs)
        if 'b' not in mode or 'w' not in mode:
            return file
        opened.append(fd)
        return FillingFile(file, room, code) if len(opened) == number else file
    monkeypatch.setattr(os, 'fdopen', filling_fdopen)
    return opened


def report_free(monkeypatch, free: int, under: str) -> None:
    """``shutil.disk_usage`` of paths under ``under`` reports ``free`` bytes free."""
    disk_usage = shutil.disk_usage

    def usage(path: Any) -> Any:
        real = disk_usage(path)
        if not os.path.abspath(str(path)).startswith(os.path.abspath(under)):
            return real
        return type(real)(real.total, real.total - free, free)
    monkeypatch.setattr(shutil, 'disk_usage', usage)
