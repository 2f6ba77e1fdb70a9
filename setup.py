import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).resolve().parent


def read_version():
    # The one version number lives in keras_linbp/__init__.py; reading it as
    # text avoids importing the package (and TensorFlow) at install time.
    text = (HERE / "keras_linbp" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if match is None:
        raise RuntimeError("keras_linbp/__init__.py has no `__version__ = \"...\"` line")
    return match.group(1)


setup(
    name="keras-linbp",
    version=read_version(),
    description="Linear backprop (Yazdani 2018) for Keras 3: activation layers, "
    "a LinearBackpropModel for model.fit, and TensorBoard saturation callbacks.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    # The licence as an SPDX name; no licence classifier (setuptools >= 77
    # deprecates it next to this).
    license="Apache-2.0",
    license_files=["LICENSE"],
    packages=find_packages(include=["keras_linbp", "keras_linbp.*"]),
    python_requires=">=3.10",
    # The floor is the oldest pair the whole TensorFlow suite passes on
    # (keras_linbp/_versions.py refuses an older Keras at import; .ci/run
    # runs the suite on exactly these): Keras 3.3-3.10 fail it.
    install_requires=["tensorflow>=2.16.2", "keras>=3.11.3", "numpy", "tensorboard"],
    extras_require={
        "examples": ["matplotlib", "scikit-learn"],
        "jax": ["jax"],
        "torch": ["torch"],
        "hub": ["keras-hub"],
        # The tests run every backend on CPU. torch<2.14 picks the CPU wheel
        # where one is offered next to PyPI's (2.14+ on PyPI pulls ~3 GB of
        # CUDA libraries the tests never use).
        "test": [
            "pytest",
            "pytest-xdist",
            "ruff",
            "matplotlib",
            "scikit-learn",
            "jax[cpu]",
            "torch<2.14",
        ],
        # The docs site: `mkdocs build --strict` (mkdocs.yml). Lower bounds
        # are the versions the strict build was checked with; the handler
        # is named too, since mkdocs.yml uses its 2.x options.
        "docs": [
            "mkdocs>=1.6.1",
            "mkdocs-material>=9.8.2",
            "mkdocstrings[python]>=1.0.8",
            "mkdocstrings-python>=2.0.11",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Keras",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
