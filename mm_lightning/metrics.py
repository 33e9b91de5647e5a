"""Evaluators as ``torchmetrics.Metric`` objects, correct across processes.

An mmengine ``BaseMetric`` keeps Python results; here each result is pickled into a
``uint8`` tensor state so that torchmetrics gathers it, with its position in the
sampler's round-robin layout (rank ``r`` holds positions ``r, r+W, r+2W...``). Positions
past the dataset's end are the padding mmengine's samplers add; they are dropped, and
sorting by position restores mmengine's order, so each sample counts exactly once.
``compute_metrics`` then runs once, on rank 0, and its result is broadcast, as in mmengine.

Native torchmetrics metrics (``type='torchmetrics.classification.MulticlassAccuracy'``)
take their ``preds``/``target`` from the model's outputs (see :class:`TorchMetricAdapter`).
"""
from __future__ import annotations

import pickle
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torchmetrics
from mmengine.dist import broadcast_object_list
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.evaluator.metric import _to_cpu
from mmengine.registry import METRICS
from mmengine.structures import BaseDataElement
from torch import nn

from .config import ConfigError
from .registry import build, names_subclass_of, resolve_type

#: Where a native torchmetrics metric finds its inputs in each output, in search order.
DEFAULT_INPUT_KEYS: Dict[str, Tuple[str, ...]] = {
    'preds': ('pred_score', 'pred_label', 'pred', 'preds', 'pred_scores', 'logits'),
    'target': ('gt_label', 'gt_score', 'label', 'target', 'gt'),
}


def _rank_and_world() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _PositionTracker:
    """Global sample positions of this rank in a padded round-robin sampler layout."""

    def __init__(self, dataset_size: Optional[int] = None) -> None:
        self.seen = 0
        self.dataset_size = dataset_size

    def next_positions(self, count: int) -> torch.Tensor:
        rank, world = _rank_and_world()
        positions = rank + world * torch.arange(self.seen, self.seen + count)
        self.seen += count
        return positions

    def keep(self, positions: torch.Tensor) -> torch.Tensor:
        """Mask of real (not padding) samples."""
        if self.dataset_size is None:
            return torch.ones_like(positions, dtype=torch.bool)
        return positions < self.dataset_size


class _EvaluationMetric(torchmetrics.Metric):
    """One metric of an evaluation over a known number of samples (padding recognised)."""

    full_state_update = False

    def __init__(self, metric: Any, **kwargs: Any) -> None:
        super().__init__(compute_with_cache=False, **kwargs)
        self.metric = metric
        self._tracker = _PositionTracker()

    @property
    def name(self) -> str:
        return type(self.metric).__name__

    def start(self, dataset_size: Optional[int]) -> None:
        """Begin an evaluation of ``dataset_size`` samples (``None``: named at :meth:`finish`)."""
        self.reset()
        self._tracker = _PositionTracker(dataset_size)

    def finish(self, dataset_size: Optional[int]) -> None:
        """The evaluated dataset's size, when :meth:`start` could not name it."""
        if self._tracker.dataset_size is None:
            self._tracker.dataset_size = dataset_size


class BaseMetricAdapter(_EvaluationMetric):
    """An mmengine ``BaseMetric`` whose ``results`` are torchmetrics state."""

    def __init__(self, metric: BaseMetric) -> None:
        if metric.collect_device not in ('cpu', 'gpu'):
            raise ConfigError(f'{type(metric).__name__}.collect_device: expected cpu or gpu, '
                              f'got {metric.collect_device!r}')
        super().__init__(metric, sync_on_compute=True)
        self.add_state('encoded', default=[], dist_reduce_fx='cat')
        self.add_state('lengths', default=[], dist_reduce_fx='cat')
        self.add_state('positions', default=[], dist_reduce_fx='cat')

    def start(self, dataset_size: Optional[int]) -> None:
        super().start(dataset_size)
        # Typed empty entries: a rank left with no sample still gathers tensors of the right dtype.
        self.encoded.append(torch.empty(0, dtype=torch.uint8, device=self.device))
        self.lengths.append(torch.empty(0, dtype=torch.long, device=self.device))
        self.positions.append(torch.empty(0, dtype=torch.long, device=self.device))

    def update(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        before = len(self.metric.results)
        self.metric.process(data_batch, data_samples)
        new = self.metric.results[before:]
        del self.metric.results[before:]
        if not new:
            return
        positions = self._tracker.next_positions(len(new))
        keep = self._tracker.keep(positions)
        blobs = [pickle.dumps(_to_cpu(item)) for item, kept in zip(new, keep.tolist()) if kept]
        if not blobs:
            return
        self.encoded.append(torch.frombuffer(bytearray(b''.join(blobs)), dtype=torch.uint8).to(self.device))
        self.lengths.append(torch.tensor([len(b) for b in blobs], dtype=torch.long, device=self.device))
        self.positions.append(positions[keep].to(self.device))

    def _decoded_results(self) -> List[Any]:
        """The results of all ranks, padding dropped, in mmengine's order."""
        encoded, lengths, positions = (torch.cat(s) if isinstance(s, list) else s
                                       for s in (self.encoded, self.lengths, self.positions))
        if lengths.numel() == 0:
            return []
        data = encoded.cpu().numpy().tobytes()
        offsets = [0] + torch.cumsum(lengths.cpu(), 0).tolist()
        items = [pickle.loads(data[start:end]) for start, end in zip(offsets[:-1], offsets[1:])]
        positions = positions.cpu()
        order = torch.argsort(positions, stable=True).tolist()
        kept = self._tracker.keep(positions)  # padding named only at finish() is dropped here
        return [items[i] for i in order if kept[i]]

    def compute(self) -> Dict[str, Any]:
        rank, _ = _rank_and_world()
        results: List[Optional[dict]] = [None]
        if rank == 0:
            metrics = self.metric.compute_metrics(self._decoded_results())
            prefix = self.metric.prefix
            results = [{f'{prefix}/{k}' if prefix else k: v for k, v in metrics.items()}]
        broadcast_object_list(results)
        return results[0]


class TorchMetricAdapter(_EvaluationMetric):
    """A native torchmetrics metric fed from model outputs and data samples.

    ``input_keys=dict(preds=..., target=...)`` names the fields to read; by default the
    first of :data:`DEFAULT_INPUT_KEYS` present is used. Outputs may be data samples
    (``DataSample``-style objects or dicts: one per sample), a ``(preds, target)`` tuple,
    or a tensor of predictions (targets then come from the batch's data samples).
    ``name`` is the key of the result (default: the metric's class name); ``prefix``
    is prepended as mmengine does.
    """

    def __init__(self, metric: torchmetrics.Metric, name: Optional[str] = None, prefix: Optional[str] = None,
                 input_keys: Optional[Mapping[str, str]] = None) -> None:
        unknown = set(input_keys or {}) - set(DEFAULT_INPUT_KEYS)
        if unknown:
            raise ConfigError(f'input_keys: unknown entries {sorted(unknown)}; use preds and target')
        super().__init__(metric)
        self.result_name = name or type(metric).__name__
        self.prefix = prefix
        self.input_keys = dict(input_keys or {})
        self.dataset_meta: Optional[dict] = None

    def start(self, dataset_size: Optional[int]) -> None:
        super().start(dataset_size)
        self.metric.reset()

    def update(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        preds, target = self._inputs(data_batch, data_samples)
        keep = self._tracker.keep(self._tracker.next_positions(len(preds)))
        if not bool(keep.all()):
            preds, target = preds[keep.to(preds.device)], target[keep.to(target.device)]
        if len(preds):
            self.metric.update(preds.to(self.device), target.to(self.device))

    def compute(self) -> Dict[str, Any]:
        value = self.metric.compute()
        value = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
        name = f'{self.prefix}/{self.result_name}' if self.prefix else self.result_name
        return {name: value}

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


class ConfigEvaluator(nn.Module):
    """mmengine's ``Evaluator`` API (``process``/``evaluate``/``dataset_meta``) over torchmetrics.

    It is a module so the Trainer moves the metric states to the right device.
    """

    def __init__(self, metrics: Sequence[torchmetrics.Metric]) -> None:
        super().__init__()
        self.metrics = nn.ModuleList(metrics)
        self._dataset_meta: Optional[dict] = None
        self._started = False

    @property
    def dataset_meta(self) -> Optional[dict]:
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta: Optional[dict]) -> None:
        self._dataset_meta = dataset_meta
        for metric in self.metrics:
            target = metric.metric if isinstance(metric, BaseMetricAdapter) else metric
            target.dataset_meta = dataset_meta

    def start(self, dataset_size: Optional[int]) -> None:
        """Begin an evaluation of ``dataset_size`` samples (states cleared; padding past it is dropped)."""
        for metric in self.metrics:
            metric.start(dataset_size)
        self._started = True

    def process(self, data_samples: Sequence[Any], data_batch: Any = None) -> None:
        if not self._started:  # a loop that runs itself names the size only when it evaluates
            self.start(None)
        if isinstance(data_samples, list):  # as mmengine's Evaluator: data samples become dicts
            data_samples = [s.to_dict() if isinstance(s, BaseDataElement) else s for s in data_samples]
        for metric in self.metrics:
            metric.update(data_batch, data_samples)

    def evaluate(self, size: Optional[int] = None) -> Dict[str, Any]:
        """Metrics of the evaluation; the same key from two metrics is an error, as in mmengine.

        As mmengine's, the processed results are cleared: the next ``process`` starts a new evaluation.
        """
        if not self._started:
            self.start(size)
        self._started = False
        results: Dict[str, Any] = {}
        for metric in self.metrics:
            metric.finish(size)
            for name, value in metric.compute().items():
                if name in results:
                    raise ValueError(f'There are multiple evaluation results with the same metric name {name}. '
                                     'Please make sure all metrics have different prefixes.')
                results[name] = value
        return results


def _build_metric(entry: Any, key: str) -> torchmetrics.Metric:
    if isinstance(entry, (BaseMetricAdapter, TorchMetricAdapter)):
        return entry
    if isinstance(entry, BaseMetric):
        return BaseMetricAdapter(entry)
    if isinstance(entry, torchmetrics.Metric):
        return TorchMetricAdapter(entry)
    if not isinstance(entry, Mapping):
        raise ConfigError(f'{key}: expected a metric config dict or a metric, got {entry!r}')
    if names_subclass_of(entry, torchmetrics.Metric):
        kwargs = dict(entry)
        cls = resolve_type(kwargs.pop('type'))
        adapter = {name: kwargs.pop(name) for name in ('name', 'prefix', 'input_keys') if name in kwargs}
        try:
            metric = cls(**kwargs)
        except TypeError as err:
            raise ConfigError(f'{key}: {cls.__name__}: {err}') from err
        return TorchMetricAdapter(metric, **adapter)
    metric = build(METRICS, entry, key)
    if not isinstance(metric, BaseMetric):
        raise ConfigError(f'{key}: {type(metric).__name__} is not an mmengine BaseMetric')
    return BaseMetricAdapter(metric)


def build_evaluator(evaluator: Any, key: str) -> ConfigEvaluator:
    """A :class:`ConfigEvaluator` from any form mmengine's ``build_evaluator`` accepts.

    A built ``Evaluator``, ``dict(metrics=...)``, one metric config, a list of them, or
    built metrics (mmengine ``BaseMetric`` or torchmetrics ``Metric``).
    """
    if isinstance(evaluator, ConfigEvaluator):
        return evaluator
    if isinstance(evaluator, Evaluator):
        if type(evaluator) is not Evaluator:
            raise ConfigError(f'{key}: custom Evaluator {type(evaluator).__name__} is not supported; '
                              'give its metrics instead')
        entries: Sequence[Any] = evaluator.metrics
    elif isinstance(evaluator, Mapping) and 'metrics' in evaluator:
        extra = {k: v for k, v in evaluator.items() if k not in ('metrics', 'type')}
        if evaluator.get('type', 'Evaluator') not in ('Evaluator', Evaluator) or extra:
            raise ConfigError(f'{key}: custom evaluator types and options are not supported '
                              f'(got type={evaluator.get("type")!r}, options {sorted(extra)}); list the metrics')
        metrics = evaluator['metrics']
        entries = metrics if isinstance(metrics, (list, tuple)) else [metrics]
    elif isinstance(evaluator, (list, tuple)):
        entries = evaluator
    else:
        entries = [evaluator]
    return ConfigEvaluator([_build_metric(entry, f'{key}[{i}]' if len(entries) > 1 else key)
                            for i, entry in enumerate(entries)])
