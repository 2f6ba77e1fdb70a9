"""`LinearBackpropModel`: train any Keras model with linear backprop in `fit`.

During the training step only, every selected activation site of the model
(`Dense(..., activation=...)`, `Conv*`, `Activation`, `ReLU`, `LeakyReLU`,
`ELU`, sites inside nested models; see `keras_linbp.sites`) keeps its forward
function but backpropagates `g <- slope * g` instead of `g <- g * f'(a)`
(Yazdani 2018, "Linear Backprop in non-linear networks").

The training step is Keras's own: `train_step` swaps the selected sites to
the linear rule for the length of `super().train_step(data)`. Keras traces
that step into `model.train_function`, so the swap only changes which
gradient ops are traced; sample and class weights, compiled metrics,
regularization losses, mixed-precision loss scaling, `jit_compile`,
`steps_per_execution`, gradient clipping and `tf.distribute` strategies are
all handled by Keras exactly as for a plain `keras.Model`. `evaluate`,
`predict` and plain calls are untouched.
"""

import inspect
import warnings

import keras

from keras_linbp import _compat
from keras_linbp import _validation
from keras_linbp import sites as linbp_sites
from keras_linbp.calibration import NonFiniteSlopesError, calibrate_slopes
from keras_linbp.linearize import LinearizeOptions
from keras_linbp.linearize import _check_slope_paths
from keras_linbp.linearize import linearize

BACKPROP_MODES = ("linear", "exact")


def _check_backprop(value):
    if not isinstance(value, str) or value not in BACKPROP_MODES:
        raise ValueError(
            f"Unknown `backprop` value {value!r}: expected one of {BACKPROP_MODES}."
        )
    return value


RECALIBRATE_MODES = ("epoch", "fit", "never")


def _check_recalibrate(value):
    if value not in RECALIBRATE_MODES:
        raise ValueError(
            f"Unknown `recalibrate` value {value!r}: expected one of {RECALIBRATE_MODES}."
        )
    return value


class _AutoSlopes(keras.callbacks.Callback):
    """Calibrates `slope="auto"` at the start of `fit` (and each epoch)."""

    def __init__(self, probe_x, every_epoch):
        super().__init__()
        self.probe_x = probe_x
        self.every_epoch = every_epoch

    def on_train_begin(self, logs=None):
        self.model.calibrate_slopes(self.probe_x)

    def on_epoch_begin(self, epoch, logs=None):
        if not (self.every_epoch and epoch > 0):
            return
        try:
            self.model.calibrate_slopes(self.probe_x)
        except NonFiniteSlopesError as error:
            # Training diverged (NaN weights): keep the slopes in force and
            # let the loss say so, as Keras would (TerminateOnNaN stops it).
            warnings.warn(
                f"Epoch {epoch}: recalibrating the slopes failed, the previous "
                f"ones stay in force. {error}",
                stacklevel=2,
            )


def _first_inputs(x, max_samples):
    """The model inputs of the first batch of `fit`'s `x`, or None when
    reading them would consume training data (a generator)."""
    import inspect
    import sys

    if x is None:
        return None
    tf = sys.modules.get("tensorflow")  # a tf.data.Dataset needs it imported
    if tf is not None and isinstance(x, tf.data.Dataset):
        for element in x.take(1):
            inputs, _, _ = keras.utils.unpack_x_y_sample_weight(element)
            return inputs
        return None
    if isinstance(x, keras.utils.PyDataset):
        inputs, _, _ = keras.utils.unpack_x_y_sample_weight(x[0])
        return inputs
    if inspect.isgenerator(x) or hasattr(x, "__next__"):
        return None
    return keras.tree.map_structure(lambda t: t[:max_samples], x)


def _serialize_sites(sites):
    if sites is None or isinstance(sites, str):
        return sites
    if callable(sites):
        return keras.saving.serialize_keras_object(sites)
    return list(sites)


def _deserialize_sites(config):
    if isinstance(config, dict):
        return keras.saving.deserialize_keras_object(config)
    return config


@keras.saving.register_keras_serializable(package="keras_linbp")
class LinearBackpropModel(keras.Model):
    """A `keras.Model` whose training step uses linear backprop.

    Forward pass: unchanged. Backward pass of `fit` / `train_on_batch`:
    through each selected activation site the upstream gradient is passed
    on as `slope * g` -- the activation derivative is never computed. Weight
    gradients and the propagation through the weights are ordinary backprop.
    The output layer's activation (and softmax) keep their exact derivative
    unless asked otherwise, so the loss gradient reaching the network is the
    true one (the paper's Algorithm 2 with `g <- g` at hidden activations).

    Three ways to make one:

    - functional: `LinearBackpropModel(inputs, outputs, backprop="linear")`;
    - subclassing: subclass `LinearBackpropModel`, pass the options to
      `super().__init__(**kwargs)` and write `call()`;
    - `LinearBackpropModel.from_model(model, **options)` wraps an existing
      built Sequential, functional or subclassed model, sharing its layers
      and weights (no copies).

    Args:
        backprop: `"linear"` (default) or `"exact"` (ordinary backprop:
            updates identical to a plain `keras.Model`). Settable between
            steps: `model.backprop = "exact"` takes effect at the next step
            (see also `keras_linbp.callbacks.BackpropSchedule`).
        slope: the factor the upstream gradient is multiplied by at each
            linear site: a number (default 1.0: `g <- g`), a dict
            `{site path: number}` (sites it does not name: 1.0), or
            `"auto"`: per-site slopes calibrated so the linear gradient has
            exact backprop's scale at each site (`sqrt(mean(f'(a)^2))` on a
            probe batch; see `calibrate_slopes`). Needed for deep
            batch-normalized networks trained with plain SGD.
        recalibrate: with `slope="auto"`, when `fit` calibrates the slopes
            on its first batch: `"epoch"` (default: at the start and at
            each epoch), `"fit"` (at the start of each `fit`) or `"never"`
            (only `calibrate_slopes(x)` calls).
        calibrated_slopes: the `"auto"` slopes in force (restored from a
            saved model; normally left None).
        sites: which activation sites use the linear rule: None (all), a
            list of layer names or paths (`"block/dense_1"`), a regex
            (matched with `re.search` against the path) or a callable
            `ActivationSite -> bool`.
        from_depth: only sites at depth >= `from_depth` (1-based, forward
            order) use the linear rule -- LinBP of Guo et al. 2020
            linearizes only the later part of a network.
        include_output: also linearize the output layer's activation
            (default False: its exact derivative is kept).
        include_softmax: also linearize softmax sites (default False).
        include_gates: also linearize multiplicative gates: bounded
            activations (sigmoid, ...) whose output the functional graph
            uses only as a factor of elementwise products, as in the
            squeeze-and-excitation blocks of EfficientNet (default False: a
            linear gate keeps receiving gradient when it saturates and its
            un-normalized weights grow until SGD diverges).
        **kwargs: arguments of `keras.Model` (`inputs`, `outputs`, `name`,
            ...).

    Activations written inside a custom layer's or subclassed model's own
    `call()` (`tf.nn.relu(x)`) are invisible and keep exact backprop;
    `linbp_summary()` lists them.

    Example:

    ```python
    inputs = keras.Input((784,))
    h = keras.layers.Dense(256, activation="sigmoid")(inputs)
    h = keras.layers.Dense(256, activation="sigmoid")(h)
    outputs = keras.layers.Dense(10)(h)
    model = keras_linbp.LinearBackpropModel(inputs, outputs)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=5, callbacks=[keras_linbp.callbacks.BackpropSchedule(3)])
    model.linbp_summary()
    ```
    """

    def __new__(cls, *args, **kwargs):
        if cls is LinearBackpropModel and _compat.functional_init_arguments(args, kwargs):
            # Keras would make `Model(inputs, outputs)` functional by
            # rewriting the class's bases for good (see
            # `inject_functional_model_class`), which would turn every later
            # subclassed LinearBackpropModel into a broken Functional. A
            # dedicated functional class avoids that.
            return FunctionalLinearBackpropModel.__new__(
                FunctionalLinearBackpropModel, *args, **kwargs
            )
        return super().__new__(cls, *args, **kwargs)

    def __init__(
        self,
        *args,
        backprop="linear",
        slope=1.0,
        sites=None,
        from_depth=None,
        include_output=False,
        include_softmax=False,
        include_gates=False,
        recalibrate="epoch",
        calibrated_slopes=None,
        **kwargs,
    ):
        _validation.require_supported_backend(
            "LinearBackpropModel"
            if type(self).__name__ == "FunctionalLinearBackpropModel"
            else type(self).__name__
        )
        if _compat.functional_init_arguments(args, kwargs) and _compat.Functional not in type(self).__mro__:
            raise TypeError(
                f"{type(self).__name__} is a subclass of LinearBackpropModel: "
                "write its `call()`, or build a functional model with "
                "`LinearBackpropModel(inputs, outputs, ...)`, or wrap a model "
                "with `LinearBackpropModel.from_model(model, ...)`."
            )
        _check_backprop(backprop)
        # Checked here with the package's validators (errors that name the
        # argument and what is allowed); LinearizeOptions keeps the values.
        options = LinearizeOptions(
            slope=_validation.check_slope(slope, allow_auto=True, allow_dict=True),
            sites=_validation.check_sites(sites),
            from_depth=_validation.check_from_depth(from_depth),
            include_output=_validation.check_bool("include_output", include_output),
            include_softmax=_validation.check_bool("include_softmax", include_softmax),
            include_gates=_validation.check_bool("include_gates", include_gates),
        )
        super().__init__(*args, **kwargs)
        self._backprop = backprop
        self._slope = options.slope
        # A tuple, not a list: Keras would wrap a list attribute for tracking.
        self._sites_option = options.sites
        self._from_depth = options.from_depth
        self._include_output = options.include_output
        self._include_softmax = options.include_softmax
        self._include_gates = options.include_gates
        self._recalibrate = _check_recalibrate(recalibrate)
        # TensorFlow: the "auto" slopes the traced step reads (untracked:
        # they are options, saved in the config, not weights).
        object.__setattr__(self, "_linbp_slope_variables", None)
        self._calibrated_slopes = None
        self.calibrated_slopes = calibrated_slopes
        if self.built and (self._sites_option is not None or isinstance(self._slope, dict)):
            # Report a misnamed site now rather than at the first step.
            self.linear_sites()

    @classmethod
    def from_model(cls, model, **options):
        """Wraps a built model; the result shares its layers and weights.

        A Sequential or functional `model` gives a functional
        `LinearBackpropModel` over the same layer graph (same layer names,
        so `sites=` can name them). A subclassed `model` becomes the single
        layer of a functional `LinearBackpropModel` whose inputs have the
        shapes `model` was built with (its sites are then named
        `"<model name>/<layer>"`).

        Args:
            model: a built `keras.Model`.
            **options: `LinearBackpropModel` options (`backprop`, `slope`,
                `sites`, `from_depth`, `include_output`, `include_softmax`,
                `include_gates`, `recalibrate`)
                and `name`.

        Returns:
            A `LinearBackpropModel` (not compiled).

        Raises:
            ValueError: if `model` is not built.
        """
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"`from_model` expects a keras.Model, got {type(model).__name__}."
            )
        if not model.built:
            raise ValueError(
                f"`from_model` needs a built model, but model {model.name!r} "
                "is not built: give it an `Input`, call it on a batch, or call "
                "`model.build(input_shape)` first."
            )
        options.setdefault("name", f"{model.name}_linbp")
        if isinstance(model, (_compat.Functional, keras.Sequential)):
            inputs, outputs = _compat.functional_io(model)
            return LinearBackpropModel(inputs, outputs, **options)
        inputs = _inputs_like_build_shapes(model)
        return LinearBackpropModel(inputs, model(inputs), **options)

    # --- options -------------------------------------------------------------

    @property
    def backprop(self):
        """`"linear"` or `"exact"`; assigning takes effect at the next step."""
        return self._backprop

    @backprop.setter
    def backprop(self, value):
        _check_backprop(value)
        if value != self._backprop:
            self._backprop = value
            self._retrace_train_function()

    @property
    def slope(self):
        """The linear rule's gradient factor; assigning takes effect at the next step."""
        return self._slope

    @slope.setter
    def slope(self, value):
        value = _validation.check_slope(value, allow_auto=True, allow_dict=True)
        if value != self._slope:
            self._slope = value
            self._hold_calibrated_slopes()
            self._retrace_train_function()

    @property
    def recalibrate(self):
        """When `slope="auto"` recalibrates: `"epoch"`, `"fit"` or `"never"`."""
        return self._recalibrate

    def calibrate_slopes(self, x, statistic="rms"):
        """Calibrates the per-site slopes `slope="auto"` uses, on inputs `x`.

        Runs one forward pass on (at most 256 examples of) `x` and sets
        `calibrated_slopes` to `{site path: sqrt(mean(f'(a)^2))}` for the
        linear sites (see `keras_linbp.calibrate_slopes`). Takes effect at
        the next training step.

        Returns:
            The new `calibrated_slopes`.
        """
        slopes = calibrate_slopes(
            self,
            x,
            statistic=statistic,
            **self.linearize_options().selection_kwargs(),
        )
        self.calibrated_slopes = slopes
        return slopes

    @property
    def calibrated_slopes(self):
        """The `"auto"` slopes in force, `{site path: slope}` (None before
        the first calibration). Assigning a dict takes effect at the next
        step (on TensorFlow without retracing the step when the same sites
        are calibrated again: the traced step reads them from variables)."""
        return self._calibrated_slopes

    @calibrated_slopes.setter
    def calibrated_slopes(self, value):
        value = None if not value else _validation.check_slope(dict(value), allow_dict=True)
        if value != self._calibrated_slopes:
            self._calibrated_slopes = value
            self._hold_calibrated_slopes()

    def _hold_calibrated_slopes(self):
        """With `slope="auto"`, puts the calibrated slopes where the step
        reads them: into the TensorFlow variables when they hold the same
        sites (no retrace), else into new ones (or, on JAX/PyTorch, into a
        new trace of the step)."""
        value = self._calibrated_slopes
        if self._slope != "auto" or value is None:
            return
        variables = self._linbp_slope_variables
        if variables is not None and set(variables) == set(value):
            for path, slope in value.items():
                variables[path].assign(slope)
            return
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            object.__setattr__(self, "_linbp_slope_variables", {
                path: tf.Variable(slope, dtype="float32", trainable=False, name="linbp_slope")
                for path, slope in value.items()
            })
        # New sites (or JAX/PyTorch, whose compiled steps take no captured
        # state): the step is traced again with the new slopes.
        self._retrace_train_function()

    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`; with `slope="auto"` it first calibrates the
        slopes on the first batch of `x` (and again each epoch unless
        `recalibrate` says otherwise)."""
        if (
            self._slope == "auto"
            and self._backprop == "linear"
            and self._recalibrate != "never"
        ):
            probe = _first_inputs(x, 256)
            if probe is None:
                if self.calibrated_slopes is None:
                    raise ValueError(
                        '`slope="auto"` calibrates on the first batch of `x`, '
                        "but `x` is a generator (reading it would take a "
                        "batch from training). Call "
                        "`model.calibrate_slopes(x_batch)` before `fit`, or "
                        "pass a tf.data.Dataset, a PyDataset or arrays."
                    )
            else:
                auto = _AutoSlopes(probe, every_epoch=self._recalibrate == "epoch")
                callbacks = [auto] + list(callbacks or [])
        return super().fit(x, y, *args, callbacks=callbacks, **kwargs)

    @property
    def from_depth(self):
        return self._from_depth

    @property
    def include_output(self):
        return self._include_output

    @property
    def include_softmax(self):
        return self._include_softmax

    @property
    def include_gates(self):
        return self._include_gates

    @property
    def sites_option(self):
        """The `sites=` argument as given (None, names, regex or callable)."""
        return self._sites_option

    def _retrace_train_function(self):
        # Keras caches the traced step in `train_function`; the swap happens
        # at trace time, so a new mode needs a new trace. `fit` looks
        # `self.train_function` up before every step, so rebuilding it (rather
        # than setting it to None) also works from a callback mid-`fit`.
        if getattr(self, "train_function", None) is not None:
            self.make_train_function(force=True)

    # --- sites ---------------------------------------------------------------

    def linearize_options(self):
        """The model's options as a `keras_linbp.linearize.LinearizeOptions`."""
        return LinearizeOptions(
            slope=self._slope,
            sites=self._sites_option,
            from_depth=self._from_depth,
            include_output=self._include_output,
            include_softmax=self._include_softmax,
            include_gates=self._include_gates,
        )

    def activation_sites(self):
        """Every activation site that runs in the model's forward pass
        (`keras_linbp.sites.ActivationSite`, call order)."""
        return linbp_sites.find_activation_sites(self)

    def _selection(self):
        all_sites = linbp_sites.find_activation_sites(self)
        _check_slope_paths(self._slope, all_sites)
        return linbp_sites.explain_selection(
            all_sites, **self.linearize_options().selection_kwargs()
        )

    def linear_sites(self):
        """The sites that use the linear rule when `backprop == "linear"`.

        Sites already linear by construction (`LinearBackprop` layers,
        `linbp_*` activations) are not listed: they are linear in both
        modes.

        Raises:
            ValueError: if `sites=` names a layer with no activation site,
                or a `slope` dict a path that is no site (the message lists
                the sites there are).
        """
        return [site for site, chosen, _ in self._selection() if chosen]

    def site_slope(self, site):
        """The slope in force at `site` (a site of this model)."""
        slope = self._slope
        if isinstance(slope, dict):
            return slope.get(site.path, 1.0)
        if slope == "auto":
            return (self.calibrated_slopes or {}).get(site.path, 1.0)
        return slope

    def _slope_text(self, site):
        if self._slope == "auto" and site.path not in (self.calibrated_slopes or {}):
            return "auto"  # calibrated when `fit` starts
        return f"{self.site_slope(site):g}"

    def _site_rules(self):
        """[(site, rule, note)] for every site; rule: linear, exact, or
        `<rule>-fixed` for a site that fixes its own rule."""
        rows = []
        for site, chosen, reasons in self._selection():
            if site.fixed_rule is not None:
                note = (
                    f"{type(site.layer).__name__} rule={site.fixed_rule!r}"
                    if site.kind == "layer call"
                    else "linbp_* activation"
                )
                rows.append((site, f"{site.fixed_rule}-fixed", note))
                continue
            rule = "linear" if chosen and self._backprop == "linear" else "exact"
            notes = list(reasons)
            if chosen and self._backprop == "exact":
                notes.append('linear when backprop="linear"')
            rows.append((site, rule, ", ".join(notes)))
        return rows

    def linbp_summary(self, print_fn=None):
        """Prints every activation site that runs, with its backward rule.

        Columns: depth (call order), site path, how the site is reached
        (`attribute`, `layer call`, or `op` inside a layer's own `call()`),
        layer class, activation, rule (`linear`, `exact`, or
        `<rule>-fixed` for sites that fix their own rule: `LinearBackprop`
        layers, `linbp_*` activations, binary signs), slope, and why a site
        is exact. Then the non-linear TensorFlow ops the forward pass applies
        outside every site (direct `tf.nn.*` / `tf.math.*` calls, which no
        Keras plugin can re-route): they keep exact backprop.

        Args:
            print_fn: function taking a line of text (default `print`).
        """
        print_fn = print_fn or print
        rows = self._site_rules()
        header = ("#", "site", "reached by", "layer", "activation", "rule", "slope", "note")
        table = [header] + [
            (
                str(site.depth),
                site.path,
                site.kind,
                type(site.layer).__name__,
                site.activation_name,
                rule,
                self._slope_text(site) if rule == "linear" else "",
                note,
            )
            for site, rule, note in rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]

        def line(row):
            return "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()

        n_linear = sum(rule != "exact" for _, rule, _ in rows)
        slope = self._slope if isinstance(self._slope, str) else (
            "per site" if isinstance(self._slope, dict) else f"{self._slope:g}"
        )
        print_fn(
            f'LinearBackpropModel "{self.name}": backprop={self._backprop!r}, '
            f"slope={slope}; {n_linear} of {len(rows)} activation "
            "sites use the linear backward rule in training."
        )
        print_fn(line(header))
        print_fn("  ".join("-" * w for w in widths))
        for row in table[1:]:
            print_fn(line(row))
        if not rows:
            print_fn("(no activation sites found)")
        unconverted = linbp_sites.find_unconverted(self)
        if unconverted:
            print_fn(
                "Not converted (exact backprop): non-linear TensorFlow ops "
                "applied outside Keras's activation functions (direct tf.* calls):"
            )
            for op_name, op_type in unconverted:
                print_fn(f"  {op_name} ({op_type})")

    # --- training ------------------------------------------------------------

    def make_train_function(self, force=False):
        # Observe the sites now, outside the traced step: JAX's trainer
        # keeps variable values only inside its stateless step.
        if self._backprop == "linear" and self.built:
            try:
                linbp_sites.find_activation_sites(self)
            except ValueError:
                pass  # no input shapes known yet: observed at the first step
        return super().make_train_function(force)

    def train_step(self, *args, **kwargs):
        # Keras's own train_step, traced with the selected sites swapped to
        # the linear rule. With MirroredStrategy every replica thread runs
        # train_step, and the swap is per thread.
        if self._backprop == "exact":
            return super().train_step(*args, **kwargs)
        data = args[-1] if args else kwargs.get("data")
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with linearize(self, inputs=x):
            return super().train_step(*args, **kwargs)

    # --- serialization -------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backprop": self._backprop,
                "slope": self._slope,
                "sites": _serialize_sites(self._sites_option),
                "from_depth": self._from_depth,
                "include_output": self._include_output,
                "include_softmax": self._include_softmax,
                "include_gates": self._include_gates,
                "recalibrate": self._recalibrate,
                "calibrated_slopes": self.calibrated_slopes,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if "sites" in config:
            config["sites"] = _deserialize_sites(config["sites"])
        return super().from_config(config, custom_objects=custom_objects)


@keras.saving.register_keras_serializable(package="keras_linbp")
class FunctionalLinearBackpropModel(LinearBackpropModel, _compat.Functional):
    """What `LinearBackpropModel(inputs, outputs, ...)` constructs.

    `LinearBackpropModel`'s methods come first in the MRO, `Functional`'s
    (graph call, config, layers) next.
    """

    def __new__(cls, *args, **kwargs):
        return _compat.Functional.__new__(cls, *args, **kwargs)

    def __init__(self, *args, **kwargs):
        if kwargs.get("name") is None:
            kwargs["name"] = _compat.auto_name("LinearBackpropModel")
        super().__init__(*args, **kwargs)


def _required_call_arguments(model):
    """Names of the arguments `model.call` cannot do without (besides
    `training` and `mask`, which Keras passes itself)."""
    try:
        parameters = inspect.signature(model.call).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.default is p.empty
        and p.name not in ("training", "mask")
    ]


def _inputs_like_build_shapes(model):
    required = _required_call_arguments(model)
    if len(required) > 1:
        raise ValueError(
            f"`from_model` cannot wrap subclassed model {model.name!r}: its "
            f"`call({', '.join(required)})` takes {len(required)} required input "
            "arguments, and a functional LinearBackpropModel passes one input "
            "(a tensor, or a list or dict of tensors). Give `call` a single "
            "input, e.g. `def call(self, inputs): a, b = inputs`, or subclass "
            "LinearBackpropModel instead of wrapping."
        )
    shapes = _compat.build_shapes(model)
    if len(shapes) != 1:
        raise ValueError(
            f"`from_model` cannot infer the inputs of subclassed model "
            f"{model.name!r}: it was built with {len(shapes)} input arguments "
            f"({list(shapes) or 'no recorded shapes'}); one input argument "
            "(a tensor, list or dict of tensors) is supported. Build a "
            "functional LinearBackpropModel around it instead."
        )
    (shape,) = shapes.values()

    def make_input(batch_shape):
        return keras.Input(batch_shape=(None,) + tuple(batch_shape)[1:], dtype=model.input_dtype)

    return keras.tree.map_shape_structure(make_input, shape)
