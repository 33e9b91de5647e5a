"""Evaluators: mmengine's own, built as its Runner builds them, with native torchmetrics beside.

``val_evaluator``/``test_evaluator`` become the object mmengine's ``Runner.build_evaluator``
makes: a built ``Evaluator`` (or subclass) as it is, ``dict(type=..., metrics=...)`` from the
``EVALUATOR`` registry in the config's scope (``MultiDatasetsEvaluator``, mmagic's
``Evaluator``...), a metric dict or a list in an ``Evaluator``. Metrics therefore keep their
results, gather them across ranks once (mmengine's ``collect_results``, where
``compute_metrics`` runs) and drop the sampler's padding exactly as under mmengine.

A config may also name a native torchmetrics metric
(``type='torchmetrics.classification.MulticlassAccuracy'``): it sits in the Evaluator as a
:class:`TorchMetricAdapter`, a ``BaseMetric`` that feeds the metric batch by batch and lets
torchmetrics synchronise its state across ranks. The Lightning side (``self.log`` of the
results, so callbacks and loggers see them) is the module's.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
import torchmetrics
from mmengine.dist import get_dist_info
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.registry import EVALUATOR, METRICS
from mmengine.structures import BaseDataElement

from mm_lightning.config.loading import ConfigError, config_error
from mm_lightning.config.registry import build, config_key, names_subclass_of, resolve_type

__all__ = ['DEFAULT_INPUT_KEYS', 'ADAPTER_OPTIONS', 'evaluator_key', 'TorchMetricAdapter', 'build_evaluator',
           'scalar_metrics']

#: Where a native torchmetrics metric finds its inputs in each output, in search order.
DEFAULT_INPUT_KEYS: Dict[str, Tuple[str, ...]] = {
    'preds': ('pred_score', 'pred_label', 'pred', 'preds', 'pred_scores', 'logits'),
    'target': ('gt_label', 'gt_score', 'label', 'target', 'gt'),
}
#: Options of a native metric entry that configure the adapter, not the torchmetrics class.
ADAPTER_OPTIONS = ('name', 'prefix', 'input_keys', 'collect_device')

#: The config key an evaluator being built comes from (loops build theirs through the runner).
_EVALUATOR_KEY: contextvars.ContextVar[str] = contextvars.ContextVar('evaluator_key', default='evaluator')


@contextlib.contextmanager
def evaluator_key(key: str) -> Iterator[None]:
    """Name ``key`` (``val_evaluator``...) in errors of evaluators built inside the block."""
    token = _EVALUATOR_KEY.set(key)
    try:
        yield
    finally:
        _EVALUATOR_KEY.reset(token)


class TorchMetricAdapter(BaseMetric):
    """A native torchmetrics metric as an mmengine metric, fed from model outputs and data samples.

    ``input_keys=dict(preds=..., target=...)`` names the fields to read; by default the
    first of :data:`DEFAULT_INPUT_KEYS` present is used. Outputs may be data samples
    (``DataSample``-style objects or dicts: one per sample), a ``(preds, target)`` tuple,
    or a tensor of predictions (targets then come from the batch's data samples).
    ``name`` is the key of the result (default: the metric's class name); ``prefix``
    is prepended as mmengine does.

    The metric is updated batch by batch on every rank and computed by torchmetrics, which
    synchronises its state. mmengine's samplers pad each rank to the same length with
    samples from the start of the dataset; at most each rank's last sample is padding, so
    the last batch is held back until ``evaluate`` names the dataset's size.
    """

    def __init__(self, metric: torchmetrics.Metric, name: Optional[str] = None, prefix: Optional[str] = None,
                 input_keys: Optional[Mapping[str, str]] = None, collect_device: str = 'cpu') -> None:
        unknown = set(input_keys or {}) - set(DEFAULT_INPUT_KEYS)
        if unknown:
            raise ConfigError(f'input_keys: unknown entries {sorted(unknown)}; use preds and target')
        super().__init__(collect_device=collect_device, prefix=prefix or '')
        self.metric = metric
        self.result_name = name or type(metric).__name__
        self.input_keys = dict(input_keys or {})
        self._seen = 0  # samples processed on this rank in this evaluation
        self._held: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None

    @property
    def name(self) -> str:
        return type(self.metric).__name__

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        preds, target = self._inputs(data_batch, data_samples)
        rank, world = get_dist_info()
        positions = rank + world * torch.arange(self._seen, self._seen + len(preds))
        self._seen += len(preds)
        self._release()
        self._held = (preds, target, positions)

    def evaluate(self, size: int) -> dict:
        """The metric over the ``size`` samples of the dataset (padding dropped), on every rank."""
        self._release(size)
        value = self.metric.compute()
        self.metric.reset()
        self._seen = 0
        value = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
        return {f'{self.prefix}/{self.result_name}' if self.prefix else self.result_name: value}

    def compute_metrics(self, results: list) -> dict:
        """Not used: :meth:`evaluate` computes through torchmetrics."""
        return {}

    def _release(self, size: Optional[int] = None) -> None:
        """Update the metric with the held batch; with ``size``, its padding left out."""
        if self._held is None:
            return
        preds, target, positions = self._held
        self._held = None
        if size is not None:
            keep = positions < size
            preds, target = preds[keep.to(preds.device)], target[keep.to(target.device)]
        if len(preds):
            if self.metric.device != preds.device:
                self.metric.to(preds.device)
            self.metric.update(preds, target.to(preds.device))

    # -- finding inputs ----------------------------------------------------------------------
    def _inputs(self, data_batch: Any, outputs: Sequence[Any]) -> Tuple[torch.Tensor, torch.Tensor]:
        if isinstance(outputs, tuple) and len(outputs) == 2 and all(isinstance(o, torch.Tensor) for o in outputs):
            return outputs
        if isinstance(outputs, torch.Tensor):
            samples = data_batch.get('data_samples') if isinstance(data_batch, Mapping) else None
            if samples is None:
                raise ConfigError(f'{self.name}: outputs are a tensor of predictions, but the batch has no '
                                  '`data_samples` to take targets from')
            return outputs, self._stack(samples, 'target')
        return self._stack(outputs, 'preds'), self._stack(outputs, 'target')

    def _stack(self, samples: Sequence[Any], role: str) -> torch.Tensor:
        values = [self._field(sample, role) for sample in samples]
        values = [v if isinstance(v, torch.Tensor) else torch.as_tensor(v) for v in values]
        return torch.stack([v.squeeze(0) if v.ndim == 1 and v.numel() == 1 else v for v in values])

    def _field(self, sample: Any, role: str) -> Any:
        wanted = (self.input_keys[role],) if role in self.input_keys else DEFAULT_INPUT_KEYS[role]
        for key in wanted:
            value = _get(sample, key)
            if value is not None:
                return value
        raise ConfigError(f'{self.name}: no {role!r} input in the model outputs; looked for {list(wanted)}, '
                          f'found {_keys(sample)}. Set input_keys=dict({role}=...) in the evaluator config.')


def _get(sample: Any, key: str) -> Any:
    value = sample.get(key) if isinstance(sample, Mapping) else getattr(sample, key, None)
    if isinstance(value, BaseDataElement) and 'label' in value:  # mmengine's LabelData
        return value.label
    return value


def _keys(sample: Any) -> List[str]:
    if isinstance(sample, Mapping):
        return sorted(sample)
    if isinstance(sample, BaseDataElement):
        return sorted(sample.keys())
    return [type(sample).__name__]


def _native(entry: Any, key: str) -> Any:
    """A native torchmetrics entry (built, a class or a dotted name) as a :class:`TorchMetricAdapter`;
    other entries as they are."""
    if isinstance(entry, torchmetrics.Metric):
        return TorchMetricAdapter(entry)
    if not (isinstance(entry, Mapping) and names_subclass_of(entry, torchmetrics.Metric)):
        return entry
    kwargs = dict(entry)
    cls = resolve_type(kwargs.pop('type'))
    adapter = {name: kwargs.pop(name) for name in ADAPTER_OPTIONS if name in kwargs}
    try:
        metric = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise config_error(f'{key}: {cls.__name__}: {err}', type(err)) from err
    return TorchMetricAdapter(metric, **adapter)


def _metric(entry: Any, key: str) -> Any:
    """One entry of a metric list: a built metric as it is, a config from ``METRICS`` (or torchmetrics)."""
    entry = _native(entry, key)
    return build(METRICS, entry, key) if isinstance(entry, Mapping) else entry


def build_evaluator(evaluator: Any, key: Optional[str] = None) -> Evaluator:
    """mmengine's ``Runner.build_evaluator``, with native torchmetrics metrics and errors that name ``key``.

    A built ``Evaluator`` is returned as it is; ``dict(metrics=...)`` is built from the
    ``EVALUATOR`` registry (``type`` defaults to ``Evaluator``); a metric dict or a list of
    metrics becomes an ``Evaluator``.
    """
    key = key or _EVALUATOR_KEY.get()
    if isinstance(evaluator, Evaluator):
        return evaluator
    if isinstance(evaluator, Mapping) and 'metrics' in evaluator:
        cfg = dict(evaluator)
        cfg.setdefault('type', 'Evaluator')
        metrics = cfg['metrics']
        cfg['metrics'] = ([_native(m, f'{key}.metrics[{i}]') for i, m in enumerate(metrics)]
                          if isinstance(metrics, (list, tuple)) else _native(metrics, f'{key}.metrics'))
        return build(EVALUATOR, cfg, key)
    if isinstance(evaluator, Mapping):
        with config_key(key):
            return Evaluator(_metric(evaluator, key))
    if isinstance(evaluator, (list, tuple)):
        with config_key(key):
            return Evaluator([_metric(entry, f'{key}[{i}]') for i, entry in enumerate(evaluator)])
    raise config_error(f'{key}: evaluator should be one of dict, list of dict, and Evaluator, but got '
                       f'{evaluator!r}', TypeError)


def scalar_metrics(metrics: Mapping[str, Any]) -> Dict[str, float]:
    """The entries of an evaluation's metrics that Lightning can log (numbers and one-element tensors)."""
    scalars = {}
    for name, value in metrics.items():
        if getattr(value, 'ndim', 0) != 0 or isinstance(value, (str, bytes, bool)):
            continue
        try:
            scalars[name] = float(value)
        except (TypeError, ValueError):
            continue
    return scalars
