"""Each method at its paper size and resolution on CPU (batch 1): one training-mode forward
with loss and gradient, output shapes, and the parameter counts of the baselines against the
PyTorch models (torchvision ResNet-50: 25.56 M; timm Swin-B/384: 87.9 M at 1000 classes)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgvc_jax import aot
from fgvc_jax.methods import registry
from fgvc_jax.reference.torch_import import timm, torchvision

pytestmark = pytest.mark.slow


def _n_torch(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name", [n for n in sorted(registry.METHODS) if registry.has_paper_size(n)]
)
def test_full_size_forward_loss_gradient(name):
    classes = 1000 if name.startswith("baseline") else 200
    cfg = registry.default_config(name, "full")
    method = registry.create(cfg, classes)
    x = jnp.asarray(
        np.random.default_rng(0).normal(size=(1, cfg.image_size, cfg.image_size, 3)), jnp.float32
    )
    labels = jnp.array([3])
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    variables = jax.jit(lambda x: method.network.init(rngs, x, train=True))(x)
    n_params = sum(a.size for a in jax.tree.leaves(variables["params"]))
    print(f"\n{name}: {n_params / 1e6:.2f} M parameters at {cfg.image_size}px, {classes} classes")
    if name == "baseline_resnet":
        assert n_params == _n_torch(torchvision.models.resnet50())  # 25_557_032
    if name == "baseline_swin":
        assert n_params == _n_torch(timm.create_model(cfg.backbone, pretrained=False))

    def loss_fn(params):
        out, _ = method.network.apply(
            {**variables, "params": params},
            x,
            train=True,
            rngs={"dropout": jax.random.key(2)},
            mutable=["batch_stats"],
        )
        loss, terms = method.loss(out, labels)
        return loss, out

    step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    if name == "baseline_swin":
        # Swin-B/384: 47.2 GMAC forward x 3 (forward + backward) x 2 FLOP/MAC ≈ 283 GFLOP per
        # image (a loop in the step, whose body XLA's cost analysis counts once, would halve it).
        # The figure `fgvc_jax.aot` reports (`hlo_flops` of the lowered step, batch 1 here).
        gflops = aot.hlo_flops(step.lower(variables["params"])) / 1e9
        assert 260 < gflops < 320, gflops
    (loss, out), grads = step(variables["params"])
    assert all(v.shape == (1, classes) for v in out.logits.values())
    assert np.isfinite(float(loss))
    g = jax.tree.leaves(grads["backbone"])
    assert all(np.all(np.isfinite(np.asarray(a))) for a in g)
    assert sum(float(jnp.abs(a).sum()) for a in g) > 0
    if name == "swinfc":  # stage 4 at 384: 12x12 tokens, FSM picks 2 blocks x 32 heads
        assert out.aux["fsm_index"].shape == (1, 64)
        assert out.aux["fsm"].shape == (1, 1024)
    if name == "cra_smra":  # SMRAM maps at conv5_x's 14x14
        assert out.aux["smram"].shape == (1, 3, 14 * 14)
