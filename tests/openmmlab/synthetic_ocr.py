"""Tiny text detection and recognition sets in mmocr 1.x's JSON format.

Detection (ICDAR 2015 as mmocr's preparer writes it): ``textdet_{train,test}.json`` with
``metainfo`` and a ``data_list`` of images whose ``instances`` hold a quadrilateral ``polygon``,
its ``bbox``, ``bbox_label`` 0 and ``ignore`` (ICDAR's ``###`` words), under ``textdet_imgs/``.
Recognition: ``textrecog_{train,test}.json`` listing word crops (``textrecog_imgs/``) and their
``text``. The words are drawn with OpenCV's Hershey font, so there is real text to find and read.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

from .synthetic import _image

_CHARACTERS = 'abcdefghijklmnopqrstuvwxyz0123456789'  # mmocr's dicts/lower_english_digits.txt
DET_TRAIN_SIZES: Tuple[Tuple[int, int], ...] = ((96, 64), (80, 64), (96, 72), (64, 80))
DET_TEST_SIZES: Tuple[Tuple[int, int], ...] = ((96, 64), (64, 80))


def _word(rng: np.random.RandomState, low: int = 3, high: int = 6) -> str:
    return ''.join(rng.choice(list(_CHARACTERS), size=rng.randint(low, high + 1)))


def _put_text(pixels: np.ndarray, text: str, x: int, y: int, scale: float, colour) -> Tuple[int, int]:
    """Draw ``text`` with its top-left corner at (x, y); returns its (width, height)."""
    import cv2
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.putText(pixels, text, (x, y + height), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    return width, height + baseline


def _write_json(path: str, task: str, data_list: List[dict]) -> None:
    metainfo = dict(dataset_type=f'{"TextDet" if task == "textdet" else "TextRecog"}Dataset', task_name=task)
    if task == 'textdet':
        metainfo['category'] = [dict(id=0, name='text')]
    with open(path, 'w') as f:
        json.dump(dict(metainfo=metainfo, data_list=data_list), f)


def write_icdar2015_textdet(root: str, seed: int = 0) -> str:
    """``textdet_{train,test}.json`` and ``textdet_imgs/{train,test}/img_N.jpg``."""
    import cv2
    rng = np.random.RandomState(seed)
    for split, sizes in (('train', DET_TRAIN_SIZES), ('test', DET_TEST_SIZES)):
        folder = os.path.join(root, 'textdet_imgs', split)
        os.makedirs(folder, exist_ok=True)
        data_list = []
        for index, (width, height) in enumerate(sizes, start=1):
            pixels = np.ascontiguousarray(_image(rng, width, height) // 2 + 100)
            instances = []
            top = 4
            for line in range(3):
                text = _word(rng)
                scale = float(rng.uniform(0.3, 0.45))
                x = int(rng.randint(2, max(3, width // 3)))
                w, h = _put_text(pixels, text, x, top, scale, (10, 10, 10))
                w = min(w, width - 2 - x)
                if w < 6 or top + h >= height - 2:
                    break
                # A slightly slanted quadrilateral around the word, clockwise from the top left.
                slant = float(rng.uniform(-2, 2))
                polygon = [x - 1, top - 1 + slant, x + w + 1, top - 1 - slant, x + w + 1, top + h + 1 - slant,
                           x - 1, top + h + 1 + slant]
                polygon = [float(np.clip(v, 0, (width if i % 2 == 0 else height) - 1))
                           for i, v in enumerate(polygon)]
                xs, ys = polygon[0::2], polygon[1::2]
                instances.append(dict(polygon=polygon, bbox=[min(xs), min(ys), max(xs), max(ys)], bbox_label=0,
                                      ignore=line == 2))  # ICDAR 2015 marks unreadable words '###': ignored
                top += h + int(rng.randint(4, 10))
            name = f'img_{index}.jpg'
            cv2.imwrite(os.path.join(folder, name), pixels)
            data_list.append(dict(img_path=f'textdet_imgs/{split}/{name}', height=height, width=width,
                                  instances=instances, seg_map=f'gt_img_{index}.txt'))
        _write_json(os.path.join(root, f'textdet_{split}.json'), 'textdet', data_list)
    return root


def write_textrecog(root: str, train: int = 8, test: int = 2, seed: int = 0) -> str:
    """``textrecog_{train,test}.json`` and word crops ``textrecog_imgs/{train,test}/word_N.png``
    (dark words on a light, noisy background, 20-40 px high and as wide as the word)."""
    rng = np.random.RandomState(seed)
    for split, count in (('train', train), ('test', test)):
        if not count:
            continue
        folder = os.path.join(root, 'textrecog_imgs', split)
        os.makedirs(folder, exist_ok=True)
        data_list = []
        for index in range(1, count + 1):
            text = _word(rng)
            canvas = np.full((48, 160, 3), 200, np.uint8)
            w, h = _put_text(canvas, text, 4, 4, float(rng.uniform(0.6, 0.9)), (30, 30, 30))
            crop = canvas[:min(h + 8, 48), :min(w + 8, 160)]
            noisy = np.clip(crop.astype(np.int16) + rng.randint(-25, 26, size=crop.shape), 0, 255)
            name = f'word_{index}.png'
            Image.fromarray(noisy.astype(np.uint8)).save(os.path.join(folder, name))
            data_list.append(dict(img_path=f'textrecog_imgs/{split}/{name}', instances=[dict(text=text)]))
        _write_json(os.path.join(root, f'textrecog_{split}.json'), 'textrecog', data_list)
    return root


def write_textrecog_benchmarks(root: str, names: Sequence[str], seed: int = 0) -> Dict[str, str]:
    """One recognition test set per name (``<root>/<name>/textrecog_test.json``), each with its own words:
    {name: root}."""
    return {name: write_textrecog(os.path.join(root, name), train=0, seed=seed + offset)
            for offset, name in enumerate(names)}
