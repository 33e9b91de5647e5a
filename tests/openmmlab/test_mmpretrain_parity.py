"""mmpretrain's shipped ResNet-18 CIFAR-10 config: both runners agree."""
import os

from parity import assert_same_checkpoint, assert_same_run, run_both

from .available import requires
from .shipped import override
from .small_configs import cifar10_config

pytestmark = requires('mmpretrain.datasets', 'mmpretrain.models')


def test_resnet18_cifar10(cifar10_unchecked, tmp_path):
    """Random crop and flip, SGD with momentum, a step at epoch 2, accuracy after every epoch."""
    cfg = override(cifar10_config(cifar10_unchecked), {'train_cfg.max_epochs': 3, 'param_scheduler.milestones': [2]})
    reference, ours = run_both(cfg, tmp_path)
    assert len(reference.iterations) == 3 * 3  # 40 images in batches of 16
    assert len(reference.val_metrics) == 3 and 'accuracy/top1' in reference.val_metrics[0]
    assert_same_run(reference, ours)
    for epoch in (1, 2, 3):
        assert_same_checkpoint(os.path.join(reference.runner.work_dir, f'epoch_{epoch}.pth'),
                               os.path.join(ours.runner.work_dir, f'epoch_{epoch}.pth'))
