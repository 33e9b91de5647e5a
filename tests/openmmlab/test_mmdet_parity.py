"""mmdet 3.3's shipped detection configs: mmengine's Runner and FlexibleRunner train them identically."""
import os

import pytest
from parity import assert_same_checkpoint, assert_same_run, run_both

from .available import requires
from .shipped import override
from .small_configs import r50_fpn_config, rtmdet_tiny_config

pytestmark = requires('mmdet.datasets', 'mmdet.models', 'mmcv.ops', 'pycocotools')


def assert_same_epoch_checkpoints(reference, ours, epochs) -> None:
    for epoch in epochs:
        assert_same_checkpoint(os.path.join(reference.runner.work_dir, f'epoch_{epoch}.pth'),
                               os.path.join(ours.runner.work_dir, f'epoch_{epoch}.pth'))


# AspectRatioBatchSampler empties its buckets after its last yield: each epoch's pass must run to its end.
@pytest.mark.parametrize('relative', [
    'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    'retinanet/retinanet_r50_fpn_1x_coco.py'])
def test_r50_fpn_detectors_aspect_ratio_batches(relative, coco_root, tmp_path):
    """Two-stage and one-stage detectors, batches grouped by aspect ratio, warmup and step LR, 3 epochs."""
    cfg = r50_fpn_config(relative, coco_root)
    assert cfg.train_dataloader.batch_sampler.type == 'AspectRatioBatchSampler'
    override(cfg, {'train_cfg.max_epochs': 3, 'param_scheduler.0.end': 3,
                   'param_scheduler.1.end': 3, 'param_scheduler.1.milestones': [2]})
    reference, ours = run_both(cfg, tmp_path)
    assert len(reference.iterations) == 3 * 2 and len(reference.val_metrics) == 3
    assert_same_run(reference, ours)
    assert_same_epoch_checkpoints(reference, ours, (1, 2, 3))


def test_rtmdet_tiny_pipeline_switch_ema_dynamic_intervals(coco_root, tmp_path):
    """RTMDet: cached mosaic/mix-up, a pipeline switched at an epoch, EMA weights for validation and
    checkpoints, validation interval changed by ``dynamic_intervals``, warmup then cosine per iteration."""
    cfg = override(rtmdet_tiny_config(coco_root), {
        'train_cfg.max_epochs': 4, 'train_cfg.val_interval': 2, 'train_cfg.dynamic_intervals': [(3, 1)],
        'custom_hooks.1.switch_epoch': 3, 'param_scheduler.0.end': 3,
        'param_scheduler.1.begin': 2, 'param_scheduler.1.end': 4, 'param_scheduler.1.T_max': 2})
    reference, ours = run_both(cfg, tmp_path)
    assert len(reference.iterations) == 4 * 2
    assert len(reference.val_metrics) == 3  # after epochs 2 (interval 2), 3 and 4 (interval 1 from epoch 3)
    for record in (reference, ours):  # both switched to the stage-2 pipeline (no mosaic) at epoch 3
        transforms = record.runner.train_dataloader.dataset.pipeline.transforms
        assert [type(t).__name__ for t in transforms][:3] == ['LoadImageFromFile', 'LoadAnnotations', 'RandomResize']
    assert_same_run(reference, ours)
    assert_same_epoch_checkpoints(reference, ours, (4,))  # interval 10: only the last epoch is saved


def test_accumulation_window_spans_validation(coco_root, tmp_path):
    """``accumulative_counts=3`` with 2 iterations per epoch: the window of iterations 1-3 is open
    while epoch 1 validates; its gradients must survive the validation."""
    cfg = override(rtmdet_tiny_config(coco_root), {
        'train_cfg.max_epochs': 2, 'train_cfg.val_interval': 1, 'custom_hooks.1.switch_epoch': 2,
        'param_scheduler.0.end': 2, 'param_scheduler.1.begin': 1, 'param_scheduler.1.end': 2,
        'param_scheduler.1.T_max': 1})
    cfg.optim_wrapper.accumulative_counts = 3  # the behaviour under test, not an override
    reference, ours = run_both(cfg, tmp_path)
    assert len(reference.iterations) == 2 * 2 and len(reference.val_metrics) == 2
    assert_same_run(reference, ours)
    assert_same_epoch_checkpoints(reference, ours, (2,))
