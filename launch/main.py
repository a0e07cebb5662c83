"""Command line: python -m launch.main --config=configs/default.py --workdir=DIR [--config.x.y=value ...]"""
from absl import app, flags
from ml_collections import config_flags

from maml_iqr import run, xla_flags

config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py, ':quick' shrinks it).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for results.json, report.md, plots and checkpoints.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first (multi-host pods and clusters; "
                  "the coordinator is found from the environment: Cloud TPU, SLURM, Open MPI).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  if flags.FLAGS.distributed:
    import jax
    jax.distributed.initialize()
  run.main(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  xla_flags.prepare_process()  # before JAX starts a backend (maml_iqr/xla_flags.py)
  app.run(main)
