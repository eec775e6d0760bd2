"""Export a trained model as a TensorFlow SavedModel, an ONNX model or a `jax.export` module:
`python -m fgvc_jax.export --workdir DIR --out DIR [--format savedmodel|onnx|jax]
[--checkpoint best|latest]`.

`--format savedmodel` (the default):

The function `predict` runs (normalisation, network, the method's combined probabilities) is
converted with `jax.experimental.jax2tf.convert`, JAX's route to TensorFlow: its StableHLO,
lowered for `--platforms` (default cpu and cuda), runs in TensorFlow's `XlaCallModule` op
(jax2tf's native serialization, its only mode), so TensorFlow computes what JAX computes. The
weights are saved as `tf.Variable`s. Loading needs TensorFlow only:

- `serving_default(images)`: uint8 (B, C, C, 3) images at the eval crop C, already resized
  and cropped as in evaluation; the normalisation (x/255 − mean)/std is inside the model.
- `serving_bytes(image_bytes)`: tf.string (B,) encoded JPEG/PNG/GIF/BMP files, decoded and
  preprocessed in TensorFlow as `fgvc_jax.data.preprocess.eval_image` does (see
  `_tf_eval_image` for what is matched and what is not).

Both return `probabilities` (B, K) float32, the method's combined prediction, with
`class_index` (B,) int32 and `class_name` (B,) string of the top class. The class names are
also in `assets/class_names.txt` (one a line, in index order). B is any batch size unless
`--batch_size` fixes it.

`--format onnx` writes `model.onnx`, converted by jax2onnx from the same function, and
`--format jax` writes `model.jax`, its `jax.export` serialization (StableHLO, lowered for
`--platforms`), read back by `fgvc_jax.serving.load` (= `load` here) with JAX alone. Both take
`images` uint8 (B, C, C, 3) as `serving_default` does and give `probabilities` (B, K) float32;
the weights are constants of the model; `class_names.txt` lies beside it.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import tempfile

if __name__ == "__main__":
    # The command: no TensorFlow start-up chatter. TF 2.21 prints its oneDNN notice whatever
    # the log level; the export runs no TensorFlow computation, so oneDNN's kernels are not
    # needed. Set before cli_common's defaults (level 2) and before TensorFlow is imported.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from jax import lax  # noqa: E402
from jax import numpy as jnp  # noqa: E402
from jax.extend import core  # noqa: E402

from fgvc_jax import predict, serving  # noqa: E402
from fgvc_jax.run.trained import ToolError, Trained  # noqa: E402
from fgvc_jax.serving import load  # noqa: E402, F401  (fgvc_jax.export.load: a --format jax model)
from fgvc_jax.tools import cli_common  # noqa: E402

CLASS_NAMES_FILE = "class_names.txt"
FORMATS = {"savedmodel": "SavedModel", "onnx": "ONNX model", "jax": "jax.export model"}
ONNX_FILE = "model.onnx"


def _tf_eval_image(data, config):
    """Encoded image bytes → uint8 (C, C, 3), as `preprocess.eval_image` in TensorFlow ops.

    Matched: JPEGs decoded at PIL's `draft` DCT scale (1/2/4/8) for the resize target; grey,
    LA and RGBA → RGB with transparency composited on white, round((c·α + 255·(255 − α))/255);
    the 'square' (S×S) or 'shorter' (shorter side → S) bilinear resize; the center crop.
    Not matched: EXIF orientation is not applied (TensorFlow's decoders ignore it), and TF's
    antialiased bilinear resize works in float where PIL rounds to 8 bits between its two
    passes (±1 grey level).
    """
    import tensorflow as tf

    s, c = int(config.data.eval_resize), int(config.data.eval_crop)
    square = config.data.get("resize_mode", "square") == "square"

    def target(h, w):
        if square:
            return tf.constant(s), tf.constant(s)
        short = tf.cast(tf.minimum(h, w), tf.float64)
        size = lambda n: tf.maximum(
            c, tf.cast(tf.round(tf.cast(n, tf.float64) * s / short), tf.int32)
        )
        return size(h), size(w)

    def jpeg():
        hw = tf.io.extract_jpeg_shape(data)[:2]
        th, tw = target(hw[0], hw[1])
        scale = tf.minimum(hw[0] // th, hw[1] // tw)  # PIL JpegImageFile.draft
        branch = tf.reduce_sum(tf.cast(scale >= tf.constant([2, 4, 8]), tf.int32))
        return tf.switch_case(
            branch,
            [
                lambda r=r: tf.io.decode_jpeg(
                    data, channels=3, ratio=r, dct_method="INTEGER_ACCURATE"
                )
                for r in (1, 2, 4, 8)
            ],
        )

    def other():
        im = tf.io.decode_image(data, channels=0, expand_animations=False)
        n = tf.shape(im)[-1]
        rgb = tf.cast(
            tf.cond(n < 3, lambda: tf.tile(im[..., :1], [1, 1, 3]), lambda: im[..., :3]), tf.float32
        )
        alpha = tf.cast(
            tf.cond(
                n % 2 == 0,
                lambda: im[..., -1:],
                lambda: tf.fill(tf.concat([tf.shape(im)[:2], [1]], 0), tf.constant(255, tf.uint8)),
            ),
            tf.float32,
        )
        return tf.cast(tf.round((rgb * alpha + 255.0 * (255.0 - alpha)) / 255.0), tf.uint8)

    is_jpeg = tf.strings.substr(data, 0, 3) == b"\xff\xd8\xff"
    im = tf.cond(is_jpeg, jpeg, other)
    th, tw = target(tf.shape(im)[0], tf.shape(im)[1])
    im = tf.image.resize(tf.cast(im, tf.float32), tf.stack([th, tw]), "bilinear", antialias=True)
    y, x = (th - c) // 2, (tw - c) // 2
    im = im[y : y + c, x : x + c]
    return tf.cast(tf.round(tf.clip_by_value(im, 0.0, 255.0)), tf.uint8)


def check_args(
    out_dir: str | None, batch_size: int, platforms: tuple[str, ...], fmt: str = "savedmodel"
) -> None:
    """One ToolError for a wrong --out, --batch_size, --platforms or --format (before any
    work)."""
    if fmt not in FORMATS:
        raise ToolError(f"--format={fmt!r}: expected one of {', '.join(FORMATS)}.")
    if not out_dir:
        raise ToolError(f"--out is required (the folder to write the {FORMATS[fmt]} to).")
    if os.path.exists(out_dir) and not (os.path.isdir(out_dir) and not os.listdir(out_dir)):
        raise ToolError(
            f"--out {os.path.abspath(out_dir)} exists and is not an empty folder: "
            f"choose a new folder for the {FORMATS[fmt]}."
        )
    parent = os.path.abspath(out_dir)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK | os.X_OK):  # EROFS too, also for root
        raise ToolError(
            f"--out {os.path.abspath(out_dir)} cannot be written: {parent} is read-only or "
            "not writable by this user; choose another folder."
        )
    if batch_size < 0:
        raise ToolError(f"--batch_size={batch_size}: expected 0 (any) or a positive size.")
    bad = sorted(set(platforms) - {"cpu", "cuda", "rocm", "tpu"})
    if bad or not platforms:
        raise ToolError(
            f"--platforms={','.join(platforms)!r}: expected a comma-separated "
            "subset of cpu, cuda, rocm, tpu."
        )


def export(
    trained: Trained,
    out_dir: str,
    batch_size: int = 0,
    platforms: tuple[str, ...] = ("cpu", "cuda"),
    fmt: str = "savedmodel",
) -> str:
    """Write `trained` to `out_dir` (which must not hold files) in the format `fmt`
    (savedmodel, onnx, jax); batch size `batch_size`, or any when 0 (a symbolic batch
    dimension); `platforms`: those the SavedModel and the jax format are lowered for.
    Returns `out_dir`."""
    check_args(out_dir, batch_size, platforms, fmt)
    if fmt == "onnx":
        return export_onnx(trained, out_dir, batch_size)
    if fmt == "jax":
        return export_jax(trained, out_dir, batch_size, platforms)
    return export_savedmodel(trained, out_dir, batch_size, platforms)


def _images_spec(trained: Trained, batch_size: int):
    """uint8 (B, C, C, 3): B = `batch_size`, or a symbolic dimension when 0."""
    c = trained.image_size
    (b,) = jax.export.symbolic_shape("B") if not batch_size else (batch_size,)
    return jax.ShapeDtypeStruct((b, c, c, 3), np.uint8)


def _probs_of_images(trained: Trained):
    """uint8 images → probabilities, the weights closed over (constants of the export)."""
    fn, variables = predict.make_probs_fn(trained), trained.variables
    return lambda images: fn(variables, images)


def _write_class_names(trained: Trained, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, CLASS_NAMES_FILE), "w", encoding="utf-8") as f:
        f.write("".join(n + "\n" for n in trained.class_names))


def export_jax(
    trained: Trained, out_dir: str, batch_size: int = 0, platforms: tuple[str, ...] = ("cpu",)
) -> str:
    """`jax.export` of uint8 images → probabilities, serialized to `<out_dir>/model.jax`."""
    exported = jax.export.export(jax.jit(_probs_of_images(trained)), platforms=platforms)(
        _images_spec(trained, batch_size)
    )
    _write_class_names(trained, out_dir)
    with open(os.path.join(out_dir, serving.MODEL_FILE), "wb") as f:
        f.write(exported.serialize())
    return out_dir


def _pad_by_concatenation(x, value, pads):
    """`lax.pad` with edges only (no interior): jax2onnx 0.12.5's Pad needs static shapes, a
    concatenation of constant edges converts at any batch size."""
    for ax, (lo, hi) in enumerate(pads):
        if lo or hi:
            edge = lambda k, ax=ax, x=x: jnp.full_like(lax.slice_in_dim(x, 0, k, axis=ax), value)
            x = lax.concatenate([edge(lo), x, edge(hi)], ax)
    return x


def _pool_by_slices(x, combine, init, window, strides, padding):
    """`lax.reduce_window` as the `combine` of one strided slice per window offset.

    jax2onnx 0.12.5 turns reduce_window_max into an ONNX MaxPool over all four NHWC axes,
    which onnxruntime refuses ("Unsupported pooling size"); slices and elementwise max/add
    convert. Max is exact; the sum adds the same terms in another order."""
    x = _pad_by_concatenation(x, init, padding)
    sizes = [(n - w) // s + 1 for n, w, s in zip(x.shape, window, strides)]
    out = None
    for offsets in itertools.product(*(range(w) for w in window)):
        y = x
        for ax, (o, w, s, n) in enumerate(zip(offsets, window, strides, sizes)):
            if w > 1 or s > 1:
                y = lax.slice_in_dim(y, o, o + (n - 1) * s + 1, s, ax)
        out = y if out is None else combine(out, y)
    return out


def _conv1d_as_2d(lhs, rhs, p):
    """A 1-D `conv_general_dilated` (layouts jax2onnx 0.12.5 does not convert) as a 2-D one
    in NCHW/OIHW over a height of 1."""
    dn = p["dimension_numbers"]
    y = lax.conv_general_dilated(
        lhs.transpose(dn.lhs_spec)[:, :, None],  # (N, C, 1, W)
        rhs.transpose(dn.rhs_spec)[:, :, None],  # (O, I, 1, W)
        (1, *p["window_strides"]),
        ((0, 0), *p["padding"]),
        (1, *p["lhs_dilation"]),
        (1, *p["rhs_dilation"]),
        ("NCHW", "OIHW", "NCHW"),
        p["feature_group_count"],
        p["batch_group_count"],
        p["precision"],
        p["preferred_element_type"],
    )[:, :, 0]
    return y.transpose(np.argsort(dn.out_spec))


def _inline_for_onnx(jaxpr, consts, *args):
    """Evaluate `jaxpr` with nested calls inlined, window pools as `_pool_by_slices`, pads as
    `_pad_by_concatenation` and 1-D convolutions as `_conv1d_as_2d`, for jax2onnx to trace: its flax patches (which refuse `nn.max_pool`'s positional window and
    ResNet's explicit padding) then never see a flax call."""
    pools = {"reduce_window_max": (lax.max, -np.inf), "reduce_window_sum": (lax.add, 0)}
    calls = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr"}
    calls |= {"custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr"}
    env = dict(zip(jaxpr.constvars, consts)) | dict(zip(jaxpr.invars, args))
    read = lambda v: v.val if isinstance(v, core.Literal) else env[v]
    for eqn in jaxpr.eqns:
        ins, name, p = [read(v) for v in eqn.invars], eqn.primitive.name, eqn.params
        if name in pools and set(p["base_dilation"] + p["window_dilation"]) == {1}:
            window = (p["window_dimensions"], p["window_strides"], p["padding"])
            outs = [_pool_by_slices(ins[0], *pools[name], *window)]
        elif name == "conv_general_dilated" and len(p["window_strides"]) == 1:
            outs = [_conv1d_as_2d(*ins, p)]
        elif name == "pad" and all(
            i == 0 and lo >= 0 and hi >= 0 for lo, hi, i in p["padding_config"]
        ):
            outs = [_pad_by_concatenation(ins[0], ins[1], [c[:2] for c in p["padding_config"]])]
        elif name in calls and calls[name] in p:
            sub = p[calls[name]]
            closed = isinstance(sub, core.ClosedJaxpr)
            outs = _inline_for_onnx(
                sub.jaxpr if closed else sub, sub.consts if closed else (), *ins
            )
        else:
            outs = eqn.primitive.bind(*ins, **p)
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def export_onnx(trained: Trained, out_dir: str, batch_size: int = 0) -> str:
    """jax2onnx's conversion of uint8 images → probabilities, to `<out_dir>/model.onnx`
    (inputs `images`, outputs `probabilities`; opset 23)."""
    spec = _images_spec(trained, batch_size)
    closed = jax.make_jaxpr(_probs_of_images(trained))(spec)
    fn = lambda images: _inline_for_onnx(closed.jaxpr, closed.consts, images)[0]
    # jax2onnx 0.12.5 prints a debug line per convolution and logs a traceback for each
    # plugin that does not import with this jax (dm_pix's); onnx_ir warns once per
    # intermediate value that has a shape but no type annotation ("Skipping serialization":
    # ~600 lines for SwinFC; value_info only, the graph is complete). None concerns the model.
    for name in ("jax2onnx", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import jax2onnx

    _write_class_names(trained, out_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        jax2onnx.to_onnx(
            fn,
            [spec],
            model_name="fgvc_jax",
            input_names=["images"],
            output_names=["probabilities"],
            return_mode="file",
            output_path=os.path.join(out_dir, ONNX_FILE),
        )
    return out_dir


def export_savedmodel(
    trained: Trained,
    out_dir: str,
    batch_size: int = 0,
    platforms: tuple[str, ...] = ("cpu", "cuda"),
) -> str:
    """Write the SavedModel of `trained` to `out_dir` (which must not hold files); batch
    size `batch_size`, or any when 0 (a symbolic batch dimension). Returns `out_dir`."""
    import tensorflow as tf
    from jax.experimental import jax2tf  # imports tensorflow

    check_args(out_dir, batch_size, platforms)
    c = trained.image_size
    names = list(trained.class_names)
    batch = batch_size or None
    converted = jax2tf.convert(
        predict.make_probs_fn(trained),
        with_gradient=False,
        polymorphic_shapes=[None, None if batch_size else "(b, _, _, _)"],
        native_serialization_platforms=tuple(platforms),
    )

    module = tf.Module()
    module.variables_tree = tf.nest.map_structure(
        lambda a: tf.Variable(np.asarray(a), trainable=False),
        jax.device_get(jax.tree.map(np.asarray, trained.variables)),
    )
    module.class_names = tf.constant(names)

    def outputs(probs):
        index = tf.argmax(probs, axis=-1, output_type=tf.int32)
        return {
            "probabilities": probs,
            "class_index": index,
            "class_name": tf.gather(module.class_names, index),
        }

    images_spec = tf.TensorSpec((batch, c, c, 3), tf.uint8, name="images")
    bytes_spec = tf.TensorSpec((batch,), tf.string, name="image_bytes")

    @tf.function(autograph=False, input_signature=[images_spec])
    def serve_images(images):
        return outputs(converted(module.variables_tree, images))

    @tf.function(autograph=False, input_signature=[bytes_spec])
    def serve_bytes(image_bytes):
        images = tf.map_fn(
            lambda b: _tf_eval_image(b, trained.config),
            image_bytes,
            fn_output_signature=tf.TensorSpec((c, c, 3), tf.uint8),
        )
        return outputs(converted(module.variables_tree, images))

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, CLASS_NAMES_FILE)
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(n + "\n" for n in names))
        module.class_names_file = tf.saved_model.Asset(path)
        tf.saved_model.save(
            module,
            out_dir,
            signatures={
                "serving_default": serve_images.get_concrete_function(),
                "serving_bytes": serve_bytes.get_concrete_function(),
            },
        )
    return out_dir


def main(argv) -> None:
    flags = cli_common.FLAGS
    fmt = flags.format
    try:
        if len(argv) > 1:
            raise ToolError(
                f"unexpected arguments {argv[1:]}: python -m fgvc_jax.export "
                "--workdir DIR --out DIR [--format savedmodel|onnx|jax] [--checkpoint best|latest]"
            )
        platforms = tuple(p for p in flags.platforms.split(",") if p)
        check_args(flags.out, flags.batch_size, platforms, fmt)  # fail before loading the model
        trained = cli_common.load_trained()
        out = export(trained, flags.out, flags.batch_size, platforms, fmt)
    except Exception as e:
        cli_common.fail(e)
    c = trained.image_size
    images = f"uint8 images ({flags.batch_size or 'B'}, {c}, {c}, 3)"
    what = f"{FORMATS[fmt]} of {trained.workdir} (step {trained.step}), {len(trained.class_names)} classes"
    if fmt == "savedmodel":
        print(
            f"{out}: {what}; serving_default: {images}, serving_bytes: encoded images; "
            f"platforms {','.join(platforms)}."
        )
    elif fmt == "onnx":
        print(f"{out}: {what}; {ONNX_FILE}: {images} → probabilities; {CLASS_NAMES_FILE}.")
    else:
        print(
            f"{out}: {what}; model.jax: {images} → probabilities (fgvc_jax.serving.load); "
            f"{CLASS_NAMES_FILE}; platforms {','.join(platforms)}."
        )


def run() -> None:
    def define_flags():
        flags.DEFINE_string("out", None, "Folder to write the model to (new or empty).")
        flags.DEFINE_enum(
            "format",
            "savedmodel",
            list(FORMATS),
            "savedmodel (TensorFlow), onnx (model.onnx) or jax (model.jax: jax.export).",
        )
        flags.DEFINE_integer("batch_size", 0, "Fixed batch size of the model; 0: any.")
        flags.DEFINE_string(
            "platforms",
            "cpu,cuda",
            "Platforms the SavedModel or jax model runs on (cpu, cuda, rocm, tpu).",
        )

    cli_common.run(main, define_flags)


if __name__ == "__main__":
    run()
