"""MNIST for the paper's Table 1 (one digit as the anomaly), on the 10,000 test digits.

Protocol (the paper's, on the split that is available here): the nine normal
digits are split 80/20 train/test by a fixed seed; every image of the anomalous
digit goes to the test split; images are resized to 32x32 and scaled to [-1, 1];
15 epochs; the FINAL epoch's model scores the test split in eval mode (no model
picking by test AUC, no train-mode batch statistics at test time).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from xrayscreen.errors import ConfigError

from .data import WindowSet

IMAGES = "t10k-images-idx3-ubyte.gz"
LABELS = "t10k-labels-idx1-ubyte.gz"

PAPER_TABLE1 = (0.850, 0.330, 0.920, 0.771, 0.770, 0.800, 0.880, 0.780, 0.890, 0.580)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ConfigError(f"{path.name} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ConfigError(f"{path.name}: size does not match its header")
    return data.reshape(dims)


def load_mnist(folder: Path, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, size, size) uint8, labels (N,) int64)`` of the t10k split."""
    images = read_idx(folder / IMAGES)
    labels = read_idx(folder / LABELS).astype(np.int64)
    if size != images.shape[1]:
        images = np.stack(
            [cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in images]
        )
    return images, labels


@dataclass
class DigitSplit:
    """Train (normal only) and test (normal + anomalous) sets for one anomalous digit."""

    digit: int
    train: WindowSet
    test_x: torch.Tensor  # (N, 1, s, s) uint8 (see data.encode)
    test_y: np.ndarray  # 1 = anomalous digit


def digit_split(images: np.ndarray, labels: np.ndarray, digit: int, seed: int) -> DigitSplit:
    """The paper's split for anomaly ``digit``: normals 80/20 by ``seed``, all anomalies to test."""
    normal = np.flatnonzero(labels != digit)
    anomal = np.flatnonzero(labels == digit)
    g = torch.Generator().manual_seed(int(seed))
    perm = normal[torch.randperm(normal.size, generator=g).numpy()]
    n_train = int(round(0.8 * normal.size))
    tr, te_n = np.sort(perm[:n_train]), np.sort(perm[n_train:])
    x = torch.from_numpy(images)[:, None]  # uint8 = the rgb-style exact cache encoding
    train = WindowSet(
        data=x[torch.from_numpy(tr)],
        scan_index=torch.zeros(tr.size, dtype=torch.int64),
        scan_ids=[f"mnist-t10k-normal-not-{digit}"],
        scan_names=["mnist"],
    )
    test_idx = np.concatenate([te_n, anomal])
    test_y = np.concatenate([np.zeros(te_n.size, np.int64), np.ones(anomal.size, np.int64)])
    return DigitSplit(digit, train, x[torch.from_numpy(test_idx)], test_y)
