"""Command line: python -m launch.main --config=configs/default.py --workdir=DIR [--config.x.y=value ...]

A bad command line, config, dataset or weights file ends in one line `error: ...` and exit code 2; SIGTERM or
SIGINT stop the run at once with exit code 128 + the signal, and the same command resumes it. `--overwrite`
clears a workdir made by another config first. Multi-process (one process per host, or per GPU):

  python -m launch.main --distributed --config=... --workdir=SHARED_DIR \
      [--coordinator_address=HOST0:PORT --num_processes=N --process_id=I]

(the last three are found from the environment on Cloud TPU, SLURM and Open MPI). Every process runs the same
pipeline; the meta-steps span the devices of all processes; only process 0 writes files.
"""
import sys

from absl import app, flags
from ml_collections import config_flags

from maml_iqr import config_check, run, xla_flags

config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py, ':quick' shrinks it).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for results.json, report.md, plots and checkpoints.")
flags.DEFINE_bool("overwrite", False, "Delete the workdir's checkpoints and results first (a workdir made by "
                  "another config is otherwise refused; the feature cache is kept).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first (multi-host pods and clusters; "
                  "the coordinator is found from the environment: Cloud TPU, SLURM, Open MPI, or the flags below).")
flags.DEFINE_string("coordinator_address", None, "With --distributed: host:port of process 0 (e.g. localhost:1234).")
flags.DEFINE_integer("num_processes", None, "With --distributed: how many processes take part.")
flags.DEFINE_integer("process_id", None, "With --distributed: this process's index, 0 .. num_processes - 1.")
flags.DEFINE_multi_string("import", [], "A Python module to import before the run (repeatable), e.g. one that "
                          "registers a meta-objective with maml.register_objective; it must be importable (on "
                          "PYTHONPATH or installed).")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def parse_flags(argv):
  """absl's parsing, with every refusal (an unknown --config key, a config spec typo, a bad value) as one line
  `error: ...` and exit code 2 instead of a traceback."""
  try:
    return FLAGS(argv)
  except Exception as e:  # noqa: BLE001 - absl raises flags.Error; ml_collections AttributeError for unknown keys
    print(f"error: {config_check.flag_error_line(e, argv, config_check.load_config_file)}", file=sys.stderr)
    raise SystemExit(2) from None


def start_distributed() -> None:
  import jax  # noqa: PLC0415
  given = {"coordinator_address": FLAGS.coordinator_address, "num_processes": FLAGS.num_processes,
           "process_id": FLAGS.process_id}
  jax.distributed.initialize(**{k: v for k, v in given.items() if v is not None})


def import_plugins(names: list[str]) -> None:
  """Imports the --import modules (their registrations run), or stops with one line naming the module."""
  import importlib  # noqa: PLC0415
  for name in names:
    try:
      importlib.import_module(name)
    except ImportError as e:
      print(f"error: --import={name}: cannot import it ({e}); put its folder on PYTHONPATH or install it",
            file=sys.stderr)
      raise SystemExit(2) from None


def main(argv):
  del argv
  import_plugins(FLAGS["import"].value)
  if FLAGS.distributed:
    start_distributed()
  run.main(FLAGS.config, FLAGS.workdir, FLAGS.overwrite)


if __name__ == "__main__":
  xla_flags.prepare_process()  # before JAX starts a backend (maml_iqr/xla_flags.py)
  app.run(main, flags_parser=parse_flags)
