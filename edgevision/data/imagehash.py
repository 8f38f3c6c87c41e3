"""Perceptual image hashing (pHash) and a vectorized near-duplicate search.

pHash: the grey image is resized to ``32 x 32`` (area interpolation), transformed with a 2-D DCT
(`cv2.dct`), and the ``8 x 8`` lowest frequencies (top-left block, DC term included) give 64 bits:
bit ``k`` is set when coefficient ``k`` (row-major) is above the median of the 63 AC coefficients.
Two images whose hashes differ in at most ``threshold`` of the 64 bits (Hamming distance) are
near-duplicates; `DEFAULT_THRESHOLD` is 6. The hash survives resizing, JPEG recompression, brightness
and contrast changes and shifts of a few pixels; it does not survive crops, rotations or flips.

Search: `near_duplicate_pairs` compares every pair with numpy (XOR of ``uint64`` hashes, then
`numpy.bitwise_count`) in blocks of rows, so the work is ``O(n^2)`` machine operations but only
``O(n / block)`` Python steps, with ``O(block * n)`` memory: 10,000 images are 5e7 pairs, well under a
second.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

HASH_SIDE = 32
"""Side of the grey image the DCT is taken of."""
DEFAULT_THRESHOLD = 6
"""Largest Hamming distance (of 64 bits) at which two images count as near-duplicates."""
_BLOCK_ELEMENTS = 1 << 23
"""Pairs compared per numpy step (8M ``uint64`` = 64 MiB)."""
_WEIGHTS = (np.uint64(1) << np.arange(64, dtype=np.uint64)).astype(np.uint64)


def phash(grey: NDArray[np.uint8]) -> int:
    """The 64-bit perceptual hash of a grey image.

    Args:
        grey: ``(H, W)`` image (any dtype cv2 can resize; 8-bit from `cv2.imdecode` in practice).

    Returns:
        The hash as a Python int in ``[0, 2**64)``.

    Raises:
        ValueError: when ``grey`` is not 2-D or is empty.
    """
    import cv2

    if grey.ndim != 2 or grey.size == 0:
        raise ValueError(f"phash: expected a non-empty (H, W) grey image, got shape {grey.shape}")
    small = cv2.resize(grey.astype(np.float32), (HASH_SIDE, HASH_SIDE), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].reshape(-1)
    bits = low > np.median(low[1:])
    return int((_WEIGHTS[bits]).sum(dtype=np.uint64))


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()


def near_duplicate_pairs(hashes: NDArray[np.uint64], threshold: int = DEFAULT_THRESHOLD
                         ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Every pair ``i < j`` whose hashes differ in at most ``threshold`` bits.

    Args:
        hashes: ``(N,)`` uint64 hashes.
        threshold: largest Hamming distance, ``0..64``.

    Returns:
        ``(i, j, distance)``, three ``(P,)`` int64 arrays sorted by ``i`` then ``j``.

    Raises:
        ValueError: ``threshold`` outside ``0..64``.
    """
    if not 0 <= threshold <= 64:
        raise ValueError(f"near-duplicate threshold: expected 0..64 bits, got {threshold}")
    h = np.asarray(hashes, dtype=np.uint64).reshape(-1)
    n = len(h)
    rows = max(1, _BLOCK_ELEMENTS // max(n, 1))
    out_i, out_j, out_d = [], [], []
    for start in range(0, n, rows):
        block = h[start:start + rows]
        dist = np.bitwise_count(block[:, None] ^ h[None, :])  # (rows, n) uint8
        ii = np.arange(start, start + len(block))[:, None]
        hit = (dist <= threshold) & (np.arange(n)[None, :] > ii)
        bi, bj = np.nonzero(hit)
        out_i.append(bi + start)
        out_j.append(bj)
        out_d.append(dist[bi, bj])
    if not out_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return tuple(np.concatenate(x).astype(np.int64) for x in (out_i, out_j, out_d))  # type: ignore[return-value]
