"""Shared test helpers: where ../shared is, and skips that say why when it is absent."""
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("MAML_IQR_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
DATA = os.path.join(SHARED, "data")


def shared_data(name: str) -> str:
  """Path of a real dataset in ../shared/data, or a skip naming what is missing."""
  path = os.path.join(DATA, name)
  if not os.path.isdir(path):
    pytest.skip(f"real data {path} is absent (set MAML_IQR_SHARED to the shared/ folder to run this test)")
  return path
