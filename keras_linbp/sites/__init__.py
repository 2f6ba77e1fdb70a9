"""Activation sites: find the activations a model really applies, choose
some, and swap their functions for the length of a `with` block.

`find_activation_sites(model)` observes one traced forward call and returns
the sites that run (see `keras_linbp.sites.discovery`); `select_sites` /
`explain_selection` choose among them; `swap_sites(sites, make_replacement)`
re-routes them per thread (see `keras_linbp.sites.dispatch`). The one
discovery serves `LinearBackpropModel`, `keras_linbp.linearize` and the
callbacks.
"""

from keras_linbp.sites.discovery import ACTIVATION_ATTRIBUTES
from keras_linbp.sites.discovery import CALL_SITE_LAYERS
from keras_linbp.sites.discovery import KINDS
from keras_linbp.sites.discovery import ActivationSite
from keras_linbp.sites.discovery import find_activation_sites
from keras_linbp.sites.discovery import find_unconverted
from keras_linbp.sites.discovery import original_function
from keras_linbp.sites.discovery import walk
from keras_linbp.sites.selection import explain_selection
from keras_linbp.sites.selection import no_selection_reason
from keras_linbp.sites.selection import select_sites
from keras_linbp.sites.swap import swap_sites

__all__ = [
    "ACTIVATION_ATTRIBUTES",
    "CALL_SITE_LAYERS",
    "KINDS",
    "ActivationSite",
    "explain_selection",
    "find_activation_sites",
    "find_unconverted",
    "no_selection_reason",
    "original_function",
    "select_sites",
    "swap_sites",
    "walk",
]
