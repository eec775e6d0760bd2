"""Export a trained model as a TensorFlow SavedModel:
`python -m fgvc_jax.export --workdir DIR --out DIR [--checkpoint best|latest]`.

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
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from fgvc_jax.tools.trained import ToolError, Trained

CLASS_NAMES_FILE = "class_names.txt"


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


def check_args(out_dir: str | None, batch_size: int, platforms: tuple[str, ...]) -> None:
    """One ToolError for a wrong --out, --batch_size or --platforms (before any work)."""
    if not out_dir:
        raise ToolError("--out is required (the folder to write the SavedModel to).")
    if os.path.exists(out_dir) and not (os.path.isdir(out_dir) and not os.listdir(out_dir)):
        raise ToolError(
            f"--out {os.path.abspath(out_dir)} exists and is not an empty folder: "
            "choose a new folder for the SavedModel."
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
) -> str:
    """Write the SavedModel of `trained` to `out_dir` (which must not hold files); batch
    size `batch_size`, or any when 0 (a symbolic batch dimension). Returns `out_dir`."""
    import jax
    import tensorflow as tf
    from jax.experimental import jax2tf

    from fgvc_jax import predict

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
    from fgvc_jax.tools import cli_common

    flags = cli_common.FLAGS
    try:
        if len(argv) > 1:
            raise ToolError(
                f"unexpected arguments {argv[1:]}: python -m fgvc_jax.export "
                "--workdir DIR --out DIR [--checkpoint best|latest]"
            )
        platforms = tuple(p for p in flags.platforms.split(",") if p)
        check_args(flags.out, flags.batch_size, platforms)  # fail before loading the model
        trained = cli_common.load_trained()
        out = export(trained, flags.out, flags.batch_size, platforms)
    except Exception as e:
        cli_common.fail(e)
    c = trained.image_size
    print(
        f"{out}: SavedModel of {trained.workdir} (step {trained.step}), "
        f"{len(trained.class_names)} classes; serving_default: uint8 images "
        f"({flags.batch_size or 'B'}, {c}, {c}, 3), serving_bytes: encoded images; "
        f"platforms {','.join(platforms)}."
    )


def run() -> None:
    # No TensorFlow start-up chatter: TF 2.21 prints its oneDNN notice whatever the log level;
    # the export runs no TensorFlow computation, so oneDNN's kernels are not needed.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    from absl import flags

    from fgvc_jax.tools import cli_common

    def define_flags():
        flags.DEFINE_string("out", None, "Folder to write the SavedModel to (new or empty).")
        flags.DEFINE_integer("batch_size", 0, "Fixed batch size of the SavedModel; 0: any.")
        flags.DEFINE_string(
            "platforms", "cpu,cuda", "Platforms the SavedModel runs on (cpu, cuda, rocm, tpu)."
        )

    cli_common.run(main, define_flags)


if __name__ == "__main__":
    run()
