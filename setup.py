from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as readme:
    long_description = readme.read()

setup(
    name="keras-linbp",
    version="0.1.0",
    description="Linear backprop (Yazdani 2018) for Keras 3: activation layers, "
    "a LinearBackpropModel for model.fit, and TensorBoard saturation callbacks.",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["keras_linbp", "keras_linbp.*"]),
    python_requires=">=3.10",
    install_requires=["tensorflow>=2.16", "keras>=3.3", "numpy", "tensorboard"],
    extras_require={
        "examples": ["matplotlib", "scikit-learn"],
        "hub": ["keras-hub"],
        "test": ["pytest", "pytest-xdist", "matplotlib", "scikit-learn"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Keras",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
