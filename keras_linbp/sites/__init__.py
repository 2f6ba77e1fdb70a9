"""Activation sites: find the activations a model really applies, choose
some, and swap their functions for the length of a `with` block.

`find_activation_sites(model)` observes one traced forward call and returns
the sites that run (`keras_linbp.sites.discovery`), as `ActivationSite`s
(`keras_linbp.sites.site`), among the places that could hold an activation
(`keras_linbp.sites.candidates`), with the multiplicative gates marked
(`keras_linbp.sites.gates`); `select_sites` / `explain_selection`
choose among them (`keras_linbp.sites.selection`); `swap_sites(sites,
make_replacement)` re-routes them per thread (`keras_linbp.sites.swap`, on
the dispatchers of `keras_linbp.sites.dispatch`). The one discovery serves
`LinearBackpropModel`, `keras_linbp.linearize` and the callbacks.
"""

from keras_linbp.sites.candidates import ACTIVATION_ATTRIBUTES
from keras_linbp.sites.candidates import CALL_SITE_LAYERS
from keras_linbp.sites.candidates import walk
from keras_linbp.sites.discovery import find_activation_sites
from keras_linbp.sites.discovery import find_unconverted
from keras_linbp.sites.site import KINDS
from keras_linbp.sites.site import ActivationSite
from keras_linbp.sites.site import original_function
from keras_linbp.sites.selection import explain_selection
from keras_linbp.sites.selection import no_selection_reason
from keras_linbp.sites.selection import select_sites
from keras_linbp.sites.sharing import output_sharing
from keras_linbp.sites.swap import swap_sites

__all__ = [
    "output_sharing",
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
