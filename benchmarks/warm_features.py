"""Computes (or checks) the feature cache of a dataset at a config's settings, without training anything.

  python -m benchmarks.warm_features --config=configs/mtd.py --cache_dir=results/cache

Sweeps compute features on their first cells anyway; this fills a cache ahead of time (e.g. while other work runs),
with the training views of every image, so that no split's training set has any left to compute."""
import time

from absl import app, flags
from ml_collections import config_flags

from configs.sweeps import cpu
from maml_iqr import feature_cache, xla_flags
from maml_iqr.data import readers
from maml_iqr.models import backbones

config_flags.DEFINE_config_file("config", None, "Experiment config (configs/*.py).", lock_config=False)
flags.DEFINE_string("cache_dir", None, "Feature cache folder.")
flags.DEFINE_bool("cpu_settings", True, "Apply configs/sweeps/cpu.py's overrides (the CPU tables' settings).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  c = FLAGS.config
  if FLAGS.cpu_settings:
    c.update(cpu.overrides().to_dict())
  c.cache_dir = FLAGS.cache_dir
  backbone = backbones.from_config(c.backbone)
  dataset = readers.read_config(c, backbone.input_size)
  import numpy as np
  images = np.concatenate([dataset.train.images, dataset.test.images])
  t = time.time()
  feature_cache.features(c, backbone, backbone.load(), images, dataset.name)
  print(f"{dataset.summary()}: features ready in {time.time() - t:.0f} s")


if __name__ == "__main__":
  xla_flags.prepare_process()  # before JAX starts a backend (maml_iqr/xla_flags.py)
  app.run(main)
