"""Top-level keys nothing reads that are close to one that is: a warning, never an error.

mmengine ignores a top-level key it does not read, so ``param_schedulr`` silently leaves a run
without its schedulers. :func:`misspelt_keys` names each such near miss of a key mmengine,
OpenMMLab's tools or mm_lightning read (:data:`TOP_LEVEL_KEYS`). It is separate from
:mod:`mm_lightning.config.validation` because it judges the keys a config has, not the values
of the keys it should have, and its findings are warnings (the run's log, ``explain``).
"""
from __future__ import annotations

import difflib
from typing import Any, List, Mapping, Union

from mmengine.config import Config

#: Top-level keys that mmengine's Runner, OpenMMLab's tools and mm_lightning read: ``runtime.assembly.CONFIG_KEYWORDS``
#: (tests/runtime/test_assembly.py checks they are all here) and the others. A config's other keys are its own
#: variables (``data_root``, ``train_pipeline``, ``backend_args``...): only a near miss of one of these is named.
TOP_LEVEL_KEYS = (
    'work_dir', 'experiment_name', 'train_dataloader', 'optim_wrapper', 'param_scheduler', 'train_cfg',
    'val_dataloader', 'val_evaluator', 'val_cfg', 'test_dataloader', 'test_evaluator', 'test_cfg', 'strategy',
    'auto_scale_lr', 'default_hooks', 'custom_hooks', 'data_preprocessor', 'load_from', 'resume', 'launcher',
    'env_cfg', 'log_processor', 'log_level', 'visualizer', 'default_scope', 'randomness', 'compile',
    'model', 'custom_imports', 'runner_type', 'model_wrapper_cfg', 'sync_bn', 'find_unused_parameters', 'tta_model',
    'lightning_trainer', 'progress_bar', 'profiler')
#: How alike (difflib's ratio) a key must be to a known one to be taken for a misspelling of it, and at most how
#: many letters apart: strict, as configs carry keys of their own (``conv_cfg`` is no ``env_cfg``). Checked on
#: OpenMMLab's shipped configs (tests/openmmlab/test_misspelt_keys.py).
MISSPELLING_CUTOFF = 0.85
MISSPELLING_EDITS = 2


def misspelt_keys(cfg: Union[Config, Mapping[str, Any]]) -> List[str]:
    """A warning for each top-level key of ``cfg`` that is not read but is close to one that is
    (``param_schedulr``): mmengine ignores it, so the run goes on without what it meant. Never an error.

    A key that extends a known one (``test100_dataloader``, ``val_evaluator_abs``, ``models``) is a variable
    of the config's own, not a misspelling."""
    keys = [key for key in (cfg.keys() if isinstance(cfg, (Config, Mapping)) else ())
            if isinstance(key, str) and not key.startswith('_') and key not in TOP_LEVEL_KEYS]
    found = []
    for key in keys:
        close = [known for known in difflib.get_close_matches(key, TOP_LEVEL_KEYS, n=3, cutoff=MISSPELLING_CUTOFF)
                 if _edits(key, known) <= MISSPELLING_EDITS and known not in key]
        if close:
            found.append(f'{key}: not a key mmengine or mm_lightning reads (the run ignores it); did you mean '
                         f'{close[0]!r}?')
    return found


def _edits(a: str, b: str) -> int:
    """Letters inserted, deleted, replaced or swapped with a neighbour to turn ``a`` into ``b``."""
    previous2: List[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            cost = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                cost = min(cost, previous2[j - 2] + 1)
            current.append(cost)
        previous2, previous = previous, current
    return previous[-1]


__all__ = ['TOP_LEVEL_KEYS', 'MISSPELLING_CUTOFF', 'MISSPELLING_EDITS', 'misspelt_keys']
