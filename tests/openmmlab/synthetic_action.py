"""Tiny action-recognition sets in the layouts mmaction2 reads.

Rawframes (``RawframeDataset``): one folder of frames per clip and a list file of
``frame_dir total_frames label`` lines; optical-flow clips hold ``x_00001.jpg``/``y_00001.jpg``
pairs (the ``{}_{:05d}.jpg`` template of the flow configs), RGB clips ``img_00001.jpg``.
Videos (``VideoDataset``): MPEG-4 files and a list of ``file label`` lines.
Each class moves its pattern in its own direction, so motion and appearance tell them apart.
"""
from __future__ import annotations

import os
from typing import List, Tuple

import numpy as np
from PIL import Image

ACTION_CLASSES = 4
#: clips per split; ``label = index % ACTION_CLASSES``
ACTION_TRAIN_CLIPS = 4
ACTION_VAL_CLIPS = 2
FRAMES_PER_CLIP = 10
FRAME_SIZE = (64, 48)  # (width, height); decord misreads OpenCV's MPEG-4 at 48 px wide (a buffer size mismatch)

_DIRECTIONS = ((1, 0), (0, 1), (-1, 0), (0, -1))


def _clip(rng: np.random.RandomState, label: int, frames: int, size: Tuple[int, int]) -> List[np.ndarray]:
    """``frames`` RGB frames of a bright square that moves in the label's direction over a noisy background."""
    width, height = size
    dx, dy = _DIRECTIONS[label % len(_DIRECTIONS)]
    x, y = rng.randint(8, width - 16), rng.randint(8, height - 16)
    background = rng.randint(0, 80, size=(height, width, 3))
    clip = []
    for index in range(frames):
        frame = background + rng.randint(0, 20, size=background.shape)
        px, py = (x + 2 * dx * index) % (width - 8), (y + 2 * dy * index) % (height - 8)
        frame[py:py + 8, px:px + 8] = (200, 60 * label % 256, 255 - 50 * label)
        clip.append(np.clip(frame, 0, 255).astype(np.uint8))
    return clip


def _flow(previous: np.ndarray, current: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """A stand-in for TV-L1 flow stored as JPEGs: 128 plus a scaled brightness change, per axis."""
    delta = current.astype(np.int16).mean(axis=2) - previous.astype(np.int16).mean(axis=2)
    flow_x = np.clip(128 + np.roll(delta, 1, axis=1) / 2, 0, 255).astype(np.uint8)
    flow_y = np.clip(128 + np.roll(delta, 1, axis=0) / 2, 0, 255).astype(np.uint8)
    return flow_x, flow_y


def write_rawframes(root: str, modality: str = 'RGB', seed: int = 0) -> str:
    """``rawframes_{train,val}/<clip>/`` and ``{train,val}_list_rawframes.txt`` (``frame_dir total_frames label``).

    ``modality='Flow'`` writes ``x_%05d.jpg``/``y_%05d.jpg`` (one pair fewer than the clip's frames),
    ``'RGB'`` writes ``img_%05d.jpg``.
    """
    rng = np.random.RandomState(seed)
    for split, count in (('train', ACTION_TRAIN_CLIPS), ('val', ACTION_VAL_CLIPS)):
        lines = []
        for index in range(count):
            label = index % ACTION_CLASSES
            name = f'{split}_clip_{index:03d}'
            folder = os.path.join(root, f'rawframes_{split}', name)
            os.makedirs(folder, exist_ok=True)
            frames = _clip(rng, label, FRAMES_PER_CLIP + (modality == 'Flow'), FRAME_SIZE)
            if modality == 'Flow':
                for number, (previous, current) in enumerate(zip(frames, frames[1:]), start=1):
                    flow_x, flow_y = _flow(previous, current)
                    Image.fromarray(flow_x).save(os.path.join(folder, f'x_{number:05d}.jpg'), quality=95)
                    Image.fromarray(flow_y).save(os.path.join(folder, f'y_{number:05d}.jpg'), quality=95)
            else:
                for number, frame in enumerate(frames, start=1):
                    Image.fromarray(frame).save(os.path.join(folder, f'img_{number:05d}.jpg'), quality=95)
            lines.append(f'{name} {FRAMES_PER_CLIP} {label}')
        with open(os.path.join(root, f'{split}_list_rawframes.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return root


def write_videos(root: str, seed: int = 0) -> str:
    """``videos_{train,val}/*.mp4`` (MPEG-4 part 2, as OpenCV writes it) and ``{train,val}_list_videos.txt``."""
    import cv2

    rng = np.random.RandomState(seed)
    for split, count in (('train', ACTION_TRAIN_CLIPS), ('val', ACTION_VAL_CLIPS)):
        folder = os.path.join(root, f'videos_{split}')
        os.makedirs(folder, exist_ok=True)
        lines = []
        for index in range(count):
            label = index % ACTION_CLASSES
            name = f'{split}_video_{index:03d}.mp4'
            writer = cv2.VideoWriter(os.path.join(folder, name), cv2.VideoWriter_fourcc(*'mp4v'), 25, FRAME_SIZE)
            assert writer.isOpened(), 'OpenCV cannot write MPEG-4 here'
            for frame in _clip(rng, label, 2 * FRAMES_PER_CLIP, FRAME_SIZE):
                writer.write(frame[..., ::-1])  # OpenCV takes BGR
            writer.release()
            lines.append(f'{name} {label}')
        with open(os.path.join(root, f'{split}_list_videos.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return root
