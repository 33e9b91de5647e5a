"""mmyolo 0.6's shipped COCO configs on the synthetic COCO set, at 64 px, batches of 2.

Only what :mod:`shipped` allows changes: paths, image sizes (the mosaic and its affine border,
letterbox and batch-shape sizes, the batch resize range), batch sizes (with the batch size the
optimizer constructor scales weight decay by), workers; schedule lengths in the tests.
"""
from __future__ import annotations

import os

from mmengine.config import Config

from .shipped import no_workers, override, set_transform, shipped_config

LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
SIZE = 64
BATCH = 2


def _coco(relative: str, coco_root: str) -> Config:
    cfg = shipped_config('mmyolo', relative)
    for loader in LOADERS:
        override(cfg, {f'{loader}.dataset.data_root': coco_root})
    no_workers(cfg, *LOADERS)
    for evaluator in ('val_evaluator', 'test_evaluator'):
        override(cfg, {f'{evaluator}.ann_file': os.path.join(coco_root, 'annotations/instances_val2017.json')})
    return override(cfg, {'train_dataloader.batch_size': BATCH})


def _mosaic(pipeline: list, affine: str) -> None:
    """The training pipeline's mosaic (of 4 images at SIZE) and the affine that crops it back to SIZE."""
    set_transform(pipeline, 'Mosaic', img_scale=(SIZE, SIZE))
    set_transform(pipeline, affine, border=(-SIZE // 2, -SIZE // 2))


def _letterbox(pipeline: list) -> None:
    set_transform(pipeline, 'YOLOv5KeepRatioResize', scale=(SIZE, SIZE))
    set_transform(pipeline, 'LetterResize', scale=(SIZE, SIZE))


def _yolov5_family(relative: str, coco_root: str) -> Config:
    """YOLOv5 / YOLOv8: mosaic + YOLOv5 affine for training, letterbox for testing, the YOLOv5 optimizer
    constructor (weight decay scaled by the batch size) and ``YOLOv5ParamSchedulerHook``."""
    cfg = _coco(relative, coco_root)
    assert cfg.optim_wrapper.constructor == 'YOLOv5OptimizerConstructor'
    assert cfg.default_hooks.param_scheduler.type == 'YOLOv5ParamSchedulerHook'
    _mosaic(cfg.train_dataloader.dataset.pipeline, 'YOLOv5RandomAffine')
    for loader in ('val_dataloader', 'test_dataloader'):
        _letterbox(cfg[loader].dataset.pipeline)
        if cfg[loader].dataset.get('batch_shapes_cfg'):
            override(cfg, {f'{loader}.dataset.batch_shapes_cfg.img_size': SIZE})
    return override(cfg, {'optim_wrapper.optimizer.batch_size_per_gpu': BATCH})


def yolov5_s_config(coco_root: str) -> Config:
    """YOLOv5-s v6.1 ("fast": the YOLOv5 data preprocessor and collate)."""
    return _yolov5_family('yolov5/yolov5_s-v61_syncbn_fast_8xb16-300e_coco.py', coco_root)


def yolov8_s_config(coco_root: str) -> Config:
    """YOLOv8-s: as YOLOv5, plus gradient clipping and a pipeline switch (no mosaic) for the last epochs."""
    cfg = _yolov5_family('yolov8/yolov8_s_syncbn_fast_8xb16-500e_coco.py', coco_root)
    switch = cfg.custom_hooks[1]
    assert switch.type == 'mmdet.PipelineSwitchHook' and cfg.custom_hooks[0].type == 'EMAHook'
    _letterbox(switch.switch_pipeline)
    return cfg


def yolox_tiny_config(coco_root: str) -> Config:
    """YOLOX-tiny: mosaic + mmdet's affine, a batch resize every 10 iterations, then
    ``YOLOXModeSwitchHook``'s new training dataloader (no mosaic) and L1 loss for the last epochs."""
    cfg = _coco('yolox/yolox_tiny_fast_8xb8-300e_coco.py', coco_root)
    _mosaic(cfg.train_dataloader.dataset.pipeline, 'mmdet.RandomAffine')
    for loader in ('val_dataloader', 'test_dataloader'):
        set_transform(cfg[loader].dataset.pipeline, 'mmdet.Resize', scale=(SIZE, SIZE))
    switch = cfg.custom_hooks[0]
    assert switch.type == 'YOLOXModeSwitchHook'
    set_transform(switch.new_train_pipeline, 'mmdet.Resize', scale=(SIZE, SIZE))
    resize = cfg.model.data_preprocessor.batch_augments[0]
    assert resize.type == 'YOLOXBatchSyncRandomResize'
    return override(cfg, {'model.data_preprocessor.batch_augments.0.random_size_range': (SIZE, 2 * SIZE)})
