"""Resize a Swin relative position bias table to another window, as timm does by default
(`timm.layers.resize_rel_pos_bias_table`, from BEiT): the source offsets are spread on a
geometric progression that spans the target offsets, then each head's (2W-1)² grid is
interpolated linearly (clamped at the edges) at the integer target offsets."""

import numpy as np


def _source_positions(src: int, dst: int) -> np.ndarray:
    left, right = 1.01, 1.5
    while right - left > 1e-6:
        q = (left + right) / 2.0
        if (1.0 - q ** (src // 2)) / (1.0 - q) > dst // 2:
            right = q
        else:
            left = q
    dis, cur = [], 1.0
    for i in range(src // 2):
        dis.append(cur)
        cur += q ** (i + 1)
    return np.array([-d for d in reversed(dis)] + [0.0] + dis)


def _interp_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) matrix of 1-D linear interpolation weights."""
    xs = _source_positions(src, dst)
    t = dst // 2
    targets = np.arange(-t, t + 0.1, 1.0)
    return np.stack([np.interp(targets, xs, np.eye(src)[j]) for j in range(src)], axis=1)


def resize_rel_pos_bias_table(table: np.ndarray, new_window: tuple[int, int]) -> np.ndarray:
    """(S², heads) table of a square window → ((2Wh-1)(2Ww-1), heads)."""
    n, heads = table.shape
    src = int(round(n**0.5))
    if src * src != n:
        raise ValueError(
            f"relative_position_bias_table of {n} rows is not a square window's (2W-1)²"
        )
    dst_h, dst_w = 2 * new_window[0] - 1, 2 * new_window[1] - 1
    if (src, src) == (dst_h, dst_w):
        return table
    grid = table.T.reshape(heads, src, src).astype(np.float64)
    out = _interp_matrix(src, dst_h) @ grid @ _interp_matrix(src, dst_w).T
    return out.reshape(heads, -1).T.astype(table.dtype)
