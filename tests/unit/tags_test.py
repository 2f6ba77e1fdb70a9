"""`keras_linbp.tags` needs nothing but `re`: the render process, the
report and the callbacks all read it (level 7 of the import order, but it
imports none of the package)."""

import ast

import pytest

import keras_linbp.tags

pytestmark = pytest.mark.all_backends


def test_tags_imports_only_the_standard_library():
    with open(keras_linbp.tags.__file__, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported == {"re"}


def test_every_tag_function_builds_a_known_tag():
    tags = keras_linbp.tags
    built = [tags.saturation_scalar("s", name) for name in tags.SATURATION_SCALARS]
    built += [tags.activation_histogram("s", name) for name in tags.ACTIVATION_HISTOGRAMS]
    built += [tags.gradient_norm("s", rule) for rule in tags.RULES]
    built += [tags.gradient_histogram("s", rule) for rule in tags.RULES]
    assert all(tags.is_known_tag(tag) for tag in built + [tags.HISTOGRAM_GRID])
    assert not tags.is_known_tag("saturation/s/unknown_fraction")


def test_gradient_flow_rules_are_the_backprop_modes():
    # GradientFlow names its second rule after the model's mode.
    from keras_linbp import rules

    assert set(keras_linbp.tags.RULES) == set(rules.MODES)
