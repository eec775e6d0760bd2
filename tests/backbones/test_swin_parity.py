"""timm Swin ⇔ fgvc_jax Swin through the converter: every stage, the logits, the attention."""

import re

import flax.linen as nn
import jax
import numpy as np
import pytest

from fgvc_jax.convert import build, convert_state_dict, load_pretrained
from fgvc_jax.convert import torch_reference as ref
from fgvc_jax.convert.rel_pos_bias import resize_rel_pos_bias_table
from fgvc_jax.reference.torch_import import timm, torch
from tests.torch_checkpoints import random_images, saved_reference

TOL = 1e-4  # max abs difference relative to the output's max magnitude (issue 2)


def test_swin_tiny_224_parity(tmp_path):
    arch = "swin_tiny_patch4_window7_224"
    tmodel = saved_reference(arch, tmp_path / "w.pth")
    variables = load_pretrained(arch, str(tmp_path / "w.pth"), num_classes=None)
    x = random_images(2, 224)
    errs = ref.max_relative_errors(
        ref.jax_stages(build(arch, 1000), variables, x), ref.torch_stages(tmodel, x)
    )
    assert set(errs) == set(ref.STAGES)
    assert max(errs.values()) <= TOL, errs


@pytest.mark.slow
def test_swin_base_384_parity_and_stage4_attention(tmp_path):
    arch = "swin_base_patch4_window12_384"
    tmodel = saved_reference(arch, tmp_path / "w.safetensors.pth")
    variables = load_pretrained(arch, str(tmp_path / "w.safetensors.pth"), num_classes=None)
    x = random_images(1, 384)
    model = build(arch, 1000)
    ours = ref.jax_stages(model, variables, x)
    theirs = ref.torch_stages(tmodel, x)
    assert ours["stage4"].shape == (1, 12, 12, 1024)
    errs = ref.max_relative_errors(ours, theirs)
    assert max(errs.values()) <= TOL, errs

    # Stage 4 is one 12x12 window: each block's post-softmax attention is (B, heads, 144, 144).
    captured = []
    hooks = [
        blk.attn.softmax.register_forward_hook(lambda m, i, o: captured.append(o.numpy()))
        for blk in tmodel.layers[3].blocks
    ]
    with torch.no_grad():
        tmodel.layers[3](torch.from_numpy(np.asarray(ours["stage3"])))
    for h in hooks:
        h.remove()
    _, attns = nn.apply(lambda m, t: m.stage(4, t, return_attn=True), model)(
        variables, theirs["stage3"]
    )
    assert len(attns) == 2 and attns[0].shape == (1, 32, 144, 144)
    for a, b in zip(attns, captured):
        np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(np.asarray(a).sum(-1), 1.0, atol=1e-5)


def _official_release(timm_sd: dict, depths, window: int, img_size: int) -> dict:
    """The official Microsoft Swin release layout: patch merging at the END of stages 1-3,
    `head.weight`, and the persistent relative_position_index / attn_mask buffers."""
    out = {}
    for k, v in timm_sd.items():
        k = re.sub(
            r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k
        )
        out[re.sub(r"^head\.fc\.", "head.", k)] = v
    res = img_size // 4
    for i, d in enumerate(depths):
        w = min(res, window)
        for j in range(d):
            out[f"layers.{i}.blocks.{j}.attn.relative_position_index"] = np.zeros(
                (w * w, w * w), np.int64
            )
            if j % 2 and res > window:
                out[f"layers.{i}.blocks.{j}.attn_mask"] = np.zeros(
                    ((res // w) ** 2, w * w, w * w), np.float32
                )
        res //= 2
    return out


def test_official_release_keys_convert_to_the_same_variables(tmp_path):
    arch = "swin_tiny_patch4_window7_224"
    tmodel = saved_reference(arch, tmp_path / "w.pth")
    timm_sd = {k: v.numpy() for k, v in tmodel.state_dict().items()}
    official = _official_release(timm_sd, (2, 2, 6, 2), 7, 224)
    assert "layers.0.downsample.reduction.weight" in official and "head.weight" in official
    a = convert_state_dict(arch, timm_sd, None)
    b = convert_state_dict(arch, official, None)
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_other_window_and_resolution_matches_timm_resized(tmp_path):
    """A window-7/224 checkpoint used at 384 with window 12: the bias tables are resized as
    timm's loader resizes them, and the whole model matches timm's at the new size."""
    arch = "swin_tiny_patch4_window7_224"
    saved_reference(arch, tmp_path / "w.pth")
    sd = torch.load(tmp_path / "w.pth", weights_only=True)
    tmodel = timm.create_model(arch, pretrained=False, img_size=384, window_size=12).eval()
    tmodel.load_state_dict(timm.models.swin_transformer.checkpoint_filter_fn(sd, tmodel))
    variables = load_pretrained(
        arch, str(tmp_path / "w.pth"), num_classes=None, img_size=384, window_size=12
    )
    table = variables["params"]["layers_0"]["blocks_0"]["attn"]["relative_position_bias_table"]
    assert table.shape == (23 * 23, 3)
    x = random_images(1, 384)
    errs = ref.max_relative_errors(
        ref.jax_stages(build(arch, 1000, img_size=384, window_size=12), variables, x),
        ref.torch_stages(tmodel, x),
    )
    assert max(errs.values()) <= TOL, errs


@pytest.mark.parametrize("src,dst", [(7, 12), (12, 7), (7, 7)])
def test_rel_pos_bias_resize_matches_timm(src, dst):
    table = np.random.default_rng(0).standard_normal(((2 * src - 1) ** 2, 4)).astype(np.float32)
    want = timm.layers.resize_rel_pos_bias_table(
        torch.from_numpy(table), (dst, dst), ((2 * dst - 1) ** 2, 4)
    ).numpy()
    got = resize_rel_pos_bias_table(table, (dst, dst))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_stochastic_depth_drops_whole_samples():
    model = build(
        "swin_tiny_patch4_window7_224",
        0,
        img_size=64,
        window_size=4,
        depths=(2, 2, 2, 2),
        embed_dim=16,
        num_heads=(1, 2, 2, 4),
        drop_path_rate=0.9,
    )
    x = random_images(8, 64)
    variables = model.init(jax.random.PRNGKey(0), x)
    eval_out = model.apply(variables, x)
    np.testing.assert_array_equal(eval_out, model.apply(variables, x, train=False))
    outs = [
        model.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(s)})
        for s in (1, 2)
    ]
    assert not np.allclose(outs[0], eval_out) and not np.allclose(outs[0], outs[1])
    with pytest.raises(Exception, match="dropout"):
        model.apply(variables, x, train=True)  # needs the 'dropout' rng
