"""What one training step costs, per Keras backend: its size and its memory.

Every probe takes a compiled model and a batch already on the device, and
reads the backend `measure.setup_backend` chose. The size (`step_size`) is
noise-free evidence next to the timings; the memory probes measure one step:

- TensorFlow (`tf_step_memory_mib`): the allocator's peak during the step
  minus the memory in use before it;
- JAX (`jax_compiled_temp_mib`): the temp buffers of Keras's training step
  compiled as Keras compiles it; on a GPU `jax_device_step_mib`, the
  device's peak (in a fresh process: JAX's peak cannot be reset);
- PyTorch (`torch_saved_for_backward`): the tensors saved for the backward
  pass; on a GPU `torch_cuda_step_mib`, the CUDA allocator's peak.
"""

import gc
import statistics

import measure

MIB = 2**20


# --- the size of one step -----------------------------------------------------------

STEP_SIZE_UNIT = {
    "tensorflow": "nodes in the traced train_step graph",
    "jax": "equations in the jaxpr of train_step (sub-jaxprs included)",
    "torch": "autograd nodes reachable from the loss",
}


def step_size(model, x, y):
    """A noise-free size of one training step, in `STEP_SIZE_UNIT`."""
    if measure.BACKEND == "tensorflow":
        import tensorflow as tf

        step = tf.function(model.train_step, jit_compile=False)
        graph = step.get_concrete_function((x, y)).graph
        return len(graph.as_graph_def().node)
    if measure.BACKEND == "jax":
        import jax

        jaxpr = jax.make_jaxpr(model.train_step)(jax_state(model), (x, y))
        return _count_equations(jaxpr.jaxpr)
    counts = []
    with _spy_on_backward(lambda loss: counts.append(_count_autograd_nodes(loss.grad_fn))):
        model.train_on_batch(x, y)
    assert len(counts) == 1, counts
    return counts[0]


def _count_equations(jaxpr):
    import jax.extend

    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    total += _count_equations(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    total += _count_equations(sub)
    return total


def _count_autograd_nodes(root):
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(next_node for next_node, _ in node.next_functions)
    return len(seen)


class _spy_on_backward:
    """Calls `record(loss)` on every `torch.Tensor.backward` in the block
    (Keras's PyTorch train_step calls `loss.backward()`)."""

    def __init__(self, record):
        self.record = record

    def __enter__(self):
        import torch

        self.original = torch.Tensor.backward
        original, record = self.original, self.record

        def backward(tensor, *args, **kwargs):
            record(tensor)
            return original(tensor, *args, **kwargs)

        torch.Tensor.backward = backward

    def __exit__(self, *exc):
        import torch

        torch.Tensor.backward = self.original


def jax_state(model):
    # Keras's JAX trainer state, as `train_on_batch` passes it to the step.
    return model._get_jax_state(
        trainable_variables=True,
        non_trainable_variables=True,
        optimizer_variables=True,
        metrics_variables=True,
    )


# --- memory of one step ---------------------------------------------------------------

MEMORY_METRIC = {
    "tensorflow": "tf_allocator_peak",
    "jax": "jax_compiled_temp",
    "torch": "torch_saved_for_backward",
}
MEMORY_DESCRIPTION = {
    "tensorflow": "TF allocator peak during one train_on_batch minus the memory in use before it",
    "jax": "temp_size_in_bytes of jax.jit(model.train_step, donate_argnums=0) compiled for the batch",
    "torch": "bytes saved for backward in one train_on_batch (saved_tensors_hooks; unique storages, weights excluded)",
}


def step_memory(model, x, y, steps=3):
    """This backend's memory of one training step, as a results row:
    `{"mib": MEMORY_METRIC's value}`; TensorFlow, the median of `steps`
    steps; PyTorch also `saved_mib_all` and `saved_tensors`, and on a GPU
    `device_mib` (or `device_error`). Call after a tracing step."""
    if measure.BACKEND == "tensorflow":
        return {"mib": statistics.median(tf_step_memory_mib(model, x, y) for _ in range(steps))}
    if measure.BACKEND == "jax":
        return {"mib": jax_compiled_temp_mib(model, x, y)}
    row = dict(zip(("mib", "saved_mib_all", "saved_tensors"), torch_saved_for_backward(model, x, y)))
    if measure.ON_GPU:
        try:
            row["device_mib"] = statistics.median(torch_cuda_step_mib(model, x, y) for _ in range(steps))
        except Exception as error:  # keep the rest of a long run
            row["device_error"] = f"CUDA memory: {error!r}"
    return row


def tf_step_memory_mib(model, x, y):
    """TF allocator peak during one training step, minus memory in use before."""
    import tensorflow as tf

    device = "GPU:0" if measure.ON_GPU else "CPU:0"
    gc.collect()
    before = tf.config.experimental.get_memory_info(device)["current"]
    tf.config.experimental.reset_memory_stats(device)
    model.train_on_batch(x, y)
    peak = tf.config.experimental.get_memory_info(device)["peak"]
    return (peak - before) / MIB


def jax_compiled_temp_mib(model, x, y):
    """Temp buffers of Keras's JAX training step, compiled as Keras does."""
    import jax

    step = jax.jit(model.train_step, donate_argnums=0)
    compiled = step.lower(jax_state(model), (x, y)).compile()
    return compiled.memory_analysis().temp_size_in_bytes / MIB


def torch_saved_for_backward(model, x, y):
    """(MiB of unique non-weight storages, MiB of everything packed, count)."""
    import torch

    weights = {v.value.untyped_storage().data_ptr() for v in model.weights}
    unique, packed = {}, [0, 0]

    def pack(tensor):
        packed[0] += tensor.numel() * tensor.element_size()
        packed[1] += 1
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            unique[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model.train_on_batch(x, y)
    return sum(unique.values()) / MIB, packed[0] / MIB, packed[1]


def torch_cuda_step_mib(model, x, y):
    """CUDA allocator peak during one step, minus the memory allocated before."""
    import torch

    gc.collect()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    model.train_on_batch(x, y)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / MIB


def jax_device_step_mib(model, x, y):
    """The JAX device's peak during a step minus the memory in use before it.

    JAX's peak cannot be reset: call this in a fresh process. The compile
    and warm-up steps come first and `peak_raised_by_measured_step` says
    whether the measured step set the peak (if not, the figure is the
    earlier steps' peak, which an identical step reaches too).

    Returns:
        `{"mib", "peak_raised_by_measured_step"}`, or `{"error"}` where the
        device keeps no memory statistics.
    """
    import jax

    device = jax.devices()[0]
    if not device.memory_stats():
        return {"error": f"{device} has no memory_stats()"}
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    gc.collect()
    stats = device.memory_stats()
    before, peak_before = stats["bytes_in_use"], stats["peak_bytes_in_use"]
    model.train_on_batch(x, y)
    peak = device.memory_stats()["peak_bytes_in_use"]
    return {"mib": (peak - before) / MIB, "peak_raised_by_measured_step": peak > peak_before}
