"""mmaction2 1.2's shipped TSN (optical-flow rawframes) and TSM (videos) configs: both runners agree."""
import os

import pytest
from parity import assert_same_checkpoint, assert_same_run, run_both

from . import compat
from .available import requires
from .shipped import override
from .small_configs_tasks import tsm_r50_video_config, tsn_flow_rawframes_config

compat.mmaction()
pytestmark = requires('mmaction.datasets', 'mmaction.models', 'mmaction.evaluation')


def test_tsn_r50_flow_rawframes(flow_rawframes_root, tmp_path):
    """TSN on ``RawframeDataset``: 3 segments of 5 stacked flow frames (``x_/y_%05d.jpg``), random resized
    crops and flips, ResNet-50 on 10 channels, SGD with gradient clipping, a step at epoch 2, accuracy after
    every epoch; testing on 25 clips x ten crops."""
    cfg = override(tsn_flow_rawframes_config(flow_rawframes_root), {
        'train_cfg.max_epochs': 3, 'train_cfg.val_interval': 1,
        'param_scheduler.0.end': 3, 'param_scheduler.0.milestones': [2]})
    reference, ours = run_both(cfg, tmp_path, test=True)
    assert len(reference.iterations) == 3 * 2 and len(reference.val_metrics) == 3  # 4 clips, batches of 2
    assert 'acc/top1' in reference.val_metrics[0]
    assert_same_run(reference, ours)
    assert ours.test_metrics == reference.test_metrics
    # interval 5: only the last epoch is saved
    assert_same_checkpoint(os.path.join(reference.runner.work_dir, 'epoch_3.pth'),
                           os.path.join(ours.runner.work_dir, 'epoch_3.pth'))


@requires('decord')
def test_tsm_r50_videos_tsm_optim_constructor(videos_root, torchvision_resnet50_file, tmp_path):
    """TSM on ``VideoDataset`` (decord): 8 segments, temporal shift in ResNet-50 initialised from 2D
    torchvision weights, ``TSMOptimWrapperConstructor`` (mmaction scope: 5x LR for the classifier, no decay on
    BN), linear warmup per epoch then a step; testing on ten crops."""
    cfg = override(tsm_r50_video_config(videos_root), {
        'model.backbone.pretrained': torchvision_resnet50_file,
        'train_cfg.max_epochs': 3, 'param_scheduler.0.end': 2,
        'param_scheduler.1.end': 3, 'param_scheduler.1.milestones': [2]})
    assert cfg.optim_wrapper.constructor == 'TSMOptimWrapperConstructor' and cfg.default_scope == 'mmaction'
    reference, ours = run_both(cfg, tmp_path, test=True)
    assert len(reference.iterations) == 3 * 2 and len(reference.val_metrics) == 3
    # The constructor's seven groups (first conv, its bias, weights, biases, BN, fc, fc bias), the biases at
    # twice the base LR, the classifier at 5 (weight) and 10 (bias) times.
    lrs = reference.iterations[-1]['lr/lr']
    assert len(lrs) == 7 and lrs[5] == pytest.approx(5 * lrs[0]) and lrs[6] == pytest.approx(10 * lrs[0]), lrs
    assert_same_run(reference, ours)
    assert ours.test_metrics == reference.test_metrics
    # interval 3: epoch 3, the last
    assert_same_checkpoint(os.path.join(reference.runner.work_dir, 'epoch_3.pth'),
                           os.path.join(ours.runner.work_dir, 'epoch_3.pth'))
