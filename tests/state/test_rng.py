"""Global random state: captured, restored, and safe in checkpoints."""
import random

import numpy as np
import torch

from mm_lightning.state import rng
from mm_lightning.state.serialization import from_safe, to_safe


def _draw():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_capture_and_restore_every_generator(tmp_path):
    state = rng.capture()
    first = _draw()
    torch.save(to_safe(state), tmp_path / 'rng.pt')
    _draw()
    rng.restore(from_safe(torch.load(tmp_path / 'rng.pt', weights_only=True)))
    assert _draw() == first


def test_preserved_leaves_the_generators_where_they_were():
    before = rng.capture()
    with rng.preserved():
        _draw()
    expected = _draw()
    rng.restore(before)
    assert _draw() == expected
