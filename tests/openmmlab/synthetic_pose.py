"""A tiny COCO-keypoints set in the layout mmpose's ``CocoDataset`` reads.

``annotations/person_keypoints_{train,val}2017.json`` and ``{train,val}2017/*.jpg``: person boxes
with COCO's 17 keypoints (``[x, y, v]`` triplets, ``num_keypoints``, ``area``), drawn into the
images so the heatmaps have something to find.
"""
from __future__ import annotations

import json
import os
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image

from .synthetic import _image

COCO_KEYPOINTS = ('nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder',
                  'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hip',
                  'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle')
#: COCO's skeleton, 1-based keypoint ids, as ``person_keypoints_*.json`` has it.
COCO_SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8],
                 [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]
#: Where each keypoint sits in a standing person's box, as (x, y) fractions of its width and height
#: (the person faces the camera: their left is the image's right).
_TEMPLATE = np.array([
    (0.50, 0.08), (0.56, 0.06), (0.44, 0.06), (0.62, 0.08), (0.38, 0.08), (0.70, 0.22), (0.30, 0.22),
    (0.78, 0.38), (0.22, 0.38), (0.82, 0.52), (0.18, 0.52), (0.62, 0.55), (0.38, 0.55), (0.63, 0.75),
    (0.37, 0.75), (0.64, 0.95), (0.36, 0.95)])

#: (width, height) of the images and how many people each holds.
POSE_TRAIN_IMAGES: Tuple[Tuple[int, int, int], ...] = ((96, 80, 2), (80, 96, 1), (96, 96, 2), (88, 72, 1),
                                                      (72, 88, 2))
POSE_VAL_IMAGES: Tuple[Tuple[int, int, int], ...] = ((96, 80, 1), (80, 96, 2))


def _person(rng: np.random.RandomState, width: int, height: int) -> Tuple[List[float], np.ndarray]:
    """A box (COCO ``[x, y, w, h]``) and its (17, 3) keypoints, a few of them not labelled."""
    w = rng.randint(width // 3, width // 2 + 1)
    h = rng.randint(height // 2, height - 4)
    x = rng.randint(0, width - w + 1)
    y = rng.randint(0, height - h + 1)
    xy = _TEMPLATE * (w, h) + (x, y) + rng.uniform(-1.5, 1.5, size=_TEMPLATE.shape)
    visible = np.where(rng.uniform(size=len(xy)) < 0.15, 0, 2)
    keypoints = np.concatenate([np.round(xy, 1), visible[:, None]], axis=1)
    keypoints[visible == 0, :2] = 0  # COCO writes unlabelled keypoints as (0, 0, 0)
    return [float(x), float(y), float(w), float(h)], keypoints


def _split(root: str, split: str, images: Sequence[Tuple[int, int, int]], rng: np.random.RandomState,
           first_id: int) -> None:
    image_dir = os.path.join(root, f'{split}2017')
    os.makedirs(image_dir, exist_ok=True)
    image_records, annotations = [], []
    for offset, (width, height, people) in enumerate(images):
        image_id = first_id + offset
        file_name = f'{image_id:012d}.jpg'
        pixels = _image(rng, width, height)
        for _ in range(people):
            (x, y, w, h), keypoints = _person(rng, width, height)
            pixels[int(y):int(y + h), int(x):int(x + w)] //= 2  # the body, darker than the background
            for index, (kx, ky, v) in enumerate(keypoints):
                if v:  # each joint a bright dot of its own colour
                    cx, cy = int(kx), int(ky)
                    pixels[max(cy - 1, 0):cy + 2, max(cx - 1, 0):cx + 2] = (255, 15 * index, 255 - 15 * index)
            annotations.append(dict(
                id=len(annotations) + 1 + first_id * 10, image_id=image_id, category_id=1,
                bbox=[x, y, w, h], area=w * h * 0.6, iscrowd=0, num_keypoints=int((keypoints[:, 2] > 0).sum()),
                keypoints=[float(v) for v in keypoints.reshape(-1)],
                segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]]))
        Image.fromarray(pixels).save(os.path.join(image_dir, file_name), quality=95)
        image_records.append(dict(id=image_id, file_name=file_name, width=width, height=height))
    categories = [dict(id=1, name='person', supercategory='person', keypoints=list(COCO_KEYPOINTS),
                       skeleton=COCO_SKELETON)]
    with open(os.path.join(root, 'annotations', f'person_keypoints_{split}2017.json'), 'w') as f:
        json.dump(dict(images=image_records, annotations=annotations, categories=categories,
                       info=dict(description='synthetic'), licenses=[]), f)


def write_coco_keypoints(root: str, seed: int = 0) -> str:
    """COCO keypoints layout: ``annotations/person_keypoints_{train,val}2017.json``, ``{train,val}2017/``."""
    os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
    rng = np.random.RandomState(seed)
    _split(root, 'train', POSE_TRAIN_IMAGES, rng, first_id=1)
    _split(root, 'val', POSE_VAL_IMAGES, rng, first_id=101)
    return root + '/'

