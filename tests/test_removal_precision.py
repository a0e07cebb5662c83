"""On real data, every removing method finds injected images far better than chance: Magnetic Tile at 30 % noise
(../shared), one refinement iteration at small settings. Fails if the cleaning scores are random, inverted, or
computed on the wrong images.

Chance is exact: removing n of the N training images at random finds K * n / N of the K injected ones on average,
and at least x of them with the hypergeometric tail probability asserted below to be under 1e-3 (a random ranking passes 1 time in 1000).
"""
import math

import pytest

from configs import mtd as mtd_config
from maml_iqr import run
from tests.conftest import shared_data


def hypergeometric_tail(n_total: int, n_injected: int, n_removed: int, found: int) -> float:
  """P(at least `found` injected among `n_removed` images drawn at random from `n_total`)."""
  denominator = math.comb(n_total, n_removed)
  return sum(math.comb(n_injected, k) * math.comb(n_total - n_injected, n_removed - k)
             for k in range(found, min(n_injected, n_removed) + 1)) / denominator


def test_hypergeometric_tail_known_values():
  assert hypergeometric_tail(10, 5, 5, 0) == pytest.approx(1.0)
  assert hypergeometric_tail(10, 5, 5, 5) == pytest.approx(1 / 252)
  assert hypergeometric_tail(4, 2, 2, 1) == pytest.approx(5 / 6)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("mtd_cache"))  # the methods share one feature cache


# The paper's method and the folder config's scorer. one_shot and iterative fit plain flows (cleaning.fit_trained,
# the training maml_iqr pretrains with) and run end to end on synthetic data in test_run.py.
@pytest.mark.parametrize("method", ["maml_iqr", "gaussian_iqr"])
def test_removals_on_magnetic_tile_at_30_percent_noise_beat_chance(method, cache_dir, tmp_path):
  c = mtd_config.get_config()
  c.data.root = shared_data("magnetic_tile")
  c.cache_dir, c.method, c.noise.ratio = cache_dir, method, 0.3
  c.flow.n_blocks, c.flow.hidden = 4, 128
  c.train.n_cached_views, c.train.n_views, c.score.n_views = 4, 4, 4
  c.train.meta_epochs, c.train.sub_epochs = 4, 2   # one_shot's fit and the final detector: 8 epochs
  c.maml.pretrain_epochs, c.maml.meta_epochs, c.refine.score_epochs = 4, 1, 5
  c.refine.max_iterations, c.refine.k, c.score.pixel_auroc_images = 1, 1.0, 0  # k = 1: more removals, more power
  res = run.train_and_evaluate(c, str(tmp_path))
  h = res["refinement"][0]
  n_train, n_injected = res["contamination"]["n_train"], res["contamination"]["n_injected"]
  found, n_removed = h["removed_injected"], h["n_removed"]
  share = n_injected / n_train
  assert n_removed >= 15, h
  assert found / n_removed > 2 * share, (found, n_removed, share)
  p_chance = hypergeometric_tail(n_train, n_injected, n_removed, found)
  print(f"{method}: {found} injected of {n_removed} removed, share {share:.3f}, chance p {p_chance:.1e}")
  assert p_chance < 1e-3, (found, n_removed, share)
