"""Models and references the site and linearize tests share.

An activation that trains with the linear rule is, by hand,
`x + tf.stop_gradient(f(x) - x)` (forward f, gradient 1).
"""

import keras
import numpy as np
import tensorflow as tf


def hand_linear(f):
    def g(x, *args, **kwargs):
        return x + tf.stop_gradient(f(x, *args, **kwargs) - x)

    return g


class GemmaLike(keras.layers.Layer):
    """`gelu(up(x), approximate=True) * gate(x)` computed in call()."""

    def __init__(self, reference=False, **kwargs):
        super().__init__(**kwargs)
        self.reference = reference
        self.up = keras.layers.Dense(8, name="up")
        self.gate = keras.layers.Dense(8, name="gate")

    def call(self, x):
        gelu = keras.activations.gelu
        if self.reference:
            gelu = hand_linear(gelu)
        return gelu(self.up(x), approximate=True) * self.gate(x)


class LlamaLike(keras.layers.Layer):
    """Calls a stored `self.activation` in its own call()."""

    def __init__(self, reference=False, **kwargs):
        super().__init__(**kwargs)
        self.activation = keras.activations.get("silu")
        if reference:
            self.activation = hand_linear(self.activation)
        self.up = keras.layers.Dense(8, name="up")
        self.down = keras.layers.Dense(8, name="down")

    def call(self, x):
        return self.down(self.activation(self.up(x)))


class OpsBlock(keras.layers.Layer):
    """`keras.ops.tanh` and `keras.ops.sigmoid` in call()."""

    def __init__(self, reference=False, **kwargs):
        super().__init__(**kwargs)
        self.reference = reference
        self.a = keras.layers.Dense(8, name="a")
        self.b = keras.layers.Dense(8, name="b")

    def call(self, x):
        tanh, sigmoid = keras.ops.tanh, keras.ops.sigmoid
        if self.reference:
            tanh, sigmoid = hand_linear(tanh), hand_linear(sigmoid)
        return tanh(self.a(x)) + sigmoid(self.b(x))


class PhantomBlock(keras.layers.Layer):
    """Stores `self.activation` but only hands it to a sublayer."""

    def __init__(self, reference=False, **kwargs):
        super().__init__(**kwargs)
        self.activation = keras.activations.get("gelu")
        inner = hand_linear(self.activation) if reference else self.activation
        self.dense = keras.layers.Dense(8, activation=inner, name="inner")

    def call(self, x):
        return self.dense(x)


def _blocks_model(reference=False, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    h = GemmaLike(reference, name="gemma")(inputs)
    h = LlamaLike(reference, name="llama")(h)
    h = OpsBlock(reference, name="ops")(h)
    h = PhantomBlock(reference, name="phantom")(h)
    outputs = keras.layers.Dense(3, name="head")(h)
    return keras.Model(inputs, outputs)


def _data(n=16, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.integers(0, classes, size=(n,))
    return x, y


def _sgd_step_reference(model, x, y, lr, loss_fn):
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    return [v.numpy() - lr * g.numpy() for v, g in zip(model.trainable_variables, grads)]


def _mlp(reference_from=None, seed=2):
    """Dense tanh -> sigmoid -> relu -> logits; `reference_from=k` writes
    sites k.. as hand-linear."""
    keras.utils.set_random_seed(seed)
    acts = [keras.activations.tanh, keras.activations.sigmoid, keras.activations.relu]
    inputs = keras.Input((6,))
    h = inputs
    for depth, act in enumerate(acts, start=1):
        if reference_from is not None and depth >= reference_from:
            act = hand_linear(act)
        h = keras.layers.Dense(7, activation=act, name=f"d{depth}")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
