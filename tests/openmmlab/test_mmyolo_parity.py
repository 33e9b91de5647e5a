"""mmyolo 0.6's shipped COCO configs (default_scope ``mmyolo``): mmengine's Runner and FlexibleRunner
train them identically.

What mmyolo brings beyond mmdet: its own optimizer constructor (``YOLOv5OptimizerConstructor``: three
parameter groups, weight decay scaled by the batch size) and LR/momentum schedule hook
(``YOLOv5ParamSchedulerHook``, a per-iteration warmup), ``ExpMomentumEMA``, mosaic pipelines with
the YOLOv5 collate and data preprocessor, and ``YOLOXModeSwitchHook``, which gives the train loop a
new dataloader for the last epochs.
"""
import os

from parity import assert_same_checkpoint, assert_same_run, run_both

from . import compat
from .available import requires
from .shipped import override
from .small_configs_mmyolo import yolov5_s_config, yolov8_s_config, yolox_tiny_config

compat.mmyolo()
pytestmark = requires('mmyolo.models', 'mmyolo.datasets', 'mmyolo.engine', 'mmdet.models', 'mmcv.ops',
                      'pycocotools', 'albumentations')

EPOCHS = 3
ITERS_PER_EPOCH = 2  # 4 training images in batches of 2


def checkpoints(record) -> list:
    return sorted(name for name in os.listdir(record.runner.work_dir) if name.endswith('.pth'))


def assert_same_checkpoints(reference, ours) -> None:
    """The same files (last epoch, best score) with the same weights and EMA weights."""
    assert checkpoints(ours) == checkpoints(reference) and f'epoch_{EPOCHS}.pth' in checkpoints(reference)
    for name in checkpoints(reference):
        assert_same_checkpoint(os.path.join(reference.runner.work_dir, name), os.path.join(ours.runner.work_dir, name))


def assert_same_test(reference, ours) -> None:
    assert ours.test_metrics == reference.test_metrics
    assert ours.test_epoch_metrics == reference.test_epoch_metrics


def test_yolov5_s_optimizer_constructor_param_scheduler_hook_ema(coco_root, tmp_path):
    """YOLOv5-s: ``YOLOv5OptimizerConstructor`` (default_scope ``mmyolo``), the warmup of
    ``YOLOv5ParamSchedulerHook`` (LR and momentum set per group before every iteration), mosaic + albu
    pipeline, EMA weights for validation and checkpoints; validation after every epoch, then a test.

    The untrained model scores every box under the config's ``score_thr``, so ``CocoMetric`` reports
    an empty dict: validation is compared by count and by the EMA weights it ran with."""
    cfg = override(yolov5_s_config(coco_root), {
        'train_cfg.max_epochs': EPOCHS, 'train_cfg.val_interval': 1,
        'default_hooks.param_scheduler.max_epochs': EPOCHS})
    reference, ours = run_both(cfg, tmp_path, test=True)
    assert len(reference.iterations) == EPOCHS * ITERS_PER_EPOCH and len(reference.val_metrics) == EPOCHS
    assert len(reference.iterations[0]['lr/lr']) == 3  # the constructor's three parameter groups
    assert_same_run(reference, ours)
    assert_same_checkpoints(reference, ours)
    assert_same_test(reference, ours)


def test_yolov8_s_gradient_clipping_pipeline_switch(coco_root, tmp_path):
    """YOLOv8-s: as YOLOv5 plus gradient clipping, DFL loss and mmdet's ``PipelineSwitchHook`` (no mosaic
    from epoch 3), validation every 2 epochs and after the last."""
    cfg = override(yolov8_s_config(coco_root), {
        'train_cfg.max_epochs': EPOCHS, 'train_cfg.val_interval': 2,
        'default_hooks.param_scheduler.max_epochs': EPOCHS, 'custom_hooks.1.switch_epoch': 2})
    reference, ours = run_both(cfg, tmp_path)
    assert len(reference.iterations) == EPOCHS * ITERS_PER_EPOCH
    assert len(reference.val_metrics) == 2  # after epochs 2 and 3
    for record in (reference, ours):  # both switched to the pipeline without mosaic
        transforms = [type(t).__name__ for t in record.runner.train_dataloader.dataset.pipeline.transforms]
        assert 'Mosaic' not in transforms and 'LetterResize' in transforms
    assert_same_run(reference, ours)
    assert_same_checkpoints(reference, ours)


def test_yolox_tiny_mode_switch_hook_new_train_dataloader(coco_root, tmp_path):
    """YOLOX-tiny: ``YOLOXModeSwitchHook`` builds a NEW training dataloader (no mosaic) and assigns it to
    ``runner.train_loop.dataloader`` before epoch 2 of 3 (``num_last_epochs=1``: mmyolo switches when
    ``epoch + 1 == max_epochs - num_last_epochs``) and turns on the L1 loss; mmengine's loop then iterates
    the new loader. Also: batch sync random resize (every 2 iterations), quadratic warmup, cosine then
    constant LR per iteration, per-parameter groups (``norm_decay_mult``/``bias_decay_mult``), EMA, the
    best checkpoint by mAP, a test at the end."""
    cfg = override(yolox_tiny_config(coco_root), {
        'train_cfg.max_epochs': EPOCHS, 'train_cfg.val_interval': 1, 'custom_hooks.0.num_last_epochs': 1,
        'model.data_preprocessor.batch_augments.0.interval': 2,
        'param_scheduler.0.end': 1, 'param_scheduler.1.begin': 1, 'param_scheduler.1.T_max': 1,
        'param_scheduler.1.end': 2, 'param_scheduler.2.begin': 2, 'param_scheduler.2.end': EPOCHS})
    reference, ours = run_both(cfg, tmp_path, test=True)
    assert len(reference.iterations) == EPOCHS * ITERS_PER_EPOCH and len(reference.val_metrics) == EPOCHS
    assert 'coco/bbox_mAP' in reference.val_metrics[0]
    switched = [index for index, record in enumerate(reference.iterations) if 'loss_bbox_aux' in record]
    assert switched == list(range(ITERS_PER_EPOCH, EPOCHS * ITERS_PER_EPOCH))  # epochs 2 and 3
    for record in (reference, ours):
        loop = record.runner.train_loop
        transforms = [type(t).__name__ for t in loop.dataloader.dataset.pipeline.transforms]
        assert 'Mosaic' not in transforms and 'Resize' in transforms, 'the new dataloader is the loop\'s'
        assert record.runner.model.bbox_head.use_bbox_aux
    # Iterations after the switch agree only if both runners drew them from the new loader.
    assert_same_run(reference, ours)
    assert_same_checkpoints(reference, ours)
    assert_same_test(reference, ours)
