"""Linear backprop on real architectures: sites, step memory and step time.

For four keras.applications convnets (MobileNetV2, ResNet50, EfficientNetB0,
ConvNeXtTiny: random weights, 64x64x3 inputs, `classes=10`, logits head,
batch 16) and five keras-hub backbones (GPT2, BERT, ViT, Gemma, Llama:
random weights, 4 layers, hidden 256, intermediate 1024 -- Gemma 2048, as
its gated feed-forward splits it in two -- sequence 128, vocabulary 1000,
built from their classes with no preset; the mean of the sequence output ->
`Dense(10)`, batch 8), each trained with sparse categorical cross-entropy
on logits, reports:

- `linear_sites`: `len(LinearBackpropModel.from_model(model).linear_sites())`
  with the default options (output layer and softmax sites exact);
- `peak_mib`: the working memory of one training step, exact (a plain
  `keras.Model`) vs linear (`LinearBackpropModel.from_model` of it: the same
  layers and weights), with the method of `benchmarks/step_time.py`
  (`step_probes.tf_step_memory_mib`: TF allocator peak during one
  `train_on_batch` minus the memory in use just before it, TF graph mode,
  median of 3 steps after a tracing step; `measure.run_children`), each
  variant in its own process (TF's allocator peak
  depends on what the process allocated before), the models one after
  another, one alive at a time;
- `step_time_linear_over_exact`: the median over interleaved rounds of the
  ratio of process CPU time per step, linear / exact, with TF pinned to one
  intra-op and one inter-op thread; the order of the variants rotates each
  round.

A/A noise floors: `step_time_exact_over_exact` (a second, separately
traced plain model over the same layers, timed in the same rounds) and
`memory_exact_over_exact` (the plain model's memory measured again in a
third process).

Every variant uses SGD with learning rate 0: each timed step then does the
same arithmetic on the same weights (linear backprop at slope 1 makes SGD
diverge on the deep batch-normalised convnets, and NaNs would change what a
step costs). The learning rate changes neither the ops nor their memory.

keras-hub is an optional extra (`pip install -e ".[hub]"`): without it the
keras-hub models are skipped with a message. The models are built in
`real_model_builders.py`; the method is `measure.py`'s and `step_probes.py`'s.

    python benchmarks/real_models.py --out results/real_models
    python benchmarks/real_models.py --out /tmp/real --models GPT2 Gemma
    python benchmarks/real_models.py --out /tmp/real_quick --quick   # seconds
"""

import argparse
import gc
import json
import os
import pathlib
import platform
import statistics
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import measure  # noqa: E402  (the method: thread pinning, interleaving, children)

# Before any op runs and before Keras is imported: the TensorFlow backend
# (whatever KERAS_BACKEND says), one intra-op and one inter-op thread.
measure.setup_backend("tensorflow")

import keras  # noqa: E402
import step_probes  # noqa: E402  (the step memory probe)
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")
# The head reads only the sequence output: BERT's pooler and Gemma's tied
# reverse embedding get no gradient, in both modes alike.
warnings.filterwarnings("ignore", message="Gradients do not exist for variables")

import keras_linbp  # noqa: E402
from keras_linbp import LinearBackpropModel  # noqa: E402
from real_model_builders import (  # noqa: E402  (the models and their batches)
    APPLICATIONS,
    BUILDERS,
    HUB_CONFIG,
    HUB_MODELS,
    IMAGE_BATCH,
    IMAGE_SIDE,
    QUICK_MODELS,
    SEQUENCE_LENGTH,
    TEXT_BATCH,
    VOCABULARY,
    hub_available,
)


# Issue 8's targets for linear / exact step memory (None: measured only).
TARGETS = {
    "Gemma": 0.72,
    "GPT2": 0.66,
    "BERT": 0.62,
    "ViT": 0.72,
    "ConvNeXtTiny": 0.82,
    "EfficientNetB0": 0.78,
}

FULL = {"repeats": 7, "block_seconds": 1.0, "memory_steps": 3}
QUICK = {"repeats": 3, "block_seconds": 0.05, "memory_steps": 3}


# --- measurement --------------------------------------------------------------


def _compile(model):
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


VARIANTS = ("exact", "linear", "exact_again")


def _build(name):
    keras.backend.clear_session()
    gc.collect()
    keras.utils.set_random_seed(0)
    return BUILDERS[name]()


def _variant(base, variant):
    """A compiled model over `base`'s layers and weights (no copies)."""
    if variant == "linear":
        return _compile(LinearBackpropModel.from_model(base))
    if variant == "exact_again":
        # Traced separately from `base`: the A/A control.
        return _compile(keras.Model(base.inputs, base.outputs, name=f"{base.name}_again"))
    return _compile(base)


def memory_of_variant(variant, names, config):
    """{model: MiB} of `variant`, one model alive at a time (in a child)."""
    mib = {}
    for name in names:
        base, (x, y) = _build(name)
        model = _variant(base, variant)
        model.train_on_batch(x, y)  # trace outside the measurement
        steps = config["memory_steps"]
        mib[name] = statistics.median(step_probes.tf_step_memory_mib(model, x, y) for _ in range(steps))
        del model, base
    keras.backend.clear_session()
    return mib


def memory_in_children(names, args):
    """{variant: {model: MiB}}, each variant measured in its own process.

    TensorFlow's allocator peak depends on what the process allocated before
    (see `benchmarks/step_time_memory.py`, `memory_cases`): measured one after the
    other in one process, a variant's peak depends on the variants before
    it. In its own process every variant has the same history. The children
    run side by side: an allocator's peak is its own process's, and nothing
    is timed meanwhile.
    """
    command = [sys.executable, os.path.abspath(__file__), "--out", "-", "--models", *names]
    command += ["--quick"] if args.quick else []
    children = measure.run_children(
        {variant: command + ["--child-memory", variant] for variant in VARIANTS},
        parallel=True, keep_stderr=True,
    )
    memory = {}
    for variant, child in children.items():
        if child.result is None:
            raise RuntimeError(
                f"the memory child for {variant!r} exited with {child.returncode}:\n"
                f"{child.stderr[-3000:]}"
            )
        memory[variant] = child.result
    return memory


def measure_time(name, config):
    """Sites and interleaved step time of one model (three compiled views of
    the same layers: exact, exact again, linear)."""
    started = time.perf_counter()
    base, (x, y) = _build(name)
    models = {variant: _variant(base, variant) for variant in ("exact", "exact_again", "linear")}
    linear_sites = models["linear"].linear_sites()
    all_sites = models["linear"].activation_sites()
    # One tracing step, then one timed: sizes the blocks.
    slowest = measure.slowest_step_seconds(models, x, y, warmup_steps=1, timed_steps=1)
    steps = max(1, int(round(config["block_seconds"] / max(slowest, 1e-4))))
    try:
        cpu, _ = measure.time_interleaved(models, x, y, steps, config["repeats"])
    except FloatingPointError as error:
        raise FloatingPointError(f"{name} {error}") from None

    result = {
        "model": name,
        "parameters": int(base.count_params()),
        "activation_sites": len(all_sites),
        "linear_sites": len(linear_sites),
        "step_time_linear_over_exact": measure.paired_ratio(cpu, "linear", "exact"),
        "step_time_exact_over_exact": measure.paired_ratio(cpu, "exact_again", "exact"),
        "cpu_ms_per_step": measure.medians(cpu, 2),
        "steps_per_block": steps,
        "time_seconds": round(time.perf_counter() - started, 1),
    }
    del models, base
    keras.backend.clear_session()
    gc.collect()
    return result


def combine(timing, memory):
    """One results row from the timing row and the children's memory."""
    name = timing["model"]
    peak = {variant: memory[variant][name] for variant in VARIANTS}
    return {
        "model": name,
        "parameters": timing["parameters"],
        "activation_sites": timing["activation_sites"],
        "linear_sites": timing["linear_sites"],
        "peak_mib": {variant: round(value, 2) for variant, value in peak.items()},
        # TF's CPU allocator counts in coarse chunks: a tiny step can read 0.
        "linear_over_exact": measure.ratio(peak["linear"], peak["exact"]),
        "memory_exact_over_exact": measure.ratio(peak["exact_again"], peak["exact"]),
        **{key: value for key, value in timing.items() if key.startswith(("step_time", "cpu_ms"))},
        "steps_per_block": timing["steps_per_block"],
        "target_linear_over_exact": TARGETS.get(name),
        "time_seconds": timing["time_seconds"],
    }


# --- reporting ----------------------------------------------------------------


def markdown_table(results):
    lines = [
        "| model | linear sites | step memory exact (MiB) | linear (MiB) | linear / exact "
        "| target | memory A/A | step time linear / exact | time A/A |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in results["models"]:
        target = row["target_linear_over_exact"]
        ratio = row["linear_over_exact"]
        ratio_text = "n/a" if ratio is None else f"{ratio:.2f}"
        if target is None or ratio is None:
            verdict = "measured"
        else:
            verdict = f"≤ {target:.2f} {'met' if ratio <= target else 'missed'}"
        same = row["memory_exact_over_exact"]
        lines.append(
            f"| {row['model']} | {row['linear_sites']} | {row['peak_mib']['exact']:.1f} "
            f"| {row['peak_mib']['linear']:.1f} | {ratio_text} | {verdict} "
            f"| {'n/a' if same is None else f'{same:.2f}'} "
            f"| {row['step_time_linear_over_exact']:.2f} "
            f"| {row['step_time_exact_over_exact']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="directory for results.json and table.md")
    parser.add_argument("--quick", action="store_true", help="one tiny model, seconds (smoke test)")
    parser.add_argument(
        "--models", nargs="+", default=None, choices=sorted(BUILDERS),
        help="models to measure (default: all nine; with --quick: TinyCNN)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="interleaved timing rounds")
    parser.add_argument("--child-memory", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = dict(QUICK if args.quick else FULL)
    if args.repeats is not None:
        config["repeats"] = args.repeats
    names = list(args.models or (QUICK_MODELS if args.quick else APPLICATIONS + HUB_MODELS))
    if args.child_memory:
        # In a fresh process (see `memory_in_children`): one JSON line.
        print(json.dumps(memory_of_variant(args.child_memory, names, config)))
        return None

    skipped = []
    if any(name in HUB_MODELS for name in names) and not hub_available():
        skipped = [name for name in names if name in HUB_MODELS]
        print(
            f"keras-hub is not installed: skipping {', '.join(skipped)} "
            '(pip install -e ".[hub]")',
            flush=True,
        )
        names = [name for name in names if name not in skipped]

    started = time.perf_counter()
    memory = memory_in_children(names, args) if names else {}
    for name in names:
        print(
            f"{name}: step memory exact {memory['exact'][name]:.1f} MiB, linear "
            f"{memory['linear'][name]:.1f} MiB, exact again {memory['exact_again'][name]:.1f} MiB",
            flush=True,
        )
    memory_seconds = round(time.perf_counter() - started, 1)
    results = {"models": []}
    for name in names:
        row = combine(measure_time(name, config), memory)
        results["models"].append(row)
        print(
            f"{name}: {row['linear_sites']} linear sites, memory linear/exact "
            f"{row['linear_over_exact']}, time linear/exact "
            f"{row['step_time_linear_over_exact']:.3f} "
            f"(A/A {row['step_time_exact_over_exact']:.3f}), {row['time_seconds']} s",
            flush=True,
        )

    def floor(key):
        per_model = {row["model"]: row[key] for row in results["models"]}
        deviations = [abs(v - 1.0) for v in per_model.values() if v is not None]
        return {
            "per_model": per_model,
            "max_abs_deviation": round(max(deviations), 4) if deviations else None,
        }

    results["noise_floor"] = {
        "what": "A/A, exact / exact, per model and the largest |ratio - 1|. Time: two "
        "separately traced plain models over the same layers, median over interleaved "
        "rounds of CPU-time ratios. Memory: the plain model's step working memory "
        "measured in two separate processes",
        "time": floor("step_time_exact_over_exact"),
        "memory": floor("memory_exact_over_exact"),
    }
    results["skipped"] = skipped
    results["command"] = measure.repo_command(__file__, argv)
    hub_version = None
    if hub_available():
        import keras_hub

        hub_version = keras_hub.__version__
    results["config"] = {
        "quick": args.quick,
        **config,
        "image": {"side": IMAGE_SIDE, "batch": IMAGE_BATCH},
        "hub": {**HUB_CONFIG, "sequence_length": SEQUENCE_LENGTH, "vocabulary_size": VOCABULARY,
                "batch": TEXT_BATCH, "gemma_intermediate_dim": 2 * HUB_CONFIG["intermediate_dim"],
                "vit": {"image_shape": [IMAGE_SIDE, 2 * IMAGE_SIDE, 3], "patch_size": 8}},
        "optimizer": "SGD(learning_rate=0.0)",
        "loss": "sparse categorical cross-entropy on logits",
        "threads": measure.thread_config(),
        "memory_device": "GPU:0" if measure.ON_GPU else "CPU:0",
        "memory_method": "benchmarks/step_probes.py tf_step_memory_mib, median of memory_steps "
        "steps; each variant (exact, linear, exact_again) in its own process, the models "
        "one after another, one alive at a time",
        "memory_seconds": memory_seconds,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_hub": hub_version,
        "keras_linbp": keras_linbp.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    table = markdown_table(results)
    results["markdown_table"] = table
    measure.write_results(args.out, results, f"`{results['command']}`\n\n{table}\n")
    print()
    print(table)
    print(f"\n{results['command']}\nwrote {os.path.join(args.out, 'results.json')} in "
          f"{results['config']['seconds']} s")
    return results


if __name__ == "__main__":
    main()
