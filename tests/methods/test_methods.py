"""The methods on their CPU-sized variants (same code as the paper sizes): outputs, losses,
prediction rules, parameter groups, config lookup, and the method-level behaviours."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from fgvc_jax.methods import registry
from fgvc_jax.methods.base import Method, Outputs

K = 10
HEADS = {
    "baseline_resnet": {"main"},
    "baseline_swin": {"main"},
    "attention_cnn": {"main"},
    "ma_ea": {"main", "conv4_ma", "conv4_erased1", "conv5_ma", "conv5_erased1", "conv5_raw"},
    "cra_smra": {"stage3", "stage4", "stage5", "concat"},
    "swinfc": {"trunk", "stage2", "stage3", "stage4"},
}
TERMS = {
    "baseline_resnet": {"ce_main"},
    "baseline_swin": {"ce_main"},
    "attention_cnn": {"ce_main"},
    "ma_ea": {f"ce_{k}" for k in HEADS["ma_ea"]},
    "cra_smra": {"ce_stage3", "ce_stage4", "ce_stage5", "ce_concat", "div"},
    "swinfc": {"ce_trunk", "ce_stage2", "ce_stage3", "ce_stage4", "con"},
}
_CACHE = {}
# The tests' Swin is the CPU variant with fewer blocks (compile time dominates these tests);
# stage 4 keeps 2 blocks so that FSM sees several attention maps.
TEST_SWIN_DEPTHS = (1, 1, 1, 2)


class Built:
    """A CPU-variant method with its variables, inputs and jitted functions (compiled once
    per method for the whole module: compilation dominates the cost of these tests)."""

    def __init__(self, name, **overrides):
        cfg = registry.default_config(name, "cpu")
        cfg.update(overrides)
        if "backbone_overrides" in cfg:
            cfg.backbone_overrides.depths = TEST_SWIN_DEPTHS
        self.method = method = registry.create(cfg, K)
        rng = np.random.default_rng(0)
        self.images = jnp.asarray(
            rng.normal(size=(2, cfg.image_size, cfg.image_size, 3)), jnp.float32
        )
        self.labels = jnp.array([0, 3])
        rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
        self.variables = jax.jit(lambda x: method.network.init(rngs, x, train=True))(self.images)
        self.eval = jax.jit(lambda v, x: method.network.apply(v, x, train=False))
        self.train = jax.jit(
            lambda v, x: method.network.apply(
                v, x, train=True, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"]
            )[0]
        )


def built(name, **overrides):
    key = (name, tuple(sorted(overrides.items())))
    if key not in _CACHE:
        _CACHE[key] = Built(name, **overrides)
    return _CACHE[key]


def _method(name):
    """The method object alone (no variables, nothing compiled)."""
    return registry.create(registry.default_config(name, "cpu"), K)


def train_grad(b):
    def loss_fn(params):
        v = {**b.variables, "params": params}
        out, _ = b.method.network.apply(
            v, b.images, train=True, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"]
        )
        loss, terms = b.method.loss(out, b.labels)
        return loss, (out, terms)

    return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(b.variables["params"])


@pytest.mark.parametrize("name", sorted(registry.METHODS))
def test_cpu_variant_trains_and_predicts(name):
    b = built(name)
    (loss, (out, terms)), grads = train_grad(b)
    assert set(out.logits) == HEADS[name]
    assert all(v.shape == (2, K) for v in out.logits.values())
    assert set(terms) == TERMS[name]
    assert np.isfinite(float(loss))
    flat = [np.asarray(g) for g in jax.tree.leaves(grads)]
    assert all(np.all(np.isfinite(g)) for g in flat)
    assert sum(float(np.abs(g).sum()) for g in flat) > 0
    probs = np.asarray(b.method.predict(b.eval(b.variables, b.images)))
    assert probs.shape == (2, K)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_prediction_rules():
    z = {
        k: jnp.asarray(np.random.default_rng(i).normal(size=(3, K)), jnp.float32)
        for i, k in enumerate(["trunk", "stage2", "stage3", "stage4", "stage5", "concat", "main"])
    }
    sm = {k: np.asarray(jax.nn.softmax(v)) for k, v in z.items()}
    cra = _method("cra_smra").predict(Outputs(logits=z))
    np.testing.assert_allclose(
        cra, (sm["stage3"] + sm["stage4"] + sm["stage5"] + sm["concat"]) / 4, rtol=1e-6
    )
    fc = _method("swinfc").predict(Outputs(logits=z))
    np.testing.assert_allclose(
        fc, (sm["trunk"] + sm["stage2"] + sm["stage3"] + sm["stage4"]) / 4, rtol=1e-6
    )
    ma = _method("ma_ea").predict(Outputs(logits=z))
    np.testing.assert_allclose(ma, sm["main"], rtol=1e-6)


def test_loss_weights():
    labels = jnp.array([1, 2, 3])
    z = {
        k: jnp.asarray(np.random.default_rng(i).normal(size=(3, K)), jnp.float32)
        for i, k in enumerate(["trunk", "stage2", "stage3", "stage4", "stage5", "concat"])
    }
    cra = _method("cra_smra")
    smram = jax.nn.softmax(
        jnp.asarray(np.random.default_rng(9).normal(size=(3, 3, 4)), jnp.float32)
    )
    total, t = cra.loss(Outputs(logits=z, aux={"smram": smram}), labels)
    want = (
        2.0 * (t["ce_stage3"] + t["ce_stage4"] + t["ce_stage5"])
        + 1.0 * t["ce_concat"]
        + 1.0 * t["div"]
    )
    np.testing.assert_allclose(total, want, rtol=1e-6)
    fc = _method("swinfc")
    feats = jnp.asarray(np.random.default_rng(5).normal(size=(3, 8)), jnp.float32)
    total, t = fc.loss(Outputs(logits=z, aux={"fsm": feats}), labels)
    want = (
        t["ce_trunk"]
        + 0.4 * t["ce_stage2"]
        + 0.6 * t["ce_stage3"]
        + 0.8 * t["ce_stage4"]
        + t["con"]
    )
    np.testing.assert_allclose(total, want, rtol=1e-6)


def test_smram_is_absent_at_eval():
    b = built("cra_smra")
    assert "smram" in b.variables["params"]
    no_smram = {
        col: {k: v for k, v in tree.items() if k != "smram"} for col, tree in b.variables.items()
    }
    out = b.eval(no_smram, b.images)
    assert "smram" not in out.aux
    _, terms = b.method.loss(out, b.labels)
    assert "div" not in terms
    np.testing.assert_array_equal(
        out.logits["concat"], b.eval(b.variables, b.images).logits["concat"]
    )
    assert "smram" in b.train(b.variables, b.images).aux  # ...and present in training


def test_swinfc_trunk_equals_plain_swin():
    fc, base = built("swinfc"), built("baseline_swin")
    v = fc.variables
    plain = {"params": {"backbone": v["params"]["backbone"], "head": v["params"]["head"]}}
    out = fc.eval(v, fc.images)
    want = base.eval(plain, fc.images).logits["main"]
    np.testing.assert_allclose(out.logits["trunk"], want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out.logits["trunk"], out.logits["stage4"])


def test_cra_smra_suppression_feeds_the_next_stage_in_training():
    """With ω = 1 the 'scale' suppression is the identity: the trunk (and so every head)
    changes in training iff ω < 1."""
    b, off = built("cra_smra"), built("cra_smra", omega=1.0)
    assert not np.allclose(
        b.train(b.variables, b.images).logits["concat"],
        off.train(b.variables, b.images).logits["concat"],
    )


def _labels_of(method, params):
    groups = [(g, re.compile(rx)) for g, rx in method.param_groups().items()]
    flat = traverse_util.flatten_dict(params, sep="/")
    return {p: next((g for g, rx in groups if rx.search(p)), "new") for p in flat}


def test_param_groups():
    b = built("cra_smra")
    labels = _labels_of(b.method, b.variables["params"])
    for path, g in labels.items():
        want = "backbone" if path.startswith(("backbone/", "smram/")) else "new"
        assert g == want, path
    assert {"backbone", "new"} == set(labels.values())
    default = [
        n for n, m in sorted(registry.METHODS.items()) if m.param_groups is Method.param_groups
    ]
    for name in default:
        b = built(name)
        for path, g in _labels_of(b.method, b.variables["params"]).items():
            assert g == ("backbone" if path.startswith("backbone/") else "new"), path


def test_registry_errors_and_defaults():
    with pytest.raises(ValueError, match="attention_cnn.*baseline_resnet.*swinfc"):
        registry.default_config("transfg")
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        registry.create(ml_collections.ConfigDict({"name": "nope"}), 3)
    cfg = registry.default_config("swinfc")
    cfg.unknown_field = 1
    with pytest.raises(ValueError, match="unknown_field"):
        registry.create(cfg, 3)
    c = registry.default_config("cra_smra")
    assert (
        c.backbone,
        c.image_size,
        c.cram_out,
        c.omega,
        c.delta,
        c.alpha,
        c.beta,
        c.gamma,
        c.suppress_at_eval,
        c.suppress_form,
        c.smram_down,
        c.head_pool,
        c.channel_block,
    ) == ("resnet50", 448, 1024, 0.5, 0.9, 2.0, 1.0, 1.0, True, "scale", "avgpool", "max", "cram")
    c = registry.default_config("ma_ea")
    assert (
        c.stem_pool,
        c.erase,
        c.erase_theta,
        c.erase_rounds,
        c.ma_residual,
        c.erase_into_trunk,
        tuple(c.ma_stages),
    ) == ("multiscale", "soft", 0.8, 1, False, False, ("conv4_x", "conv5_x"))
    c = registry.default_config("swinfc")
    assert (
        c.backbone,
        c.image_size,
        c.proj_dim,
        c.ea_memory,
        tuple(c.stage_weights),
        c.con_margin,
        c.ffm_similarity,
        c.ffm_scale,
    ) == ("swin_base_patch4_window12_384", 384, 1024, 64, (0.4, 0.6, 0.8), 0.4, "dot", 1.0)
    assert registry.default_config("swinfc", "cpu").image_size == 64


def test_cra_smra_alpha_weights_the_stage_terms():
    """One-hot (confident, correct) concat logits: CE_concat ≈ 0, each stage CE = log K, so the
    total is α · 3 log K (the paper: α on each stage, β on the overall head)."""
    labels = jnp.array([1, 2])
    confident = 50.0 * jax.nn.one_hot(labels, K)
    z = {
        "stage3": jnp.zeros((2, K)),
        "stage4": jnp.zeros((2, K)),
        "stage5": jnp.zeros((2, K)),
        "concat": confident,
    }
    total, t = _method("cra_smra").loss(Outputs(logits=z), labels)
    np.testing.assert_allclose(t["ce_concat"], 0.0, atol=1e-6)
    np.testing.assert_allclose(total, 2.0 * 3 * np.log(K), rtol=1e-6)


def test_cra_smra_suppresses_at_evaluation():
    """`suppress_at_eval=True` (default): the next stage sees X_s at evaluation too, so the
    eval logits differ from the unsuppressed network's with the same weights; with ω = 1 in
    the 'scale' form nothing is suppressed and they agree."""
    on, off = built("cra_smra"), built("cra_smra", suppress_at_eval=False)
    assert not np.allclose(
        on.eval(on.variables, on.images).logits["concat"],
        off.eval(on.variables, on.images).logits["concat"],
    )
    keep = built("cra_smra", omega=1.0)
    np.testing.assert_allclose(
        keep.eval(on.variables, on.images).logits["concat"],
        off.eval(on.variables, on.images).logits["concat"],
        rtol=1e-5,
    )


def test_cra_smra_logs_suppressed_channels():
    """The mean number of suppressed channels per CRAM is sown into 'metrics' in training
    (between 1 and C: at least the argmax channel is always selected)."""
    b = built("cra_smra")
    _, mutated = b.method.network.apply(
        b.variables, b.images, train=True, mutable=["batch_stats", "metrics"]
    )
    widths = {"cram3": 128, "cram4": 256, "cram5": 512}  # ResNet-18 stage widths
    for name, c in widths.items():
        count = mutated["metrics"][name]["suppressed_channels"]
        assert 1.0 <= float(count) <= c, (name, float(count))


def test_cra_smra_on_densenet():
    """CRA-SMRA on DenseNet-121 (`--config.method.backbone=densenet121`; the paper's
    DenseNet-161 is the same code): CRAM after denseblock2, 3, 4, the backbone's parameters
    under backbone/ (the 'backbone' learning-rate group), every head and loss term."""
    b = built("cra_smra", backbone="densenet121")
    (loss, (out, terms)), grads = train_grad(b)
    assert set(out.logits) == HEADS["cra_smra"] and set(terms) == TERMS["cra_smra"]
    assert np.isfinite(float(loss))
    assert "features" in b.variables["params"]["backbone"]
    assert float(sum(jnp.abs(g).sum() for g in jax.tree.leaves(grads["backbone"]))) > 0
    stage_widths = b.method.network.backbone.stage_channels
    assert b.variables["params"]["cram3"]["channel"]["fc1"]["kernel"].shape[0] == stage_widths[1]
