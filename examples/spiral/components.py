"""A complete small task in mmengine style: dataset, model and metric, registered by name.

Three interleaved spiral arms in the plane; an MLP learns to tell them apart. The data
is generated from a fixed seed, so the example needs no download.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import torch
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, METRICS, MODELS
from torch import nn
from torch.utils.data import Dataset


@DATASETS.register_module(force=True)
class SpiralDataset(Dataset):
    """``num_arms`` noisy spiral arms; ``split`` picks a disjoint slice of one fixed draw."""

    METAINFO = dict(classes=('arm0', 'arm1', 'arm2'))

    def __init__(self, split: str = 'train', points_per_arm: int = 400, num_arms: int = 3,
                 noise: float = 0.15, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        radius = torch.linspace(0.1, 1.0, points_per_arm).repeat(num_arms)
        labels = torch.arange(num_arms).repeat_interleave(points_per_arm)
        angle = radius * 3 * math.pi + labels * 2 * math.pi / num_arms
        angle = angle + noise * torch.randn(len(angle), generator=gen)
        points = torch.stack([radius * torch.sin(angle), radius * torch.cos(angle)], dim=1)
        order = torch.randperm(len(points), generator=gen)
        cut = int(0.8 * len(order))
        keep = order[:cut] if split == 'train' else order[cut:]
        self.points, self.labels = points[keep], labels[keep]
        self.metainfo = dict(classes=tuple(f'arm{i}' for i in range(num_arms)))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return dict(inputs=self.points[index], label=self.labels[index])


@MODELS.register_module(force=True)
class SpiralClassifier(BaseModel):
    """An MLP with BatchNorm: ``loss`` mode returns losses, ``predict`` mode predictions."""

    def __init__(self, hidden: int = 64, num_classes: int = 3, depth: int = 3,
                 data_preprocessor: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        layers: List[nn.Module] = []
        width = 2
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, inputs: torch.Tensor, label: Optional[torch.Tensor] = None, mode: str = 'tensor') -> Any:
        logits = self.net(inputs)
        if mode == 'loss':
            return dict(loss_cls=nn.functional.cross_entropy(logits, label))
        if mode == 'predict':
            return [dict(pred=p, label=t) for p, t in zip(logits.argmax(-1), label)]
        return logits


@METRICS.register_module(force=True)
class SpiralAccuracy(BaseMetric):
    """Top-1 accuracy in percent."""

    default_prefix = 'spiral'

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        self.results.extend(int(s['pred'] == s['label']) for s in data_samples)

    def compute_metrics(self, results: list) -> dict:
        return dict(accuracy=100.0 * sum(results) / len(results))
