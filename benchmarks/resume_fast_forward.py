"""Resuming an iteration-based run deep into training: mm_lightning against mmengine's Runner.

mmengine resumes an iteration-based run by loading and decoding every batch it already
trained on (``IterBasedTrainLoop`` calls ``next()`` ``iter`` times). Without loader workers
mm_lightning skips at the sampler instead: the skipped indices are drawn, nothing is loaded,
and the global random state is restored from the checkpoint, so the run is identical.

A short run writes a checkpoint; its counters (and mm_lightning's data position) are moved
to ``--at`` as if it had trained that long. Each engine then resumes from it with the same
config (PNG images decoded and randomly flipped and cropped in ``__getitem__``); the time
from ``train()`` to the first resumed iteration is measured, alternating engines, and the
medians of ``--repeats`` runs are reported.

    python benchmarks/resume_fast_forward.py [--at 20000] [--repeats 3] [--json OUT]

``--json`` also writes every run's ``resume_s``, in repeat order, under ``runs.mmengine`` and
``runs.mm_lightning``.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmengine.hooks import Hook  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.registry import DATASETS, MODELS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

from mm_lightning import FlexibleRunner  # noqa: E402
from mm_lightning.state.serialization import read, write  # noqa: E402

IMAGES, SIZE, CROP, BATCH = 64, 64, 48, 8


@DATASETS.register_module(force=True)
class PngFolder(Dataset):
    """PNG files decoded with PIL, randomly flipped and cropped (global NumPy random state)."""

    def __init__(self, root: str) -> None:
        self.files = sorted(os.path.join(root, name) for name in os.listdir(root) if name.endswith('.png'))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        image = np.asarray(Image.open(self.files[index]).convert('RGB'), dtype=np.float32) / 255.0
        if np.random.rand() < 0.5:
            image = image[:, ::-1]
        top, left = np.random.randint(0, SIZE - CROP + 1, size=2)
        image = image[top:top + CROP, left:left + CROP]
        return dict(inputs=torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), label=index % 10)


@MODELS.register_module(force=True)
class TinyConvNet(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(8, 10))

    def forward(self, inputs: Any, label: Any = None, mode: str = 'tensor') -> Any:
        logits = self.net(torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs)
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(logits, torch.as_tensor(label)))
        return logits


class FirstIteration(Hook):
    """Records when, and at which iteration, training continues after the resume."""

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self.at = None
        self.iteration = None

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        if self.at is None:
            self.at, self.iteration = time.perf_counter(), runner.iter


def write_images(root: str) -> None:
    gen = np.random.default_rng(0)
    for index in range(IMAGES):
        pixels = gen.integers(0, 255, size=(SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(root, f'{index:03d}.png'))


def config(root: str, max_iters: int) -> dict:
    return dict(
        model=dict(type='TinyConvNet'),
        train_dataloader=dict(dataset=dict(type='PngFolder', root=root), sampler=dict(type='InfiniteSampler'),
                              batch_size=BATCH, num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        param_scheduler=dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=100),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1000),
                           checkpoint=dict(type='CheckpointHook', interval=10, by_epoch=False)),
        randomness=dict(seed=0))


def checkpoints_at(root: str, work: str, at: int) -> Dict[str, str]:
    """A real 10-iteration checkpoint with its counters moved to ``at`` (one per engine's needs)."""
    FlexibleRunner.from_cfg(dict(config(root, 10), work_dir=os.path.join(work, 'source'),
                                 experiment_name='ff_source')).train()
    checkpoint = read(os.path.join(work, 'source', 'iter_10.pth'))
    checkpoint['meta']['iter'] = at
    ours = checkpoint['mm_lightning']
    ours['loop'].update(iter=at, optimizer_steps=at)
    for rank in ours['ranks']:  # each process's own position (one here)
        rank['data']['train'].update(drawn=at, in_pass=at)
    paths = dict(mm_lightning=os.path.join(work, 'ours.pth'), mmengine=os.path.join(work, 'mmengine.pth'))
    write(checkpoint, paths['mm_lightning'])
    plain = {key: value for key, value in copy.deepcopy(checkpoint).items() if key != 'mm_lightning'}
    plain['message_hub'] = dict(log_scalars={}, runtime_info={}, resumed_keys={})  # loads without pickles
    write(plain, paths['mmengine'])
    return paths


def resume_seconds(engine: str, root: str, work: str, checkpoint: str, at: int, run: int) -> float:
    runner_cls = {'mm_lightning': FlexibleRunner, 'mmengine': Runner}[engine]
    cfg = dict(config(root, at + 3), work_dir=os.path.join(work, f'{engine}_{run}'),
               experiment_name=f'ff_{engine}_{run}', resume=True, load_from=checkpoint)
    runner = runner_cls.from_cfg(cfg)
    first = FirstIteration()
    runner.register_hook(first)
    start = time.perf_counter()
    runner.train()
    assert first.iteration == at, (engine, first.iteration)
    return first.at - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--at', type=int, default=20000, help='the iteration the run resumes at')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--json', metavar='OUT', help="also write every run's figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger('lightning.pytorch').setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as work:
        root = os.path.join(work, 'images')
        os.makedirs(root)
        write_images(root)
        paths = checkpoints_at(root, work, args.at)
        MMLogger.get_current_instance().setLevel(logging.ERROR)
        times: Dict[str, List[float]] = {engine: [] for engine in paths}
        for run in range(args.repeats):
            for engine, path in paths.items():
                times[engine].append(resume_seconds(engine, root, work, path, args.at, run))
    ours, theirs = (statistics.median(times[engine]) for engine in ('mm_lightning', 'mmengine'))
    print(f'\nResume at iteration {args.at} of an iteration-based config (PNG decode + random flip/crop, '
          f'batch {BATCH}, no loader workers), median of {args.repeats}:\n')
    print('| engine | time from train() to the first resumed iteration | vs mmengine Runner |')
    print('|---|---|---|')
    print(f'| mmengine Runner (loads every skipped batch) | {theirs:.2f} s | 1.00x |')
    print(f'| **mm_lightning** (skips at the sampler) | {ours:.2f} s | {ours / theirs:.3f}x |')
    if args.json:
        runs = {engine: [dict(resume_s=value) for value in times[engine]] for engine in ('mmengine', 'mm_lightning')}
        with open(args.json, 'w') as f:
            json.dump(dict(script='resume_fast_forward', repeats=args.repeats, at=args.at, batch_size=BATCH,
                           runs=runs), f, indent=2)
            f.write('\n')


if __name__ == '__main__':
    main()
