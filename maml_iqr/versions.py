"""What a result was measured with: the versions of the libraries the numbers depend on, and the device."""
from __future__ import annotations

import importlib.metadata

# key in the record -> distribution name on PyPI
PACKAGES = {"jax": "jax", "jaxlib": "jaxlib", "flax": "flax", "optax": "optax", "distrax": "distrax",
            "orbax": "orbax-checkpoint", "tfds": "tensorflow-datasets", "numpy": "numpy"}


def versions() -> dict:
  """{jax, jaxlib, flax, optax, distrax, orbax, tfds, numpy: version or None when not installed, device_kind,
  platform, device_count} for results.json. Starts JAX's backend (it asks for the devices)."""
  import jax  # pylint: disable=import-outside-toplevel
  out = {}
  for key, dist in PACKAGES.items():
    try:
      out[key] = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
      out[key] = None
  device = jax.devices()[0]
  out.update(device_kind=device.device_kind, platform=device.platform, device_count=jax.device_count())
  return out
