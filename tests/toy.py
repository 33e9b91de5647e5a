"""Small registered components for tests: datasets, models and metrics.

Registered with ``force=True`` so that importing this module twice (pytest, then a
config's ``custom_imports``) is harmless.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from lightning.pytorch.callbacks import Callback
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapperDict
from mmengine.registry import (
    DATA_SAMPLERS,
    DATASETS,
    FUNCTIONS,
    HOOKS,
    LOOPS,
    METRICS,
    MODELS,
    OPTIM_WRAPPER_CONSTRUCTORS,
    VISUALIZERS,
)
from mmengine.runner import EpochBasedTrainLoop, ValLoop
from mmengine.structures import BaseDataElement
from mmengine.visualization import Visualizer
from torch import nn
from torch.utils.data import Dataset


@DATASETS.register_module(force=True)
class BlobDataset(Dataset):
    """Gaussian blobs, one per class; fixed by ``seed`` and independent of global RNG."""

    METAINFO = dict(classes=('a', 'b', 'c'))

    def __init__(self, size: int = 64, num_features: int = 8, num_classes: int = 3, seed: int = 0,
                 metainfo: bool = True) -> None:
        gen = torch.Generator().manual_seed(seed)
        centers = torch.randn(num_classes, num_features, generator=gen) * 3
        self.labels = torch.randint(0, num_classes, (size,), generator=gen)
        self.inputs = centers[self.labels] + torch.randn(size, num_features, generator=gen)
        if metainfo:
            self.metainfo = dict(classes=tuple('abcdefghij'[:num_classes]))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return dict(inputs=self.inputs[index], label=self.labels[index], index=index)


@MODELS.register_module(force=True)
class ToyClassifier(BaseModel):
    """An MLP classifier; ``batch_norm`` and ``dropout`` exercise state and global RNG."""

    def __init__(self, num_features: int = 8, num_classes: int = 3, hidden: int = 16,
                 batch_norm: bool = False, dropout: float = 0.0, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        layers: List[nn.Module] = [nn.Linear(num_features, hidden)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden))
        layers += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, inputs: Any, label: Any = None, index: Any = None, mode: str = 'tensor') -> Any:
        inputs = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
        logits = self.net(inputs.float())
        if mode == 'loss':
            label = torch.stack(label) if isinstance(label, (list, tuple)) else label
            return dict(loss_cls=nn.functional.cross_entropy(logits, label.long()))
        if mode == 'predict':
            label = torch.stack(label) if isinstance(label, (list, tuple)) else label
            index = torch.as_tensor(index) if isinstance(index, (list, tuple)) else index
            return [dict(pred=p, label=t, index=int(i)) for p, t, i in zip(logits.argmax(-1), label, index)]
        return logits


@METRICS.register_module(force=True)
class ToyAccuracy(BaseMetric):
    """Top-1 accuracy over the samples processed (each counted once)."""

    default_prefix = 'toy'

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            self.results.append(dict(correct=int(sample['pred'] == sample['label']), index=sample['index']))

    def compute_metrics(self, results: list) -> dict:
        return dict(accuracy=100.0 * sum(r['correct'] for r in results) / len(results),
                    count=len(results), index_sum=sum(r['index'] for r in results))


@MODELS.register_module(force=True)
class ToyGAN(BaseModel):
    """Two sub-networks updated by their own optimizers inside a custom ``train_step``."""

    def __init__(self, num_features: int = 8, data_preprocessor: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        self.generator = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, num_features))
        self.discriminator = nn.Sequential(nn.Linear(num_features, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, inputs: Any, label: Any = None, index: Any = None, mode: str = 'tensor') -> Any:
        noise = torch.randn(len(inputs), 4)
        return self.generator(noise)

    def train_step(self, data: Any, optim_wrapper: OptimWrapperDict) -> Dict[str, torch.Tensor]:
        data = self.data_preprocessor(data, True)
        real = torch.stack(data['inputs']) if isinstance(data['inputs'], list) else data['inputs']
        real = real.float()
        log_vars = {}
        with optim_wrapper['discriminator'].optim_context(self.discriminator):
            fake = self.generator(torch.randn(len(real), 4)).detach()
            d_loss = (nn.functional.softplus(-self.discriminator(real)).mean()
                      + nn.functional.softplus(self.discriminator(fake)).mean())
        optim_wrapper['discriminator'].update_params(d_loss)
        log_vars['loss_disc'] = d_loss.detach()
        with optim_wrapper['generator'].optim_context(self.generator):
            fake = self.generator(torch.randn(len(real), 4))
            g_loss = nn.functional.softplus(-self.discriminator(fake)).mean()
        optim_wrapper['generator'].update_params(g_loss)
        log_vars['loss_gen'] = g_loss.detach()
        return log_vars

    def val_step(self, data: Any) -> list:
        return []

    def test_step(self, data: Any) -> list:
        return []


@OPTIM_WRAPPER_CONSTRUCTORS.register_module(force=True)
class ToyGANOptimWrapperConstructor:
    """One optimizer wrapper per sub-network (generator, discriminator)."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        self.optim_wrapper_cfg = optim_wrapper_cfg

    def __call__(self, model: nn.Module) -> OptimWrapperDict:
        wrappers = {}
        for name in ('generator', 'discriminator'):
            constructor = DefaultOptimWrapperConstructor(dict(self.optim_wrapper_cfg[name]))
            wrappers[name] = constructor(getattr(model, name))
        return OptimWrapperDict(**wrappers)


@HOOKS.register_module(force=True)
class RecordingHook(Hook):
    """Records every stage it sees with the arguments that identify the moment."""

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self.events: List[tuple] = []

    def _record(self, stage: str, runner: Any, **kwargs: Any) -> None:
        self.events.append((stage, runner.epoch, runner.iter, kwargs.get('batch_idx')))


def _make_stage(stage: str):
    def method(self: RecordingHook, runner: Any, **kwargs: Any) -> None:
        self._record(stage, runner, **kwargs)
    method.__name__ = stage
    return method


for _stage in Hook.stages:
    setattr(RecordingHook, _stage, _make_stage(_stage))


@HOOKS.register_module(force=True)
class StopAtIterHook(Hook):
    """Asks the training loop to stop once ``stop_iter`` iterations have run."""

    def __init__(self, stop_iter: int) -> None:
        self.stop_iter = stop_iter

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if runner.iter + 1 >= self.stop_iter:
            runner.train_loop.stop_training = True


class CountingCallback(Callback):
    """A plain Lightning callback, named in a config's ``custom_hooks`` as ``toy.CountingCallback``."""

    def __init__(self) -> None:
        self.batches = 0
        self.validations = 0

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.batches += 1

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self.validations += 1


@DATASETS.register_module(force=True)
class TinyImages(Dataset):
    """Images as (1, 3, 8, 8) tensors with data samples carrying their original size and path."""

    def __init__(self, size: int = 6) -> None:
        gen = torch.Generator().manual_seed(0)
        self.images = torch.rand(size, 1, 3, 8, 8, generator=gen)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        sample = BaseDataElement(metainfo=dict(ori_width=8, ori_height=8, img_path=f'/data/img_{index}.png'))
        return dict(inputs=self.images[index], data_sample=sample)


@FUNCTIONS.register_module(force=True)
def list_collate(batch: list) -> list:
    """Keeps the batch a list of samples (what NaiveVisualizationHook expects)."""
    return batch


@MODELS.register_module(force=True)
class TinyImageModel(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return []

    def test_step(self, data: list) -> list:
        return [BaseDataElement(score=float(d['inputs'].mean() * self.scale)) for d in data]


@METRICS.register_module(force=True)
class SampleCount(BaseMetric):
    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        self.results.extend(1 for _ in data_samples)

    def compute_metrics(self, results: list) -> dict:
        return dict(count=len(results))


@VISUALIZERS.register_module(force=True)
class RecordingVisualizer(Visualizer):
    """Records the data samples a hook asks it to draw."""

    def __init__(self, name: str = 'visualizer', **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.drawn: List[tuple] = []

    def add_datasample(self, name: str, image: Any, data_sample: Any = None, *args: Any, **kwargs: Any) -> None:
        self.drawn.append((name, tuple(image.shape)))


@DATASETS.register_module(force=True)
class AugmentedBlobDataset(BlobDataset):
    """Blobs with random augmentation in ``__getitem__`` (global torch, numpy and Python random state).

    ``loads`` counts the samples loaded in this process (the main one when ``num_workers=0``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loads = 0

    def __getitem__(self, index: int) -> Dict[str, Any]:
        import random

        import numpy as np
        self.loads += 1
        sample = super().__getitem__(index)
        noise = 0.1 * torch.randn(sample['inputs'].shape) + float(np.random.uniform(-0.1, 0.1))
        scale = random.choice((0.9, 1.0, 1.1))
        return dict(sample, inputs=(sample['inputs'] + noise) * scale)


@MODELS.register_module(force=True)
class BallastClassifier(ToyClassifier):
    """A ToyClassifier whose checkpoints are large (a frozen buffer of ``ballast`` floats): slow to write."""

    def __init__(self, ballast: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.register_buffer('ballast', torch.zeros(ballast))


@DATA_SAMPLERS.register_module(force=True)
class BucketBatchSampler:
    """A batch sampler that buckets indices and flushes leftovers after its last full batch, then
    empties its buckets *after* the last ``yield``: the shape of mmdet's AspectRatioBatchSampler."""

    def __init__(self, sampler: Any, batch_size: int, drop_last: bool = False) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self._buckets: List[List[int]] = [[], []]

    def __iter__(self):
        for index in self.sampler:
            bucket = self._buckets[index % 2]
            bucket.append(index)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                del bucket[:]
        left = self._buckets[0] + self._buckets[1]
        while left:
            batch, left = left[:self.batch_size], left[self.batch_size:]
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch
        self._buckets = [[], []]

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size


@HOOKS.register_module(force=True)
class ModeRecordingHook(Hook):
    """Records ``model.training`` at each validation stage (mmengine: train mode until after before_val_epoch)."""

    def __init__(self) -> None:
        self.modes: List[tuple] = []

    def _mode(self, stage: str, runner: Any) -> None:
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        self.modes.append((stage, model.training))

    def before_val(self, runner: Any) -> None:
        self._mode('before_val', runner)

    def before_val_epoch(self, runner: Any) -> None:
        self._mode('before_val_epoch', runner)

    def before_val_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        self._mode('before_val_iter', runner)

    def after_val(self, runner: Any) -> None:
        self._mode('after_val', runner)

    def before_train_epoch(self, runner: Any) -> None:
        self._mode('before_train_epoch', runner)


@LOOPS.register_module(force=True)
class CountingValLoop(ValLoop):
    """A validation loop whose ``run_iter`` adds something: a running count in the message hub."""

    def run_iter(self, idx: int, data_batch: Any) -> None:
        super().run_iter(idx, data_batch)
        self.runner.message_hub.update_scalar('val/batches_seen', idx + 1)


@LOOPS.register_module(force=True)
class TwiceValLoop(ValLoop):
    """A loop with its own ``run``: it validates twice and reports both (as mmdet's TeacherStudentValLoop)."""

    def run(self) -> dict:
        self.runner.call_hook('before_val')
        self.runner.call_hook('before_val_epoch')
        self.runner.model.eval()
        metrics = {}
        for name in ('first', 'second'):
            for idx, data_batch in enumerate(self.dataloader):
                self.run_iter(idx, data_batch)
            metrics.update({f'{name}/{k}': v for k, v in self.evaluator.evaluate(len(self.dataloader.dataset)).items()})
        self.runner.call_hook('after_val_epoch', metrics=metrics)
        self.runner.call_hook('after_val')
        return metrics


@LOOPS.register_module(force=True)
class NamedEpochLoop(EpochBasedTrainLoop):
    """A training loop subclass that keeps EpochBasedTrainLoop's iteration."""


@LOOPS.register_module(force=True)
class SkippingTrainLoop(EpochBasedTrainLoop):
    """A training loop that changes how an iteration runs."""

    def run_iter(self, idx: int, data_batch: Any) -> None:
        if idx % 2 == 0:
            super().run_iter(idx, data_batch)
