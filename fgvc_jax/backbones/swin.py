"""Swin Transformer T/S/B/L with timm's layout and numerics (docs/methods.md §0).

NHWC stages as timm ≥ 0.9: patch merging at the START of stages 2-4 (the official release
has it at the end of stages 1-3; the converter moves it). PatchMerging channel order
x0, x1, x2, x3 as timm; cyclic shift by -window/2 with the -100 mask; relative position bias
table (2W-1)² x heads; LayerNorm eps 1e-5; exact (erf) GELU; stochastic depth (rng 'dropout').
When a stage's resolution ≤ window, window = resolution and shift = 0 (timm's
`_calc_window_shift`), so stage 4 at 384/window 12 is one 12x12 window. Inputs whose feature
sizes are not window multiples are padded as timm does.

Stage-wise access: `embed`, `stage(i)` for i = 1..4 (optionally returning each block's
post-softmax attention), `norm` (the final LayerNorm) and `head` (GAP + fc).
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fgvc_jax.runtime.precision import upcast

trunc02 = nn.initializers.truncated_normal(0.02)
LayerNorm = functools.partial(nn.LayerNorm, epsilon=1e-5, use_fast_variance=False)


def relative_position_index(window: tuple[int, int]) -> np.ndarray:
    """(N, N) index into the (2Wh-1)(2Ww-1) bias table, as timm/official Swin."""
    wh, ww = window
    coords = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")).reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)
    rel[:, :, 0] += wh - 1
    rel[:, :, 1] += ww - 1
    rel[:, :, 0] *= 2 * ww - 1
    return rel.sum(-1)


def shifted_window_mask(hp: int, wp: int, window, shift) -> np.ndarray:
    """(nW, N, N) additive mask: -100 between tokens from different regions after the cyclic
    shift (timm `get_attn_mask`)."""
    img = np.zeros((hp, wp), np.float32)
    cnt = 0
    for h in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
        for w in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
            img[h[0] : h[1], w[0] : w[1]] = cnt
            cnt += 1
    win = window_partition(img[None, :, :, None], window).reshape(-1, window[0] * window[1])
    diff = win[:, None, :] - win[:, :, None]
    return np.where(diff != 0, -100.0, 0.0).astype(np.float32)


def window_partition(x, window):
    """(B, H, W, C) → (B * nW, Wh, Ww, C), windows in raster order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window[0], window[0], w // window[1], window[1], c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window[0], window[1], c)


def window_reverse(windows, window, h, w):
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window[0], w // window[1], window[0], window[1], c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample, scale survivors by 1/keep."""

    rate: float

    @nn.compact
    def __call__(self, x, train: bool):
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(
            self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1)
        )
        return jnp.where(mask, x / keep, 0).astype(x.dtype)


class WindowAttention(nn.Module):
    """W-MSA with relative position bias; returns (out, post-softmax attention)."""

    dim: int
    num_heads: int
    window: tuple[int, int]
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, mask=None):
        bw, n, c = x.shape
        hd = c // self.num_heads
        dense = functools.partial(
            nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=trunc02
        )
        table = self.param(
            "relative_position_bias_table",
            trunc02,
            ((2 * self.window[0] - 1) * (2 * self.window[1] - 1), self.num_heads),
            self.param_dtype,
        )
        qkv = dense(3 * c, name="qkv")(x).reshape(bw, n, 3, self.num_heads, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q * hd**-0.5, k)
        bias = table[relative_position_index(self.window).reshape(-1)].reshape(n, n, -1)
        logits = logits + bias.transpose(2, 0, 1).astype(logits.dtype)
        if mask is not None:
            nw = mask.shape[0]
            logits = logits.reshape(-1, nw, self.num_heads, n, n) + mask[None, :, None].astype(
                logits.dtype
            )
            logits = logits.reshape(-1, self.num_heads, n, n)
        attn = jax.nn.softmax(upcast(logits), axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(bw, n, c)
        return dense(c, name="proj")(out), attn


class SwinBlock(nn.Module):
    dim: int
    num_heads: int
    window: tuple[int, int]
    shift: tuple[int, int]
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        b, h, w, c = x.shape
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        ws, sh = self.window, self.shift
        y = LayerNorm(name="norm1", **kw)(x)
        if any(sh):
            y = jnp.roll(y, (-sh[0], -sh[1]), axis=(1, 2))
        ph, pw = (-h) % ws[0], (-w) % ws[1]
        y = jnp.pad(y, ((0, 0), (0, ph), (0, pw), (0, 0)))
        hp, wp = h + ph, w + pw
        mask = jnp.asarray(shifted_window_mask(hp, wp, ws, sh)) if any(sh) else None
        windows = window_partition(y, ws).reshape(-1, ws[0] * ws[1], c)
        y, attn = WindowAttention(c, self.num_heads, ws, name="attn", **kw)(windows, mask)
        y = window_reverse(y.reshape(-1, ws[0], ws[1], c), ws, hp, wp)[:, :h, :w]
        if any(sh):
            y = jnp.roll(y, sh, axis=(1, 2))
        x = x + DropPath(self.drop_path)(y, train)
        y = LayerNorm(name="norm2", **kw)(x)
        dense = functools.partial(nn.Dense, kernel_init=trunc02, **kw)
        y = dense(int(c * self.mlp_ratio), name="mlp_fc1")(y)
        y = dense(c, name="mlp_fc2")(nn.gelu(y, approximate=False))
        x = x + DropPath(self.drop_path)(y, train)
        return x, attn.reshape(b, -1, self.num_heads, ws[0] * ws[1], ws[0] * ws[1])


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat in timm's order (x0, x1, x2, x3) → LayerNorm → Linear 4C→2C."""

    out_dim: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        b, h, w, c = x.shape
        x = (
            x.reshape(b, h // 2, 2, w // 2, 2, c)
            .transpose(0, 1, 3, 4, 2, 5)
            .reshape(b, h // 2, w // 2, 4 * c)
        )
        x = LayerNorm(name="norm", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return nn.Dense(
            self.out_dim,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=trunc02,
            name="reduction",
        )(x)


class SwinStage(nn.Module):
    dim: int
    depth: int
    num_heads: int
    window: tuple[int, int]
    resolution: tuple[int, int]  # of this stage's blocks at the configured img_size
    downsample: bool
    drop_path: Sequence[float]
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool, return_attn: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.downsample:
            x = PatchMerging(self.dim, name="downsample", **kw)(x)
        window = tuple(min(r, w) for r, w in zip(self.resolution, self.window))
        shift = tuple(0 if r <= w else w // 2 for r, w in zip(self.resolution, window))
        attns = []
        for j in range(self.depth):
            x, attn = SwinBlock(
                self.dim,
                self.num_heads,
                window,
                shift if j % 2 else (0, 0),
                self.mlp_ratio,
                self.drop_path[j],
                name=f"blocks_{j}",
                **kw,
            )(x, train)
            attns.append(attn)
        if not return_attn:
            return x
        if attns[0].shape[1] != 1:
            raise ValueError(
                f"return_attn needs a stage that is one window; got {attns[0].shape[1]} windows "
                f"at resolution {x.shape[1:3]} with window {window}"
            )
        return x, [a[:, 0] for a in attns]


class ClassifierHead(nn.Module):
    """timm ClassifierHead (NHWC): global average pool, then `fc` when num_classes > 0."""

    num_classes: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = jnp.mean(x, axis=(1, 2))
        if self.num_classes:
            x = nn.Dense(
                self.num_classes,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=trunc02,
                name="fc",
            )(x)
        return x


class PatchEmbed(nn.Module):
    embed_dim: int
    patch_size: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        p = self.patch_size
        x = nn.Conv(
            self.embed_dim,
            (p, p),
            (p, p),
            padding="VALID",
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="proj",
        )(x)
        return LayerNorm(name="norm", dtype=self.dtype, param_dtype=self.param_dtype)(x)


class SwinTransformer(nn.Module):
    img_size: int = 224
    patch_size: int = 4
    embed_dim: int = 96
    depths: Sequence[int] = (2, 2, 6, 2)
    num_heads: Sequence[int] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    num_classes: int = 0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def stage_channels(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.patch_embed = PatchEmbed(self.embed_dim, self.patch_size, **kw)
        dpr = np.linspace(0, self.drop_path_rate, sum(self.depths)).tolist()
        res = self.img_size // self.patch_size
        for i, d in enumerate(self.depths):
            res = res // 2 if i else res
            setattr(
                self,
                f"layers_{i}",
                SwinStage(
                    self.embed_dim * 2**i,
                    d,
                    self.num_heads[i],
                    (self.window_size,) * 2,
                    (res, res),
                    i > 0,
                    dpr[sum(self.depths[:i]) : sum(self.depths[: i + 1])],
                    self.mlp_ratio,
                    **kw,
                ),
            )
        self.norm = LayerNorm(**kw)
        self.head = ClassifierHead(self.num_classes, **kw)

    def embed(self, x):
        """Patch embedding + LayerNorm: (B, H, W, 3) → (B, H/4, W/4, C) NHWC tokens."""
        return self.patch_embed(x.astype(self.dtype))

    def stage(self, i: int, x, train: bool = False, return_attn: bool = False):
        """Stage i = 1..4 (timm `layers[i-1]`); with return_attn, also each block's
        post-softmax attention (B, heads, N, N) (the stage must be a single window)."""
        return getattr(self, f"layers_{i - 1}")(x, train, return_attn)

    def __call__(self, x, train: bool = False):
        x = self.embed(x)
        for i in range(1, len(self.depths) + 1):
            x = self.stage(i, x, train)
        return self.head(self.norm(x))


ARCHS = {
    # name: (embed_dim, depths, num_heads, window, img_size)
    "swin_tiny_patch4_window7_224": (96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 224),
    "swin_small_patch4_window7_224": (96, (2, 2, 18, 2), (3, 6, 12, 24), 7, 224),
    "swin_base_patch4_window7_224": (128, (2, 2, 18, 2), (4, 8, 16, 32), 7, 224),
    "swin_base_patch4_window12_384": (128, (2, 2, 18, 2), (4, 8, 16, 32), 12, 384),
    "swin_large_patch4_window7_224": (192, (2, 2, 18, 2), (6, 12, 24, 48), 7, 224),
    "swin_large_patch4_window12_384": (192, (2, 2, 18, 2), (6, 12, 24, 48), 12, 384),
}


def swin(arch: str, **overrides) -> SwinTransformer:
    """A Swin by timm name; any field can be overridden (e.g. a CPU-sized variant)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown Swin arch {arch!r}; expected one of {sorted(ARCHS)}")
    e, d, h, w, s = ARCHS[arch]
    fields = dict(embed_dim=e, depths=d, num_heads=h, window_size=w, img_size=s)
    return SwinTransformer(**{**fields, **overrides})
