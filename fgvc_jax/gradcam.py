"""Grad-CAM of every stage of any method's network, and the intermediate maps the explainer
shows, without changing the network's code: flax `nn.intercept_methods` taps the calls.

Stages tapped: the backbone's `stage(i, ...)` outputs (ResNet `conv{i+1}_x`, Swin `stage{i}`)
for networks with a `backbone`; otherwise (attention_cnn) the network's own convolutions and
its `attention` block. A zero "probe" is added to each tapped output, so that the gradient of
the score with respect to the probe is the gradient with respect to that stage's activation.

Grad-CAM (Selvaraju et al. 2017): w_c = mean_{h,w} ∂y/∂A_c, CAM = ReLU(Σ_c w_c A_c), where the
score y is the target class's logit summed over all of the method's heads (for one-head
methods exactly the usual class logit).

Also recorded (`extras`, by module path): each HybridAttention's input and map (MA-EA), each
CRAM's enhanced output X_e (CRA-SMRA), stage-4 attention of a `return_attn` stage call and the
backbone's final norm output (SwinFC).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fgvc_jax.backbones.resnet import ResNet
from fgvc_jax.backbones.swin import SwinTransformer
from fgvc_jax.layers.cram import CRAM
from fgvc_jax.layers.hybrid import HybridAttention


def _path(module: nn.Module) -> str:
    return "/".join(module.scope.path) if module.scope is not None else module.name


def tap_name(module: nn.Module, method_name: str, args: tuple, top: nn.Module) -> str | None:
    """Name of the stage this call's output is, or None."""
    if method_name == "stage" and isinstance(module, ResNet):
        return f"conv{int(args[0]) + 1}_x"
    if method_name == "stage" and isinstance(module, SwinTransformer):
        return f"stage{int(args[0])}"
    if (method_name == "__call__" and not hasattr(top, "backbone") and module.scope is not None
            and len(module.scope.path) == 1
            and (isinstance(module, nn.Conv) or module.name == "attention")):
        return module.name
    return None


def apply_with_taps(network: nn.Module, variables: dict, x: jax.Array,
                    probes: dict[str, jax.Array] | None = None):
    """network.apply(variables, x, train=False) with the taps: returns (Outputs, stage
    activations {name: (B, H, W, C)} with `probes` added, extras {key: array or list})."""
    acts: dict[str, Any] = {}
    extras: dict[str, Any] = {}

    def interceptor(next_fun, args, kwargs, context):
        module, name = context.module, context.method_name
        out = next_fun(*args, **kwargs)
        stage = tap_name(module, name, args, network)
        if stage is not None:
            y, rest = (out[0], tuple(out[1:])) if isinstance(out, tuple) else (out, None)
            if probes is not None:
                y = y + probes[stage].astype(y.dtype)
            acts[stage] = y
            if rest:
                extras[f"attn/{stage}"] = rest[0]
            out = (y,) + rest if rest is not None else y
        elif name == "__call__" and isinstance(module, HybridAttention):
            extras[f"ma/{_path(module)}"] = (args[0], out[1])
        elif name == "__call__" and isinstance(module, CRAM):
            extras[f"cram/{_path(module)}"] = out[0]
        elif (name == "__call__" and module.name == "norm"
              and isinstance(module.parent, SwinTransformer)):
            extras["swin_norm"] = out
        return out

    with nn.intercept_methods(interceptor):
        outputs = network.apply(variables, x, train=False)
    return outputs, acts, extras


def target_score(outputs, targets: jax.Array) -> jax.Array:
    """Σ over heads and batch of the target class's logit."""
    return sum(jnp.take_along_axis(v.astype(jnp.float32), targets[:, None], axis=1).sum()
               for v in outputs.logits.values())


def cam_from(act: jax.Array, grad: jax.Array) -> jax.Array:
    """Grad-CAM map (B, H, W) from an activation and its gradient (B, H, W, C)."""
    a, g = act.astype(jnp.float32), grad.astype(jnp.float32)
    w = jnp.mean(g, axis=(1, 2), keepdims=True)
    return jax.nn.relu(jnp.sum(w * a, axis=-1))


def grad_cam(method, variables: dict, x: jax.Array, targets: jax.Array | None = None):
    """Grad-CAM of every tapped stage for normalised images `x`. `targets` (B,) default to
    the method's predicted classes. Returns (cams {stage: (B, H, W)}, probs (B, K),
    targets, extras of the forward pass)."""
    network = method.network
    if targets is None:
        outputs, _, _ = apply_with_taps(network, variables, x)
        targets = jnp.argmax(method.predict(outputs), axis=-1)
    shapes = jax.eval_shape(lambda: apply_with_taps(network, variables, x)[1])
    probes = {k: jnp.zeros(s.shape, jnp.float32) for k, s in shapes.items()}

    def score(probes):
        outputs, acts, extras = apply_with_taps(network, variables, x, probes)
        return target_score(outputs, targets), (outputs, acts, extras)

    grads, (outputs, acts, extras) = jax.grad(score, has_aux=True)(probes)
    cams = {k: cam_from(acts[k], grads[k]) for k in acts}
    return cams, method.predict(outputs).astype(jnp.float32), targets, extras
