"""Tiny image datasets in the layouts mmagic's shipped configs read.

An unconditional GAN's folder of images (``BasicImageDataset`` lists the folder), and the
super-resolution sets of mmagic's ``sisr_x4`` configs: DIV2K's sub-image folders with their
``meta_info_*.txt`` lists, Set5 and Set14's ``GTmod12``/``LRbicx4`` pairs.
"""
from __future__ import annotations

import os
from typing import Tuple

import numpy as np
from PIL import Image

from .synthetic import _image


def write_image_folder(root: str, count: int = 8, size: int = 32, seed: int = 0) -> str:
    """``count`` PNGs of ``size`` x ``size`` directly in ``root`` (like celeba-cropped's image folder)."""
    rng = np.random.RandomState(seed)
    os.makedirs(root, exist_ok=True)
    for index in range(count):
        Image.fromarray(_image(rng, size, size)).save(os.path.join(root, f'{index:06d}.png'))
    return root + '/'


def _pair(rng: np.random.RandomState, size: Tuple[int, int], scale: int) -> Tuple[Image.Image, Image.Image]:
    """A ground-truth image and its bicubic ``scale``-times downsampled input."""
    width, height = size
    gt = Image.fromarray(_image(rng, width, height))
    return gt, gt.resize((width // scale, height // scale), Image.BICUBIC)


def _pairs(rng: np.random.RandomState, gt_dir: str, lr_dir: str, names, size, scale: int) -> None:
    os.makedirs(gt_dir, exist_ok=True)
    os.makedirs(lr_dir, exist_ok=True)
    for name in names:
        gt, lr = _pair(rng, size, scale)
        gt.save(os.path.join(gt_dir, name))
        lr.save(os.path.join(lr_dir, name))


def write_sisr_x4(root: str, train: int = 4, test: int = 2, size: Tuple[int, int] = (48, 40),
                  seed: int = 0) -> str:
    """``root/{DIV2K,Set5,Set14}`` as mmagic's x4 super-resolution configs expect them.

    DIV2K: ``DIV2K_train_HR_sub`` (ground truth) and ``DIV2K_train_LR_bicubic/X4_sub`` (inputs), the
    training list ``meta_info_DIV2K800sub_GT.txt`` and the test list ``meta_info_DIV2K100sub_GT.txt``
    (``name (h,w,c)`` lines). Set5/Set14: ``GTmod12`` and ``LRbicx4`` folders of ``test`` images each.
    Sizes are multiples of 4 (and of 12, as ``GTmod12`` says) divided by 4.
    """
    rng = np.random.RandomState(seed)
    scale = 4
    div2k = os.path.join(root, 'DIV2K')
    train_names = [f'{index + 1:04d}_s001.png' for index in range(train)]
    test_names = [f'{index + 801:04d}_s001.png' for index in range(test)]
    _pairs(rng, os.path.join(div2k, 'DIV2K_train_HR_sub'), os.path.join(div2k, 'DIV2K_train_LR_bicubic', 'X4_sub'),
           train_names + test_names, size, scale)
    width, height = size
    for list_name, names in (('meta_info_DIV2K800sub_GT.txt', train_names),
                             ('meta_info_DIV2K100sub_GT.txt', test_names)):
        with open(os.path.join(div2k, list_name), 'w') as f:
            f.write(''.join(f'{name} ({height},{width},3)\n' for name in names))
    for set_name in ('Set5', 'Set14'):
        _pairs(rng, os.path.join(root, set_name, 'GTmod12'), os.path.join(root, set_name, 'LRbicx4'),
               [f'img_{index + 1:03d}.png' for index in range(test)], size, scale)
    return root
