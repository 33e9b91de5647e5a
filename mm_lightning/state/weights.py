"""How a checkpoint's weights fit the model, and what a partial fit means for why they are loaded.

mmengine loads weights non-strictly and reports a mismatch as one warning listing every key,
among the run's other log lines: a file whose keys fit nothing (a Lightning checkpoint's
``model.`` prefix, another model's file) evaluates a model that keeps its initial weights, at
chance accuracy, and exits 0. Here the fit is measured before loading, and each purpose says
which fits it refuses (:data:`REFUSED`); a partial fit that is accepted is reported in one line.
A tensor whose shape differs from the model's is not loaded (torch refuses it): it counts as
not loaded.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

import torch
from mmengine.model import BaseTTAModel, is_model_wrapper
from torch import nn

from mm_lightning.config.loading import ConfigError

__all__ = ['SHOWN_KEYS', 'WeightsFit', 'REFUSED', 'revised', 'fit_of', 'check']

#: How many key names a message shows of each kind.
SHOWN_KEYS = 3


@dataclass(frozen=True)
class WeightsFit:
    """Which of a model's tensors a checkpoint's state dict gives (after key revision)."""

    total: int  # the model's tensors (BatchNorm's num_batches_tracked only where the file has it, as mmengine)
    missing: Tuple[str, ...]  # model tensors the file does not have
    unexpected: Tuple[str, ...]  # file tensors the model does not have
    mismatched: Tuple[str, ...]  # in both, with different shapes: 'key (file (4, 8), model (3, 8))'

    @property
    def loaded(self) -> int:
        return self.total - len(self.missing) - len(self.mismatched)

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, filename: str) -> str:
        """One line: ``loaded N of M tensors from FILE; missing (k): a, b, c, ...; ...``."""
        parts = [f'loaded {self.loaded} of {self.total} tensors from {filename}']
        for kind, keys in (('missing', self.missing), ('unexpected', self.unexpected),
                           ('shape mismatch', self.mismatched)):
            if keys:
                more = ', ...' if len(keys) > SHOWN_KEYS else ''
                parts.append(f'{kind} ({len(keys)}): {", ".join(keys[:SHOWN_KEYS])}{more}')
        return '; '.join(parts)


#: Why weights are loaded -> the fits refused (the others load, mmengine's way, with a line if partial).
REFUSED: Dict[str, Callable[[WeightsFit], bool]] = {
    # a test or validation of the file's model: every model tensor must come from the file
    'evaluate': lambda fit: fit.loaded < fit.total,
    # load_from before training (fine-tuning): mmengine accepts a partial fit; none at all is the wrong file
    'fine-tune': lambda fit: fit.loaded == 0 < fit.total,
    # runner.load_checkpoint(strict=False) and resume: mmengine's non-strict loading
    'load': lambda fit: False,
}


def revised(state_dict: Mapping[str, torch.Tensor], revise_keys: Sequence[Tuple[str, str]]) -> 'OrderedDict':
    """The state dict's keys after mmengine's ``revise_keys`` (pattern, replacement) substitutions."""
    state = OrderedDict(state_dict)
    for pattern, replacement in revise_keys:
        state = OrderedDict((re.sub(pattern, replacement, key), value) for key, value in state.items())
    return state


def fit_of(model: nn.Module, state_dict: Mapping[str, object]) -> WeightsFit:
    """How ``state_dict`` (revised keys) fits ``model``'s own state dict."""
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.get_submodule('module')  # mmengine loads into the model these wrap
    expected = model.state_dict()
    missing: List[str] = []
    mismatched: List[str] = []
    total = 0
    for key, value in expected.items():
        if key not in state_dict:
            if 'num_batches_tracked' in key:  # mmengine ignores these when missing
                continue
            missing.append(key)
        elif isinstance(value, torch.Tensor) and isinstance(given := state_dict[key], torch.Tensor) \
                and given.shape != value.shape:
            mismatched.append(f'{key} (file {tuple(given.shape)}, model {tuple(value.shape)})')
        total += 1
    unexpected = tuple(key for key in state_dict if key not in expected)
    return WeightsFit(total, tuple(missing), unexpected, tuple(mismatched))


def check(fit: WeightsFit, filename: str, purpose: str) -> None:
    """Refuse a fit the purpose cannot use, in one line naming the file and the keys."""
    if REFUSED[purpose](fit):
        what = "fit none of the model's tensors" if fit.loaded == 0 else 'do not fit the model'
        raise ConfigError(f"load_from: the checkpoint's weights {what}: {fit.describe(filename)}")
