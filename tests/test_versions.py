"""versions() reports what is really installed and running (checked to fail with a wrong distribution name)."""
import distrax
import flax
import jax
import jaxlib
import numpy as np
import optax
import orbax.checkpoint
import tensorflow_datasets as tfds

from maml_iqr import versions


def test_versions_are_the_imported_ones_and_the_device():
  v = versions.versions()
  assert set(v) == set(versions.PACKAGES) | {"device_kind", "platform", "device_count"}
  assert (v["jax"], v["jaxlib"], v["flax"], v["optax"], v["numpy"]) == (
      jax.__version__, jaxlib.__version__, flax.__version__, optax.__version__, np.__version__)
  assert (v["distrax"], v["orbax"], v["tfds"]) == (distrax.__version__, orbax.checkpoint.__version__,
                                                    tfds.__version__)
  device = jax.devices()[0]
  assert (v["device_kind"], v["platform"], v["device_count"]) == (device.device_kind, device.platform,
                                                                  jax.device_count())
