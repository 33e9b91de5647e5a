"""The global random number generators' state: captured into checkpoints, restored on resume.

mmengine's checkpoints carry the seed but not the generators' state, so after a resume
dropout, random augmentation in the main process and the seeds of new loader workers
differ from an uninterrupted run. Python's ``random``, NumPy's global generator, torch's
CPU generator and every CUDA device's generator are saved and restored together.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Dict, Iterator

import numpy as np
import torch

__all__ = ['RngState', 'capture', 'restore', 'preserved']

RngState = Dict[str, Any]


def capture() -> RngState:
    """The state of every global generator (plain data and tensors: safe to ``torch.load``)."""
    version, internal, gauss = random.getstate()
    state: RngState = {
        'python': [version, list(internal), gauss],
        'numpy': list(np.random.get_state()),
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore(state: RngState) -> None:
    """Put every global generator back where :func:`capture` found it."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(state['numpy']))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@contextmanager
def preserved() -> Iterator[None]:
    """Run a block without moving the global generators (their state is put back after it)."""
    state = capture()
    try:
        yield
    finally:
        restore(state)
