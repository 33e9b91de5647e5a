"""Shipped configs pointed at the synthetic datasets and shrunk to run in seconds.

Only what the module docstring of :mod:`shipped` allows changes: paths, image sizes,
batch sizes and workers, pretrained weights here; schedule lengths in the tests.
"""
from __future__ import annotations

import os

from mmengine.config import Config

from .shipped import no_workers, override, set_transform, shipped_config

LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def _point_at(cfg: Config, root: str) -> Config:
    for loader in LOADERS:
        override(cfg, {f'{loader}.dataset.data_root': root})
    no_workers(cfg, *LOADERS)
    return cfg


def coco_config(relative: str, coco_root: str) -> Config:
    """An mmdet COCO config on the synthetic COCO set, backbone initialised at random."""
    cfg = _point_at(shipped_config('mmdet', relative), coco_root)
    for evaluator in ('val_evaluator', 'test_evaluator'):
        override(cfg, {f'{evaluator}.ann_file': os.path.join(coco_root, 'annotations/instances_val2017.json')})
    return override(cfg, {'model.backbone.init_cfg': None})


def r50_fpn_config(relative: str, coco_root: str) -> Config:
    """Faster R-CNN / RetinaNet (R-50 FPN) with images resized to at most 96x64."""
    cfg = coco_config(relative, coco_root)
    for loader in LOADERS:
        set_transform(cfg[loader].dataset.pipeline, 'Resize', scale=(96, 64))
    return cfg


def rtmdet_tiny_config(coco_root: str) -> Config:
    """RTMDet-tiny at 64 px, batches of 2."""
    cfg = coco_config('rtmdet/rtmdet_tiny_8xb32-300e_coco.py', coco_root)
    switch = cfg.custom_hooks[1]
    assert switch.type == 'PipelineSwitchHook' and cfg.custom_hooks[0].type == 'EMAHook'
    pipeline = cfg.train_dataloader.dataset.pipeline
    set_transform(pipeline, 'CachedMosaic', img_scale=(64, 64))
    set_transform(pipeline, 'RandomResize', scale=(128, 128))
    set_transform(pipeline, 'CachedMixUp', img_scale=(64, 64))
    for steps in (pipeline, switch.switch_pipeline):
        set_transform(steps, 'RandomCrop', crop_size=(64, 64))
        set_transform(steps, 'Pad', size=(64, 64))
    set_transform(switch.switch_pipeline, 'RandomResize', scale=(64, 64))
    for loader in ('val_dataloader', 'test_dataloader'):
        set_transform(cfg[loader].dataset.pipeline, 'Resize', scale=(64, 64))
        set_transform(cfg[loader].dataset.pipeline, 'Pad', size=(64, 64))
    return override(cfg, {'train_dataloader.batch_size': 2})


def segformer_b0_config(ade20k_root: str) -> Config:
    """SegFormer MiT-B0 on the synthetic ADE20K set, 64x64 crops."""
    cfg = _point_at(shipped_config('mmseg', 'segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py'), ade20k_root)
    set_transform(cfg.train_dataloader.dataset.pipeline, 'RandomResize', scale=(256, 64))
    set_transform(cfg.train_dataloader.dataset.pipeline, 'RandomCrop', crop_size=(64, 64))
    for loader in ('val_dataloader', 'test_dataloader'):
        set_transform(cfg[loader].dataset.pipeline, 'Resize', scale=(256, 64))
    return override(cfg, {'model.data_preprocessor.size': (64, 64), 'model.backbone.init_cfg': None})


def cifar10_config(cifar10_root: str) -> Config:
    """mmpretrain's ResNet-18 CIFAR-10 config (32 px images, batches of 16) on the synthetic pickles."""
    return _point_at(shipped_config('mmpretrain', 'resnet/resnet18_8xb16_cifar10.py'), cifar10_root)


def imagenet_resnet18_config(imagenet_root: str) -> Config:
    """mmpretrain's ResNet-18 ImageNet config at 32 px, batches of 4."""
    cfg = _point_at(shipped_config('mmpretrain', 'resnet/resnet18_8xb32_in1k.py'), imagenet_root)
    set_transform(cfg.train_dataloader.dataset.pipeline, 'RandomResizedCrop', scale=32)
    for loader in ('val_dataloader', 'test_dataloader'):
        set_transform(cfg[loader].dataset.pipeline, 'ResizeEdge', scale=36)
        set_transform(cfg[loader].dataset.pipeline, 'CenterCrop', crop_size=32)
    return override(cfg, {'train_dataloader.batch_size': 4, 'val_dataloader.batch_size': 4,
                          'test_dataloader.batch_size': 4})
