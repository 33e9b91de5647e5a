"""Shipped mmpose, mmaction2 and mmocr configs pointed at the synthetic sets and shrunk to run in seconds.

As :mod:`small_configs`: only paths, image sizes, batch sizes and workers and pretrained weights
change here (every override names a key the config has); schedule lengths in the tests.
"""
from __future__ import annotations

import os
from typing import Dict, Tuple

from mmengine.config import Config

from .shipped import no_workers, override, set_transform, shipped_config
from .small_configs import LOADERS, _point_at

# --- mmpose --------------------------------------------------------------------------------------

#: (width, height) the pose models see: ResNet/CSPNeXt stride 32 gives a 2x3 feature map.
POSE_INPUT = (64, 96)


def _coco_keypoints(relative: str, root: str) -> Config:
    cfg = _point_at(shipped_config('mmpose', relative), root)
    for evaluator in ('val_evaluator', 'test_evaluator'):
        override(cfg, {f'{evaluator}.ann_file': os.path.join(root, 'annotations/person_keypoints_val2017.json')})
    return override(cfg, {'model.backbone.init_cfg': None, 'train_dataloader.batch_size': 4,
                          'val_dataloader.batch_size': 4, 'test_dataloader.batch_size': 4})


def _pose_codec(cfg: Config, codec: dict, *pipelines) -> dict:
    """The config's codec at :data:`POSE_INPUT`, set where the config uses it (its head's decoder,
    ``TopdownAffine`` and ``GenerateTarget`` of every pipeline)."""
    codec = dict(codec, input_size=POSE_INPUT)
    if 'heatmap_size' in codec:
        codec['heatmap_size'] = (POSE_INPUT[0] // 4, POSE_INPUT[1] // 4)
    override(cfg, {'model.head.decoder': codec})
    for pipeline in pipelines:
        set_transform(pipeline, 'TopdownAffine', input_size=POSE_INPUT)
        if any(step['type'] == 'GenerateTarget' for step in pipeline):
            set_transform(pipeline, 'GenerateTarget', encoder=codec)
    return codec


def topdown_heatmap_res50_config(root: str) -> Config:
    """SimpleBaseline ResNet-50 (MSRA heatmaps, 1/4 of the input) at 64x96, batches of 4, ground-truth boxes."""
    cfg = _coco_keypoints('body_2d_keypoint/topdown_heatmap/coco/td-hm_res50_8xb64-210e_coco-256x192.py', root)
    # Detected person boxes for COCO val2017: the synthetic set has none, validate on its own boxes.
    override(cfg, {'val_dataloader.dataset.bbox_file': None, 'test_dataloader.dataset.bbox_file': None})
    _pose_codec(cfg, cfg.model.head.decoder, *(cfg[loader].dataset.pipeline for loader in LOADERS))
    return cfg


def rtmpose_t_config(root: str) -> Config:
    """RTMPose-t (CSPNeXt, RTMCC head, SimCC labels) at 64x96, batches of 4, both pipeline stages."""
    cfg = _coco_keypoints('body_2d_keypoint/rtmpose/coco/rtmpose-t_8xb256-420e_coco-256x192.py', root)
    switch = cfg.custom_hooks[0]
    assert switch.type == 'mmdet.PipelineSwitchHook'
    pipelines = [cfg[loader].dataset.pipeline for loader in LOADERS] + [switch.switch_pipeline]
    _pose_codec(cfg, cfg.model.head.decoder, *pipelines)
    return override(cfg, {'model.head.input_size': POSE_INPUT,
                          'model.head.in_featuremap_size': tuple(s // 32 for s in POSE_INPUT)})


# --- mmaction2 -----------------------------------------------------------------------------------

ACTION_SIZE = 32  # crops the recognisers see; frames are resized to 40 px high first


def _action_lists(cfg: Config, root: str, kind: str, prefix_key: str) -> Config:
    for loader, split in (('train_dataloader', 'train'), ('val_dataloader', 'val'), ('test_dataloader', 'val')):
        override(cfg, {f'{loader}.dataset.ann_file': os.path.join(root, f'{split}_list_{kind}.txt'),
                       f'{loader}.dataset.data_prefix.{prefix_key}': os.path.join(root, f'{kind}_{split}')})
    no_workers(cfg, *LOADERS)
    return override(cfg, {'model.backbone.pretrained': None, 'train_dataloader.batch_size': 2,
                          'val_dataloader.batch_size': 2})


def _action_sizes(cfg: Config) -> None:
    """Frames resized to 40 px high (from 256), then 32 px crops (from 224) in every pipeline."""
    train, val, test = (cfg[loader].dataset.pipeline for loader in LOADERS)
    for pipeline in (train, val, test):
        first = next(step for step in pipeline if step['type'] == 'Resize')
        assert first['scale'] == (-1, 256), first
        first['scale'] = (-1, 40)
    # The training pipeline's second Resize: to the crop size, keep_ratio=False.
    second = [step for step in train if step['type'] == 'Resize'][1]
    assert second['scale'] == (224, 224) and second['keep_ratio'] is False, second
    second['scale'] = (ACTION_SIZE, ACTION_SIZE)
    if any(step['type'] == 'MultiScaleCrop' for step in train):
        set_transform(train, 'MultiScaleCrop', input_size=ACTION_SIZE)
    set_transform(val, 'CenterCrop', crop_size=ACTION_SIZE)
    set_transform(test, 'TenCrop', crop_size=ACTION_SIZE)


def tsn_flow_rawframes_config(root: str) -> Config:
    """TSN ResNet-50 on 5-frame optical-flow stacks (rawframes, ``x_/y_%05d.jpg``), 32 px crops, batches of 2."""
    cfg = _action_lists(
        shipped_config('mmaction', 'recognition/tsn/tsn_imagenet-pretrained-r50_8xb32_5x1x3-110e_kinetics400-flow.py'),
        root, 'rawframes', 'img')
    _action_sizes(cfg)
    return cfg


def tsm_r50_video_config(root: str) -> Config:
    """TSM ResNet-50 (8 segments, temporal shift, ``TSMOptimWrapperConstructor``) on MPEG-4 videos read with
    decord, 32 px crops, batches of 2."""
    cfg = _action_lists(
        shipped_config('mmaction', 'recognition/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb.py'),
        root, 'videos', 'video')
    _action_sizes(cfg)
    return cfg


# --- mmocr ---------------------------------------------------------------------------------------

DET_SIZE = 64  # DBNet's training crops (Resize and Pad), multiples of 32


def dbnet_r18_icdar2015_config(root: str) -> Config:
    """DBNet ResNet-18 FPNC on the synthetic ICDAR 2015 set: 64 px training crops, test images at their own size,
    batches of 2."""
    cfg = _point_at(shipped_config('mmocr', 'textdet/dbnet/dbnet_resnet18_fpnc_1200e_icdar2015.py'), root)
    train = cfg.train_dataloader.dataset.pipeline
    set_transform(train, 'Resize', scale=(DET_SIZE, DET_SIZE))
    set_transform(train, 'Pad', size=(DET_SIZE, DET_SIZE))
    for loader in ('val_dataloader', 'test_dataloader'):
        set_transform(cfg[loader].dataset.pipeline, 'Resize', scale=(96, 96))
    return override(cfg, {'model.backbone.init_cfg': None, 'train_dataloader.batch_size': 2})


#: The prefixes ``crnn_mini-vgg_5e_mj.py`` gives its six test sets, in its order, and their data roots' names.
CRNN_BENCHMARKS: Tuple[Tuple[str, str], ...] = (('CUTE80', 'cute80'), ('IIIT5K', 'iiit5k'), ('SVT', 'svt'),
                                                ('SVTP', 'svtp'), ('IC13', 'icdar2013'), ('IC15', 'icdar2015'))


def crnn_mj_config(train_root: str, test_roots: Dict[str, str]) -> Config:
    """CRNN (MiniVGG + BiLSTM, CTC) trained on a synthetic MJSynth, tested on six synthetic benchmarks through
    ``MultiDatasetsEvaluator``; batches of 4."""
    cfg = shipped_config('mmocr', 'textrecog/crnn/crnn_mini-vgg_5e_mj.py')
    assert cfg.val_evaluator.type == 'MultiDatasetsEvaluator'
    assert list(cfg.val_evaluator.dataset_prefixes) == [prefix for prefix, _ in CRNN_BENCHMARKS]
    override(cfg, {'train_dataloader.dataset.datasets.0.data_root': train_root})
    for loader in ('val_dataloader', 'test_dataloader'):
        for index, (_, name) in enumerate(CRNN_BENCHMARKS):
            assert cfg[loader].dataset.datasets[index].data_root == f'data/{name}'
            override(cfg, {f'{loader}.dataset.datasets.{index}.data_root': test_roots[name]})
    no_workers(cfg, *LOADERS)
    return override(cfg, {'train_dataloader.batch_size': 4})
