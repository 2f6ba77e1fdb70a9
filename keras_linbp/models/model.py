"""`LinearBackpropModel`: train any Keras model with linear backprop in `fit`.

The training step is Keras's own, traced with the selected activation
sites swapped to the linear rule (`with linearize(self):
super().train_step(data)`), so sample and class weights, metrics,
mixed-precision loss scaling, `jit_compile`, `steps_per_execution`,
gradient clipping and `tf.distribute` behave as for a plain `keras.Model`;
`evaluate`, `predict` and plain calls are untouched.
"""

import keras

from keras_linbp import _compat
from keras_linbp import _validation
from keras_linbp import options as linbp_options
from keras_linbp import rules
from keras_linbp import sites as linbp_sites
from keras_linbp import summary
from keras_linbp.linearize import linearize
from keras_linbp.models import wrap
from keras_linbp.models.auto_slope import AutoSlopeMixin
from keras_linbp.models.auto_slope import check_recalibrate
from keras_linbp.options import LinearizeOptions


class _Option:
    """A model attribute that reads one field of the model's options; with
    `on_change`, assigning checks the value and, if it changed, calls
    `on_change(model)`."""

    def __init__(self, field, on_change=None):
        self.field = field
        self.on_change = on_change
        settable = "; assigning takes effect at the next step" if on_change else ""
        self.__doc__ = f"The `{field}` option (see `keras_linbp.LinearizeOptions`){settable}."

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, model, owner=None):
        return self if model is None else getattr(model._options, self.field)

    def __set__(self, model, value):
        if self.on_change is None:
            raise AttributeError(
                f"`{self.name}` is fixed when the model is made; make a new model "
                "(e.g. `LinearBackpropModel.from_model(model, ...)`) to change it."
            )
        options = model._options.replace(**{self.field: value})
        if getattr(options, self.field) != getattr(model._options, self.field):
            # A `bits` / `slope` dict naming no site fails here, not at the next step.
            model._check_site_names(options)
            model._options = options
            self.on_change(model)


def _new_slope(model):
    model._hold_calibrated_slopes()
    model._retrace_train_function()


@keras.saving.register_keras_serializable(package="keras_linbp")
class LinearBackpropModel(AutoSlopeMixin, keras.Model):
    """A `keras.Model` whose training step uses linear backprop.

    Forward pass: unchanged. Backward pass of `fit` / `train_on_batch`:
    through each selected activation site (`Dense(..., activation=...)`,
    `Conv*`, `Activation`, `ReLU`, ..., sites of nested models; see
    `keras_linbp.sites`) the upstream gradient is passed on as `slope * g`
    instead of `g * f'(a)` (Yazdani 2018). Weight gradients and the
    propagation through the weights are ordinary backprop; the output
    layer's activation and softmax keep their exact derivative by default.

    Three ways to make one:

    - functional: `LinearBackpropModel(inputs, outputs, backprop="linear")`;
    - subclassing: subclass `LinearBackpropModel`, pass the options to
      `super().__init__(**kwargs)` and write `call()`;
    - `LinearBackpropModel.from_model(model, **options)` wraps an existing
      built Sequential, functional or subclassed model, sharing its layers
      and weights (no copies).

    >>> import keras, numpy as np, keras_linbp
    >>> inputs = keras.Input((4,))
    >>> hidden = keras.layers.Dense(8, activation="sigmoid", name="hidden")(inputs)
    >>> model = keras_linbp.LinearBackpropModel(inputs, keras.layers.Dense(3)(hidden), name="net")
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    >>> history = model.fit(x, np.arange(16) % 3, epochs=2, verbose=0)
    >>> model.linbp_summary()
    LinearBackpropModel "net": backprop='linear', slope=1; 1 of 1 activation sites use the linear backward rule in training.
    #  site    reached by  layer  activation  rule    slope  note
    -  ------  ----------  -----  ----------  ------  -----  ----
    1  hidden  attribute   Dense  sigmoid     linear  1

    Args:
        options: a `keras_linbp.LinearizeOptions`: `backprop`, `slope`,
            `sites`, `from_depth`, `include_output`, `include_softmax`,
            `include_gates`, `include_recurrent` (each documented there).
            They may also be given by name (`backprop="exact"`,
            `slope="auto"`, ...), replacing
            those of `options`. `backprop` and `slope` can be assigned
            between steps (see also `keras_linbp.callbacks.BackpropSchedule`).
        recalibrate: with `slope="auto"`, when `fit` calibrates the slopes
            on its first batch: `"epoch"` (default: at its start and each
            epoch), `"fit"` (at its start) or `"never"`. Recalibrating
            retraces no step (it reads the slopes from variables). Any other
            value than the default with a slope that is not `"auto"` raises
            a `ValueError` (it would do nothing); to switch to `"auto"`
            later, assign `model.slope = "auto"`, then `model.recalibrate`.
        calibrated_slopes: the `"auto"` slopes in force (set on loading).
        **kwargs: the options by name, and the arguments of `keras.Model`
            (`inputs`, `outputs`, `name`, ...).

    Activations a layer's own `call()` applies directly (`tf.nn.relu(x)`)
    keep exact backprop; `linbp_summary()` lists them.
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

    def __init__(self, *args, options=None, recalibrate="epoch", calibrated_slopes=None, **kwargs):
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
        overrides, kwargs = LinearizeOptions.split_kwargs(kwargs)
        options = linbp_options.resolve(options, overrides)
        super().__init__(*args, **kwargs)
        self._options = options
        self._init_auto_slope(recalibrate, calibrated_slopes)
        # Report a misnamed site now rather than at the first step.
        self._check_site_names(options)

    @classmethod
    def from_model(cls, model, **kwargs):
        """Wraps a built model; the result shares its layers and weights.

        A Sequential or functional `model` gives the same layer graph (same
        layer names, so `sites=` can name them); a subclassed one becomes
        the single layer of the result, its sites named
        `"<model name>/<layer>"` (see `keras_linbp.models.wrap`).

        Args:
            model: a built `keras.Model`.
            **kwargs: `LinearBackpropModel` arguments and `name` (default
                `"<model name>_linbp"`).

        Returns:
            A `LinearBackpropModel` (not compiled).

        Raises:
            ValueError: if `model` is not built.
        """
        inputs, outputs = wrap.functional_parts(model)
        kwargs.setdefault("name", f"{model.name}_linbp")
        return LinearBackpropModel(inputs, outputs, **kwargs)

    # --- options (the fields of `self._options`) -------------------------------

    backprop = _Option("backprop", on_change=lambda model: model._retrace_train_function())
    slope = _Option("slope", on_change=_new_slope)
    sites_option = _Option("sites")
    from_depth = _Option("from_depth")
    include_output = _Option("include_output")
    include_softmax = _Option("include_softmax")
    include_gates = _Option("include_gates")
    bits = _Option("bits", on_change=lambda model: model._retrace_train_function())
    include_recurrent = _Option("include_recurrent")

    @property
    def options(self):
        """The options in force, a `keras_linbp.LinearizeOptions`."""
        return self._options

    def linearize_options(self):
        """The options in force (as `options`): what `keras_linbp.linearize`
        and `keras_linbp.calibrate_slopes` use for this model by default."""
        return self._options

    def _retrace_train_function(self):
        # Keras caches the traced step in `train_function`; the swap happens
        # at trace time, so a new mode needs a new trace. `fit` looks
        # `self.train_function` up before every step, so rebuilding it (rather
        # than setting it to None) also works from a callback mid-`fit`.
        if getattr(self, "train_function", None) is not None:
            self.make_train_function(force=True)

    # --- sites -----------------------------------------------------------------

    def activation_sites(self):
        """Every activation site that runs in the model's forward pass
        (`keras_linbp.sites.ActivationSite`, call order)."""
        return linbp_sites.find_activation_sites(self)

    def linear_sites(self):
        """The sites that use the linear rule when `backprop == "linear"`
        (not those linear by construction: `LinearBackprop` layers,
        `linbp_*` activations).

        Raises:
            ValueError: if `sites=` names a layer with no activation site,
                or a `slope` dict a path that is no site.
        """
        rows = linbp_sites.explain_selection(self.activation_sites(), self._options)
        return [site for site, chosen, _ in rows if chosen]

    def _check_site_names(self, options):
        """Raises `ValueError` where `options` name a site (`sites`, a
        `slope` or `bits` dict) the built model does not have."""
        if self.built and (
            options.sites is not None or isinstance(options.slope, dict) or isinstance(options.bits, dict)
        ):
            linbp_sites.explain_selection(self.activation_sites(), options)

    def site_slope(self, site):
        """The slope in force at `site` (a site of this model)."""
        return self._options.slope_at(site.path, self.calibrated_slopes)

    def linbp_summary(self, print_fn=None):
        """Prints every activation site with its backward rule and slope
        (see `keras_linbp.linbp_summary`).

        Args:
            print_fn: function taking a line of text (default `print`).
        """
        summary.linbp_summary(self, print_fn=print_fn)

    # --- training --------------------------------------------------------------

    def make_train_function(self, force=False):
        # Observe the sites now, outside the traced step: JAX's trainer
        # keeps variable values only inside its stateless step.
        if not rules.get(self.backprop).exact and self.built:
            try:
                linbp_sites.find_activation_sites(self)
            except ValueError:
                pass  # no input shapes known yet: observed at the first step
        return super().make_train_function(force)

    def train_step(self, *args, **kwargs):
        # Keras's own train_step, traced with the selected sites swapped to
        # the linear rule. With MirroredStrategy every replica thread runs
        # train_step, and the swap is per thread.
        if rules.get(self.backprop).exact:
            return super().train_step(*args, **kwargs)
        data = args[-1] if args else kwargs.get("data")
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        if not self.built:
            # TensorFlow without a distribution strategy builds a model in
            # its first traced step; its sites (and a misnamed `sites=`)
            # can only be known once built, before the linear forward.
            self(x, training=False)
        with linearize(self, inputs=x):
            return super().train_step(*args, **kwargs)

    # --- serialization: the options as flat keys ("backprop", "slope", ...) ----

    def get_config(self):
        config = super().get_config()
        config.update(self._options.get_config())
        config.update(recalibrate=self._recalibrate, calibrated_slopes=self.calibrated_slopes)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        saved, rest = LinearizeOptions.split_kwargs(config)
        options = LinearizeOptions.from_config(saved)
        # Passed on by name, as saved: a subclass's `__init__` may name them.
        rest.update({name: getattr(options, name) for name in saved})
        # Set after construction: a model whose slope was assigned a number
        # after `slope="auto"` keeps its `recalibrate`, which the
        # constructor refuses next to a number.
        recalibrate = rest.pop("recalibrate", None)
        model = super().from_config(rest, custom_objects=custom_objects)
        if recalibrate is not None:
            model._recalibrate = check_recalibrate(recalibrate)
        return model


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
