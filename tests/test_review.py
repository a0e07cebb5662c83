"""The review sheet: pages of at most N images, largest score first, stale pages of an older sheet removed.

Checked against broken code: with page_order sorting ascending the order test fails; with page_paths ignoring
the page count (always review.png) the page-count test fails; with _remove_stale_pages a no-op the stale-page
test fails.
"""
import numpy as np
import pytest
from PIL import Image

from maml_iqr import review


def _sheet(n, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
  maps = rng.random((n, 32, 32)).astype(np.float32)
  scores = rng.normal(size=n)
  return images, scores, maps, [f"img_{i:02d}.png" for i in range(n)]


def test_pages_hold_the_largest_scores_first():
  scores = np.array([0.1, 5.0, -1.0, 3.0, 3.0, 2.0, 9.0])
  pages = review.page_order(scores, per_page=3)
  assert [p.tolist() for p in pages] == [[6, 1, 3], [4, 5, 0], [2]]  # ties keep input order (3 before 4)


def test_sheet_is_written_in_pages_of_at_most_per_page(tmp_path):
  images, scores, maps, titles = _sheet(30)
  written = review.write(str(tmp_path / "review.png"), images, scores, maps, titles, per_page=12,
                         threshold=0.5)
  assert [p.split("/")[-1] for p in written] == ["review_1.png", "review_2.png", "review_3.png"]
  for p in written:
    with Image.open(p) as im:
      assert im.format == "PNG" and im.size[0] > 100
  assert not (tmp_path / "review.png").exists()


def test_a_shorter_sheet_replaces_the_older_pages(tmp_path):
  images, scores, maps, titles = _sheet(30)
  review.write(str(tmp_path / "review.png"), images, scores, maps, titles, per_page=12)
  written = review.write(str(tmp_path / "review.png"), images[:5], scores[:5], None, titles[:5], per_page=12)
  assert written == [str(tmp_path / "review.png")]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["review.png"]


def test_mismatched_lengths_are_refused(tmp_path):
  images, scores, maps, titles = _sheet(4)
  with pytest.raises(ValueError, match="one of each per image"):
    review.write(str(tmp_path / "review.png"), images, scores[:3], maps, titles)
