"""Sliding-window inference: a model of one fixed input size (an exported library, a compiled
module) applied to a larger volume.

``sliding_window(predict, volume, window, overlap=0.25, blend="gaussian")`` cuts ``volume``
(``(N, C, *spatial)``) into windows of the spatial size ``window`` that overlap by about ``overlap``
of the window along each axis, calls ``predict`` on each (``(N, C, *window)`` in, ``(N, K, *window)``
out) and blends the predictions into one ``(N, K, *spatial)`` array: each output voxel is the
weighted mean of the predictions of every window that covers it. The weights are constant
(``blend="constant"``: the plain mean) or a Gaussian centred in the window (``"gaussian"``, standard
deviation ``sigma_scale`` times the window size per axis), which trusts a window's centre more than
its borders, where a convolution sees the zero padding.

Along each axis the windows start at 0, every ``step = max(1, round(window * (1 - overlap)))``
voxels, and the last one ends at the volume's end (so every voxel is covered and the windows stay
inside the volume). An axis shorter than the window is padded with zeros at its end for the
prediction and cropped back afterwards. When one window covers the whole volume the result is
``predict(volume)`` (exactly with constant weights; up to float32 rounding with Gaussian ones).
"""
from __future__ import annotations

import itertools

import numpy as np

BLENDS = ("constant", "gaussian")


def sliding_window(predict, volume, window, overlap: float = 0.25, blend: str = "gaussian",
                   sigma_scale: float = 0.125) -> np.ndarray:
    """The blended prediction of `predict` over `volume` (see the module's docstring), float32."""
    volume = np.asarray(volume, dtype=np.float32)
    window = _checked_window(volume, window, overlap, blend)
    spatial = volume.shape[2:]
    padded = _pad_to(volume, window)
    weights = window_weights(window, blend, sigma_scale)
    total = norm = None
    for corner in itertools.product(*(window_starts(size, w, overlap) for size, w in zip(padded.shape[2:], window))):
        region = (slice(None), slice(None)) + tuple(slice(c, c + w) for c, w in zip(corner, window))
        prediction = np.asarray(predict(padded[region]), dtype=np.float32)
        _check_prediction(prediction, volume.shape[0], window)
        if total is None:
            total = np.zeros(prediction.shape[:2] + padded.shape[2:], np.float32)
            norm = np.zeros(padded.shape[2:], np.float32)
        total[region] += prediction * weights
        norm[region[2:]] += weights
    result = total / norm
    return np.ascontiguousarray(result[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)])


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """The first voxels of the windows along an axis of `size` (>= `window`) voxels."""
    step = max(1, round(window * (1 - overlap)))
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def window_weights(window: tuple, blend: str = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
    """Each voxel's weight in a window's prediction: ones, or a product of one Gaussian per axis
    (peak 1 at the window's centre), kept above a small floor so no voxel is weighted zero."""
    if blend == "constant":
        return np.ones(window, np.float32)
    weights = np.ones((), np.float64)
    for w in window:
        offsets = np.arange(w) - (w - 1) / 2
        axis = np.exp(-0.5 * (offsets / (sigma_scale * w)) ** 2)
        weights = np.multiply.outer(weights, axis)
    return np.maximum(weights, 1e-3).astype(np.float32)


def _checked_window(volume: np.ndarray, window, overlap: float, blend: str) -> tuple:
    if volume.ndim < 3:
        raise ValueError(f"sliding_window: expected a volume (N, C, *spatial), got shape {volume.shape}")
    window = (window,) * (volume.ndim - 2) if isinstance(window, (int, np.integer)) else tuple(window)
    if len(window) != volume.ndim - 2 or not all(isinstance(w, (int, np.integer)) and w >= 1 for w in window):
        raise ValueError(f"sliding_window: window must be {volume.ndim - 2} positive int(s), one per spatial axis "
                         f"of the volume {volume.shape}, got {window}")
    if not 0 <= overlap < 1:
        raise ValueError(f"sliding_window: overlap must be in [0, 1), got {overlap}")
    if blend not in BLENDS:
        raise ValueError(f"sliding_window: blend must be one of {BLENDS}, got {blend!r}")
    return tuple(int(w) for w in window)


def _pad_to(volume: np.ndarray, window: tuple) -> np.ndarray:
    """`volume` with zeros after the end of each spatial axis shorter than the window."""
    missing = [max(0, w - s) for s, w in zip(volume.shape[2:], window)]
    if not any(missing):
        return volume
    return np.pad(volume, [(0, 0), (0, 0)] + [(0, m) for m in missing])


def _check_prediction(prediction: np.ndarray, batch: int, window: tuple) -> None:
    if prediction.ndim != 2 + len(window) or prediction.shape[0] != batch or prediction.shape[2:] != window:
        raise ValueError(f"sliding_window: predict must return (N={batch}, channels, *{window}) for a window, "
                         f"got shape {prediction.shape}")
