"""Tiny datasets written in the on-disk formats OpenMMLab's dataset classes read.

Each writer lays out the directory tree the shipped configs expect under their
``data_root`` (COCO, ADE20K, CIFAR-10 python pickles), with small images and a
fixed seed, so a config needs only its paths pointed here.
"""
from __future__ import annotations

import json
import os
import pickle
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image

#: (width, height) of the training images of :func:`write_coco`: two landscape, two portrait, so
#: ``AspectRatioBatchSampler`` (batch size 2) fills both of its buckets and every epoch ends on a full bucket.
COCO_TRAIN_SIZES: Tuple[Tuple[int, int], ...] = ((96, 64), (80, 64), (64, 96), (64, 80))
COCO_VAL_SIZES: Tuple[Tuple[int, int], ...] = ((96, 64), (64, 80))
COCO_CLASSES = ('person', 'bicycle', 'car')  # the first COCO categories; images use only these


def _image(rng: np.random.RandomState, width: int, height: int) -> np.ndarray:
    """A smooth background with noise: compresses like a photo and gives conv layers some signal."""
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 255 // max(width - 1, 1), ys * 255 // max(height - 1, 1),
                     np.full_like(xs, rng.randint(0, 256))], axis=-1)
    noise = rng.randint(-20, 21, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _boxes(rng: np.random.RandomState, width: int, height: int, count: int) -> List[List[float]]:
    """``count`` COCO ``[x, y, w, h]`` boxes, at least 12 px a side, inside the image."""
    boxes = []
    for _ in range(count):
        w = rng.randint(12, width // 2 + 1)
        h = rng.randint(12, height // 2 + 1)
        x = rng.randint(0, width - w + 1)
        y = rng.randint(0, height - h + 1)
        boxes.append([float(x), float(y), float(w), float(h)])
    return boxes


def _coco_split(root: str, split: str, sizes: Sequence[Tuple[int, int]], categories: List[dict],
                rng: np.random.RandomState, first_id: int) -> None:
    image_dir = os.path.join(root, f'{split}2017')
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for offset, (width, height) in enumerate(sizes):
        image_id = first_id + offset
        file_name = f'{image_id:012d}.jpg'
        pixels = _image(rng, width, height)
        for index, (x, y, w, h) in enumerate(_boxes(rng, width, height, 1 + offset % 3)):
            category = categories[(offset + index) % len(COCO_CLASSES)]
            pixels[int(y):int(y + h), int(x):int(x + w)] = (60 * category['id']) % 256
            annotations.append(dict(id=len(annotations) + 1 + first_id * 10, image_id=image_id,
                                    category_id=category['id'], bbox=[x, y, w, h], area=w * h, iscrowd=0,
                                    segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]]))
        Image.fromarray(pixels).save(os.path.join(image_dir, file_name), quality=95)
        images.append(dict(id=image_id, file_name=file_name, width=width, height=height))
    with open(os.path.join(root, 'annotations', f'instances_{split}2017.json'), 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories,
                       info=dict(description='synthetic'), licenses=[]), f)


def write_coco(root: str, seed: int = 0) -> str:
    """COCO detection layout: ``annotations/instances_{train,val}2017.json`` and ``{train,val}2017/*.jpg``.

    The category list is COCO's 80 (``CocoDataset`` looks them up by name); boxes use the first three.
    """
    from mmdet.datasets import CocoDataset

    os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
    categories = [dict(id=index + 1, name=name, supercategory='thing')
                  for index, name in enumerate(CocoDataset.METAINFO['classes'])]
    assert tuple(c['name'] for c in categories[:len(COCO_CLASSES)]) == COCO_CLASSES
    rng = np.random.RandomState(seed)
    _coco_split(root, 'train', COCO_TRAIN_SIZES, categories, rng, first_id=1)
    _coco_split(root, 'val', COCO_VAL_SIZES, categories, rng, first_id=101)
    return root + '/'


def write_ade20k(root: str, train: int = 6, val: int = 2, size: Tuple[int, int] = (96, 64),
                 seed: int = 0) -> str:
    """ADEChallengeData2016 layout: ``images/{training,validation}/*.jpg`` and
    ``annotations/{training,validation}/*.png`` (uint8 labels, 0 = "other", 1..150 the classes)."""
    rng = np.random.RandomState(seed)
    width, height = size
    for split, count, prefix in (('training', train, 'ADE_train'), ('validation', val, 'ADE_val')):
        image_dir = os.path.join(root, 'images', split)
        mask_dir = os.path.join(root, 'annotations', split)
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(mask_dir, exist_ok=True)
        for index in range(count):
            name = f'{prefix}_{index + 1:08d}'
            pixels = _image(rng, width, height)
            mask = np.zeros((height, width), dtype=np.uint8)
            for label in rng.choice(np.arange(1, 6), size=3, replace=False):
                x, y, w, h = (int(v) for v in _boxes(rng, width, height, 1)[0])
                mask[y:y + h, x:x + w] = label
                pixels[y:y + h, x:x + w] = (40 * label) % 256
            Image.fromarray(pixels).save(os.path.join(image_dir, name + '.jpg'), quality=95)
            Image.fromarray(mask).save(os.path.join(mask_dir, name + '.png'))
    return root


CIFAR10_TRAIN_FILES = tuple(f'data_batch_{i}' for i in range(1, 6))
CIFAR10_TEST_FILE = 'test_batch'


def write_cifar10(root: str, train_per_batch: int = 8, test: int = 16, seed: int = 0) -> str:
    """``cifar-10-batches-py``: five training pickles, ``test_batch`` and ``batches.meta``.

    Same structure as the released files: ``data`` is uint8 ``(N, 3072)`` in CHW order,
    ``labels`` a list of ints. Contents differ, so checksums differ from the released ones.
    """
    rng = np.random.RandomState(seed)
    folder = os.path.join(root, 'cifar-10-batches-py')
    os.makedirs(folder, exist_ok=True)

    def batch(name: str, count: int) -> None:
        labels = [int(v) for v in rng.randint(0, 10, size=count)]
        # Class-dependent mean colour, so the classifier can learn something.
        data = np.clip(rng.randint(0, 64, size=(count, 3, 32, 32)) +
                       np.array(labels)[:, None, None, None] * 20, 0, 255).astype(np.uint8)
        entry = dict(batch_label=name, labels=labels, data=data.reshape(count, -1),
                     filenames=[f'{name}_{i}.png' for i in range(count)])
        with open(os.path.join(folder, name), 'wb') as f:
            pickle.dump(entry, f, protocol=2)

    for name in CIFAR10_TRAIN_FILES:
        batch(name, train_per_batch)
    batch(CIFAR10_TEST_FILE, test)
    label_names = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
    with open(os.path.join(folder, 'batches.meta'), 'wb') as f:
        pickle.dump(dict(label_names=label_names, num_cases_per_batch=train_per_batch, num_vis=3072), f,
                    protocol=2)
    return root


IMAGENET_SYNSETS = ('n01440764', 'n01443537', 'n01484850', 'n01491361')  # ImageNet-1k classes 0-3


def write_imagenet(root: str, train_per_class: int = 2, val: int = 4, size: Tuple[int, int] = (40, 36),
                   seed: int = 0) -> str:
    """ImageNet layout as mmpretrain prepares it: ``train/<synset>/*.JPEG``, ``val/*.JPEG`` and the
    ``meta/{train,val}.txt`` lists of ``path label`` lines."""
    rng = np.random.RandomState(seed)
    width, height = size
    os.makedirs(os.path.join(root, 'meta'), exist_ok=True)
    os.makedirs(os.path.join(root, 'val'), exist_ok=True)
    train_lines, val_lines = [], []
    for label, synset in enumerate(IMAGENET_SYNSETS):
        os.makedirs(os.path.join(root, 'train', synset), exist_ok=True)
        for index in range(train_per_class):
            name = f'{synset}/{synset}_{index + 1}.JPEG'
            Image.fromarray(_image(rng, width, height)).save(os.path.join(root, 'train', name), format='JPEG')
            train_lines.append(f'{name} {label}')
    for index in range(val):
        name = f'ILSVRC2012_val_{index + 1:08d}.JPEG'
        Image.fromarray(_image(rng, width, height)).save(os.path.join(root, 'val', name), format='JPEG')
        val_lines.append(f'{name} {index % len(IMAGENET_SYNSETS)}')
    for split, lines in (('train', train_lines), ('val', val_lines)):
        with open(os.path.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return root
