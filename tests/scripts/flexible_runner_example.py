"""mmengine's own example for FlexibleRunner, run on mm_lightning with its import line changed.

    [torchrun --nproc_per_node=2] tests/scripts/flexible_runner_example.py OUT [--resume CHECKPOINT]
        [-- --use-fsdp | --use-deepspeed]

The example (``examples/distributed_training_with_flexible_runner.py`` of the mmengine repository,
unchanged in ``../shared/mmengine-tests/examples/``) trains torchvision's resnet50 on CIFAR-10. Here its
``from mmengine.runner._flexible_runner import FlexibleRunner`` becomes ``from mm_lightning import
FlexibleRunner`` and, on a machine without a GPU, as that directory's README says: CIFAR-10 is a
synthetic dataset object of the same kind (PIL images and labels from a fixed seed, ``SIZE`` training
images, half as many test images; no download), and mixed precision is off: ``AmpOptimWrapper`` is a
plain ``OptimWrapper`` (mmengine's needs CUDA, Lightning's float16 AMP too) and the DeepSpeed config's
``fp16`` section is disabled (DeepSpeed's engine has float16 on a CPU only where oneDNN has it; its
bfloat16, the example's commented-out alternative, keeps BatchNorm's statistics in float32 beside
bfloat16 weights, which torch's CPU kernel refuses). ``--as-is`` keeps the precision as written. Nothing
else of it changes: run from OUT, it writes its checkpoints to OUT/work_dirs.

What it did is recorded from outside: the runner class the example builds is mm_lightning's with a hook
that appends each rank's losses and LR per iteration and its metrics per validation to
OUT/records_rank<r>.jsonl, and each rank's final weights and buffers go to OUT/final_rank<r>.pt.
``--resume`` makes the runner resume from a checkpoint (``resume=CHECKPOINT``). The example keeps a
checkpoint of every epoch (300 MB each: resnet50 and AdamW's state); ``--keep N`` removes each but
``epoch_N.pth`` once the next is written, so a test holds one.
"""
import argparse
import glob
import os
import shutil
import sys
import types

import numpy as np
import torch
import torchvision
from mmengine.hooks import Hook
from PIL import Image
from records import Recorder, full_state

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.normpath(os.path.join(HERE, '..', '..', '..', 'shared', 'mmengine-tests', 'examples',
                                        'distributed_training_with_flexible_runner.py'))
IMPORT = 'from mmengine.runner._flexible_runner import FlexibleRunner'
RANK = int(os.environ.get('RANK', 0))
#: Training images of the synthetic CIFAR-10 (test images: half as many).
SIZE = 32


class SyntheticCIFAR10(torch.utils.data.Dataset):
    """``torchvision.datasets.CIFAR10``'s constructor and items, with synthetic 32x32 RGB images."""

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        generator = np.random.default_rng(0 if train else 1)
        size = SIZE if train else SIZE // 2
        self.data = generator.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8)
        self.targets = generator.integers(0, 10, size).tolist()
        self.transform, self.target_transform = transform, target_transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        image, target = Image.fromarray(self.data[index]), self.targets[index]
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target


class Pruner(Hook):
    """Remove the checkpoints a test does not resume from (after CheckpointHook has written the next)."""

    priority = 'LOWEST'

    def __init__(self, keep):
        self.keep = f'epoch_{keep}.pth'

    def after_train_epoch(self, runner):
        if RANK != 0:
            return
        for path in glob.glob(os.path.join(runner.work_dir, 'epoch_*.pth')):
            if os.path.basename(path) != self.keep and not os.path.samefile(path, _last(runner.work_dir)):
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _last(work_dir):
    with open(os.path.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


#: The example's mixed precision: AmpOptimWrapper (twice), and its DeepSpeed config's fp16 section.
AMP, FP16 = "type='AmpOptimWrapper'", 'fp16=dict(\n                enabled=True,'


def example_module(out, resume, keep, as_is):
    """The example with its import changed (and mixed precision off, unless ``as_is``), its runner recording
    into ``out``."""
    with open(EXAMPLE) as f:
        source = f.read()
    assert source.count(IMPORT) == 1, f'{EXAMPLE}: the import line to change is not there once'
    source = source.replace(IMPORT, 'from mm_lightning import FlexibleRunner')
    if not as_is:
        assert source.count(AMP) == 2 and source.count(FP16) == 1, f'{EXAMPLE}: its mixed precision changed'
        source = source.replace(AMP, "type='OptimWrapper'").replace(FP16, FP16.replace('True', 'False'))
    module = types.ModuleType('distributed_training_with_flexible_runner')
    module.__file__ = EXAMPLE
    exec(compile(source, EXAMPLE, 'exec'), module.__dict__)

    class RecordingRunner(module.FlexibleRunner):
        last = None

        def __init__(self, *args, **kwargs):
            if resume:
                kwargs['resume'] = resume
            super().__init__(*args, **kwargs)
            self.register_hook(Recorder(os.path.join(out, f'records_rank{RANK}.jsonl')))
            if keep is not None:
                self.register_hook(Pruner(keep))
            RecordingRunner.last = self

    module.FlexibleRunner = RecordingRunner
    return module, RecordingRunner


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('out')
    parser.add_argument('--resume')
    parser.add_argument('--keep', type=int, help='the one epoch whose checkpoint to keep')
    parser.add_argument('--as-is', action='store_true', help='keep the mixed precision as written')
    own, example_args = (sys.argv[1:sys.argv.index('--')], sys.argv[sys.argv.index('--') + 1:]) \
        if '--' in sys.argv else (sys.argv[1:], [])
    args = parser.parse_args(own)
    out, resume = os.path.abspath(args.out), args.resume and os.path.abspath(args.resume)
    os.makedirs(out, exist_ok=True)
    os.chdir(out)  # the example writes ./work_dirs and reads ./data
    torchvision.datasets.CIFAR10 = SyntheticCIFAR10
    module, runner_class = example_module(out, resume, args.keep, args.as_is)
    sys.argv = [EXAMPLE, *example_args]
    module.main()
    runner = runner_class.last
    model = runner.model.module if hasattr(runner.model, 'module') else runner.model
    torch.save(full_state(model), os.path.join(out, f'final_rank{RANK}.pt'))


if __name__ == '__main__':
    main()
