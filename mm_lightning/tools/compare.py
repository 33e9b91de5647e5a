"""Train one config under mmengine's Runner and under mm_lightning, and say where they differ.

Both runs use the same config and seed (the config's, else 0) in one process, each with
its own work_dir and experiment name, and both stop after the same iteration (see
:mod:`mm_lightning.tools.engines`). Per iteration the report gives the largest difference
between the logged losses and whether the learning rates the iteration used are equal;
validation metrics are compared where validation falls within the iterations. Values
are equal when they differ by at most ``atol`` (0: exactly).
"""
from __future__ import annotations

import math
import os.path as osp
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

from mm_lightning.config.loading import CfgOptions, ConfigLike, load_config
from mm_lightning.tools.engines import EngineRun, Iteration, Validation, fixed_seed, run_engine

__all__ = ['SCHEMA', 'REFERENCE', 'OURS', 'Divergence', 'compare', 'comparison_report', 'format_comparison']

SCHEMA = 'mm_lightning.compare/1'
REFERENCE, OURS = 'mmengine', 'mm_lightning'


@dataclass
class Divergence:
    """The first value that differs: at which iteration (or after which, for validation), which key."""

    iteration: int
    key: str
    reference: Any
    ours: Any

    def as_dict(self) -> Dict[str, Any]:
        return {'iteration': self.iteration, 'key': self.key, REFERENCE: self.reference, OURS: self.ours}


def compare(cfg: ConfigLike, *, iters: int, atol: float = 0.0, work_dir: Optional[str] = None,
            cfg_options: CfgOptions = None) -> Dict[str, Any]:
    """Run both engines for ``iters`` iterations and compare them; a JSON-ready report."""
    cfg = load_config(cfg, cfg_options)
    cfg, seed = fixed_seed(cfg)
    work_dir = work_dir or osp.join('work_dirs', f'compare_{_config_name(cfg)}')
    reference = run_engine(REFERENCE, cfg, iters, osp.join(work_dir, REFERENCE))
    ours = run_engine(OURS, cfg, iters, osp.join(work_dir, OURS))
    return comparison_report(reference, ours, atol, config=cfg.filename, iters=iters, seed=seed)


def _config_name(cfg: Any) -> str:
    return osp.splitext(osp.basename(cfg.filename))[0] if cfg.filename else 'config'


def comparison_report(reference: EngineRun, ours: EngineRun, atol: float, **context: Any) -> Dict[str, Any]:
    """Per-iteration and validation comparison of two runs, with the first divergence."""
    iterations = [_iteration_row(number, _at(reference.iterations, number), _at(ours.iterations, number), atol)
                  for number in range(1, max(len(reference.iterations), len(ours.iterations)) + 1)]
    validations = [_validation_row(index, _at(reference.validations, index), _at(ours.validations, index), atol)
                   for index in range(1, max(len(reference.validations), len(ours.validations)) + 1)]
    divergences = [row['divergence'] for row in iterations + validations if row['divergence'] is not None]
    first = min(divergences, key=lambda d: d['iteration']) if divergences else None
    return dict(schema=SCHEMA, **context, atol=atol, identical=first is None,
                ran={REFERENCE: len(reference.iterations), OURS: len(ours.iterations)},
                first_divergence=first, iterations=iterations, validations=validations)


def _at(items: Sequence[Any], number: int) -> Any:
    return items[number - 1] if number <= len(items) else None


def _iteration_row(number: int, reference: Optional[Iteration], ours: Optional[Iteration],
                   atol: float) -> Dict[str, Any]:
    if reference is None or ours is None:
        missing = Divergence(number, 'iteration', 'ran' if reference else 'not run', 'ran' if ours else 'not run')
        return dict(iteration=number, max_loss_diff=None, lr_equal=None, losses=None, lr=None,
                    divergence=missing.as_dict())
    loss_diff = _largest_difference(reference.losses, ours.losses)
    lr_diff = _largest_difference(reference.lr, ours.lr)
    divergence = (_first_different(number, reference.losses, ours.losses, atol)
                  or _first_different(number, reference.lr, ours.lr, atol))
    return dict(iteration=number, max_loss_diff=loss_diff, lr_equal=lr_diff <= atol,
                losses={REFERENCE: reference.losses, OURS: ours.losses},
                lr={REFERENCE: reference.lr, OURS: ours.lr},
                divergence=None if divergence is None else divergence.as_dict())


def _validation_row(index: int, reference: Optional[Validation], ours: Optional[Validation],
                    atol: float) -> Dict[str, Any]:
    either = reference if reference is not None else ours
    if either is None:
        raise ValueError('a validation row compares at least one validation')
    after = either.after_iteration
    if reference is None or ours is None or reference.after_iteration != ours.after_iteration:
        missing = Divergence(after, 'validation', None if reference is None else reference.after_iteration,
                             None if ours is None else ours.after_iteration)
        return dict(validation=index, after_iteration=after, max_metric_diff=None, metrics=None,
                    divergence=missing.as_dict())
    divergence = _first_different(after, reference.metrics, ours.metrics, atol, prefix='val/')
    return dict(validation=index, after_iteration=after,
                max_metric_diff=_largest_difference(reference.metrics, ours.metrics),
                metrics={REFERENCE: reference.metrics, OURS: ours.metrics},
                divergence=None if divergence is None else divergence.as_dict())


def _numbers(value: Any) -> Optional[List[float]]:
    """A value as a list of numbers (a number, or a list of them such as per-group LRs); else None."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values]
    return None


def _difference(a: Any, b: Any) -> float:
    """The largest absolute difference between two values (inf when they cannot be matched)."""
    left, right = _numbers(a), _numbers(b)
    if left is None or right is None:
        return 0.0 if a == b else math.inf
    if len(left) != len(right):
        return math.inf
    return max((_scalar_difference(x, y) for x, y in zip(left, right)), default=0.0)


def _scalar_difference(x: float, y: float) -> float:
    if math.isnan(x) or math.isnan(y):
        return 0.0 if math.isnan(x) and math.isnan(y) else math.inf
    return abs(x - y)


def _largest_difference(reference: Mapping[str, Any], ours: Mapping[str, Any]) -> float:
    keys = set(reference) | set(ours)
    return max((_difference(reference.get(key), ours.get(key)) for key in keys), default=0.0)


def _first_different(number: int, reference: Mapping[str, Any], ours: Mapping[str, Any], atol: float,
                     prefix: str = '') -> Optional[Divergence]:
    for key in list(reference) + [key for key in ours if key not in reference]:
        if _difference(reference.get(key), ours.get(key)) > atol:
            return Divergence(number, prefix + key, reference.get(key), ours.get(key))
    return None


# -- text -----------------------------------------------------------------------------------------
def format_comparison(report: Mapping[str, Any]) -> str:
    """A table of iterations, the validations, and the verdict."""
    lines = [f"Comparing mmengine's Runner and mm_lightning on {report.get('config') or 'the config'}: "
             f"{report['iters']} iterations, seed {report['seed']}, atol {report['atol']:g}",
             f"  {'iter':>5}  {'max |loss diff|':>16}  lr equal"]
    for row in report['iterations']:
        if row['max_loss_diff'] is None:
            lines.append(f"  {row['iteration']:>5}  {'(only one engine ran it)':>16}")
        else:
            lr_equal = 'yes' if row['lr_equal'] else 'NO'
            lines.append(f"  {row['iteration']:>5}  {row['max_loss_diff']:>16.3g}  {lr_equal}")
    for row in report['validations']:
        diff = 'missing in one engine' if row['max_metric_diff'] is None else \
            f"max |metric diff| {row['max_metric_diff']:.3g}"
        lines.append(f"  validation after iteration {row['after_iteration']}: {diff}")
    first = report['first_divergence']
    if first is None:
        lines.append(f"Identical within atol={report['atol']:g}.")
    else:
        lines.append(f"First divergence at iteration {first['iteration']}, {first['key']}: "
                     f"mmengine {first[REFERENCE]!r}, mm_lightning {first[OURS]!r}")
    return '\n'.join(lines) + '\n'
