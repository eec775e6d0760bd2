"""Grad-CAM of every backbone stage of any method's network, without changing the network's
code: flax `nn.intercept_methods` taps the backbone's `stage(i, ...)` calls, named by the
backbone registry (ResNet `conv{i+1}_x`, DenseNet `denseblock{i}`, Swin `stage{i}`); a
network without a backbone (attention_cnn) has its own convolutions and its `attention` block
tapped. A zero "probe" is added to each tapped output,
so that the gradient of the score with respect to the probe is the gradient with respect to
that stage's activation.

Grad-CAM (Selvaraju et al. 2017): w_c = mean_{h,w} ∂y/∂A_c, CAM = ReLU(Σ_c w_c A_c), where the
score y is the target class's logit summed over all of the method's heads (for one-head
methods exactly the usual class logit).

The same forward pass asks the network for its own maps (`explain=True`): they come back in
`Outputs.aux['maps']`, so this module knows nothing of any method.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fgvc_jax.backbones import registry


def tap_name(module: nn.Module, method_name: str, args: tuple, top: nn.Module) -> str | None:
    """Name of the stage this call's output is, or None."""
    if method_name == "stage":
        family = registry.of_module(module)
        if family is not None:
            return family.tap(int(args[0]))
    if (
        method_name == "__call__"
        and not hasattr(top, "backbone")
        and module.scope is not None
        and len(module.scope.path) == 1
        and (isinstance(module, nn.Conv) or module.name == "attention")
    ):
        return module.name
    return None


def apply_with_taps(
    network: nn.Module, variables: dict, x: jax.Array, probes: dict[str, jax.Array] | None = None
):
    """network.apply(variables, x, train=False, explain=True) with the taps: returns
    (Outputs, stage activations {name: (B, H, W, C)} with `probes` added)."""
    acts: dict[str, jax.Array] = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        stage = tap_name(context.module, context.method_name, args, network)
        if stage is None:
            return out
        y, rest = (out[0], tuple(out[1:])) if isinstance(out, tuple) else (out, None)
        if probes is not None:
            y = y + probes[stage].astype(y.dtype)
        acts[stage] = y
        return (y,) + rest if rest is not None else y

    with nn.intercept_methods(interceptor):
        outputs = network.apply(variables, x, train=False, explain=True)
    return outputs, acts


def target_score(outputs, targets: jax.Array) -> jax.Array:
    """Σ over heads and batch of the target class's logit."""
    return sum(
        jnp.take_along_axis(v.astype(jnp.float32), targets[:, None], axis=1).sum()
        for v in outputs.logits.values()
    )


def cam_from(act: jax.Array, grad: jax.Array) -> jax.Array:
    """Grad-CAM map (B, H, W) from an activation and its gradient (B, H, W, C)."""
    a, g = act.astype(jnp.float32), grad.astype(jnp.float32)
    w = jnp.mean(g, axis=(1, 2), keepdims=True)
    return jax.nn.relu(jnp.sum(w * a, axis=-1))


def grad_cam(method, variables: dict, x: jax.Array, targets: jax.Array | None = None):
    """Grad-CAM of every tapped stage for normalised images `x`. `targets` (B,) default to
    the classes of the method's combined score. Returns (cams {stage: (B, H, W)}, the
    method's scores {head | 'combined': (B, K)}, targets, the method's maps
    {title: (B, h, w)})."""
    network = method.network
    if targets is None:
        outputs, _ = apply_with_taps(network, variables, x)
        targets = jnp.argmax(method.scores(outputs)["combined"], axis=-1)
    shapes = jax.eval_shape(lambda: apply_with_taps(network, variables, x)[1])
    probes = {k: jnp.zeros(s.shape, jnp.float32) for k, s in shapes.items()}

    def score(probes):
        outputs, acts = apply_with_taps(network, variables, x, probes)
        return target_score(outputs, targets), (outputs, acts)

    grads, (outputs, acts) = jax.grad(score, has_aux=True)(probes)
    cams = {k: cam_from(acts[k], grads[k]) for k in acts}
    return cams, method.scores(outputs), targets, outputs.aux["maps"]
