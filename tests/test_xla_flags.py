"""The XLA:CPU option, the compilation cache and the TPU-probe filter: applied by the entry points, never by
importing the library.

Checked against the old code: with `maml_iqr/__init__.py` calling `tune_cpu()` on import again,
test_importing_the_library_leaves_the_environment_alone fails (XLA_FLAGS gains the option); with the
`prepare_process()` line removed from an entry point, test_entry_point_applies_the_option fails for it; with
`quiet_tpu_probe` a no-op, test_no_tpu_probe_line_on_cpu fails (the INFO line is back).
"""
import os
import subprocess
import sys

import pytest

from maml_iqr import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_POINTS = ("launch.main", "launch.sweep", "launch.predict", "benchmarks.bench_core", "benchmarks.cost_curves",
                "benchmarks.inner_loop", "benchmarks.warm_features")
CACHE_SETTINGS = ("MAML_IQR_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR")
# Counts YNNPACK fusions whose root is a reduction in the compiled sum over tasks that MAML's outer gradient does.
PROBE = """
import re, sys, jax, jax.numpy as jnp
from maml_iqr import xla_flags
if sys.argv[1] == "tune":
  xla_flags.tune_cpu()
hlo = jax.jit(lambda x: x.sum(0)).lower(jnp.ones((4, 512, 512))).compile().as_text()
roots = {}
name = None
for line in hlo.splitlines():
  if line.startswith('%'):
    name = line.split()[0][1:]
  elif name and line.strip().startswith('ROOT'):
    roots[name], name = line, None
called = re.findall(r'ynn_fusion\\S* = .*calls=%([\\w.-]+)', hlo)
print(sum(' reduce(' in roots.get(c, '') for c in called))
"""


def _env(**updates) -> dict:
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "MAML_IQR_XLA_TUNING", "JAX_PLATFORMS") + CACHE_SETTINGS}
  env.update(updates)
  return env


def _python(code: str, *args, env=None) -> subprocess.CompletedProcess:
  done = subprocess.run([sys.executable, "-c", code, *args], env=env or _env(), cwd=ROOT, capture_output=True,
                        text=True, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return done


def _reductions_in_ynnpack(mode: str, env=None) -> int:
  return int(_python(PROBE, mode, env=env).stdout.strip().splitlines()[-1])


needs_option = pytest.mark.skipif(not xla_flags.jaxlib_knows(xla_flags.OPTION),
                                  reason="this jaxlib has no YNNPACK fusion option; nothing to tune")


def test_importing_the_library_leaves_the_environment_alone():
  # jax itself sets TF_CPP_MIN_LOG_LEVEL and TPU_SKIP_MDS_QUERY on import: snapshot after the dependencies.
  code = ("import os, json, jax, flax, distrax, optax, orbax.checkpoint, tensorflow_datasets\n"
          "before = dict(os.environ)\n"
          "import maml_iqr, maml_iqr.run, maml_iqr.cleaning, maml_iqr.detector, maml_iqr.data.readers\n"
          "import launch.main, benchmarks.bench_core, benchmarks.cost_curves\n"  # launch.sweep redefines --workdir

          "print(json.dumps({k: v for k, v in os.environ.items() if before.get(k) != v}))")
  assert _python(code).stdout.strip().splitlines()[-1] == "{}"


@needs_option
@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_entry_point_applies_the_option(module):
  """Runs the module as a script with --help: its __main__ block runs up to flag parsing, which exits."""
  code = ("import os, runpy, sys\n"
          "sys.argv = [sys.argv[1], '--help']\n"
          "try:\n  runpy.run_module(sys.argv[0], run_name='__main__')\n"
          "except SystemExit:\n  pass\n"
          "print('XLA_FLAGS=' + os.environ.get('XLA_FLAGS', ''))")
  last = _python(code, module).stdout.strip().splitlines()[-1]
  assert last == f"XLA_FLAGS={xla_flags.FLAG}"


@needs_option
def test_the_option_takes_reductions_out_of_ynnpack():
  assert _reductions_in_ynnpack("plain") > 0  # jaxlib's default: YNNPACK reductions
  assert _reductions_in_ynnpack("tune") == 0


@needs_option
def test_opt_out_and_user_choice_are_respected():
  code = "import os; from maml_iqr import xla_flags; print(xla_flags.tune_cpu(), os.environ.get('XLA_FLAGS', ''))"
  assert _python(code, env=_env(MAML_IQR_XLA_TUNING="0")).stdout.split() == ["False"]
  mine = f"{xla_flags.OPTION}=individual_dot,reduce"
  assert _python(code, env=_env(XLA_FLAGS=mine)).stdout.split() == ["False", mine]
  assert _reductions_in_ynnpack("tune", env=_env(XLA_FLAGS=mine)) > 0


def test_unknown_option_is_never_added(monkeypatch):
  monkeypatch.setattr(xla_flags, "OPTION", "--xla_cpu_option_that_does_not_exist")
  monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
  assert not xla_flags.tune_cpu()
  assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x"


@pytest.mark.skipif(xla_flags.tpu_library_installed(), reason="a TPU library is installed: the probe may succeed")
def test_no_tpu_probe_line_on_cpu():
  """An absl program (INFO shown, as under launch) that starts JAX's backend with JAX_PLATFORMS unset."""
  code = ("import sys\nfrom absl import app\nfrom maml_iqr import xla_flags\n"
          "if sys.argv[1] == 'prepared':\n  xla_flags.prepare_process()\n"
          "def main(_):\n  import jax\n  print(jax.devices()[0].platform)\n"
          "app.run(main, argv=sys.argv[:1])")
  plain = _python(code, "plain")
  assert xla_flags.TPU_PROBE_MESSAGE in plain.stderr  # what the filter is for: jax logs it without one
  prepared = _python(code, "prepared")
  assert xla_flags.TPU_PROBE_MESSAGE not in prepared.stderr and prepared.stdout.strip() == "cpu"


# Compiles a function under prepare_process() and prints how many compiles the persistent cache answered.
CACHE_PROBE = """
import jax, jax.numpy as jnp
from maml_iqr import xla_flags
xla_flags.prepare_process()
hits = []
jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event) if event.endswith('/cache_hits') else 0)
jax.jit(lambda x: jnp.tanh(x @ x.T).sum(0))(jnp.ones((64, 32))).block_until_ready()
print(len(hits), xla_flags.compile_cache_use().get("compile_cache_hits", 0))
"""


def _cache_hits(env) -> int:
  """Cache hits of a process running CACHE_PROBE, as JAX reports them; `compile_cache_use` must agree."""
  seen, counted = map(int, _python(CACHE_PROBE, env=env).stdout.strip().splitlines()[-1].split())
  assert counted == seen
  return seen


def test_a_second_process_reuses_the_first_ones_compiles(tmp_path):
  env = _env(MAML_IQR_COMPILE_CACHE=str(tmp_path / "jax"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  assert _cache_hits(env) == 0
  assert os.listdir(tmp_path / "jax")
  assert _cache_hits(env) >= 1


def test_compile_cache_off_and_user_choice_are_respected(tmp_path):
  off = _env(MAML_IQR_COMPILE_CACHE="0", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", HOME=str(tmp_path),
             XDG_CACHE_HOME=str(tmp_path / "xdg"))
  assert _cache_hits(off) == 0 and _cache_hits(off) == 0
  assert not os.path.exists(tmp_path / "xdg")
  default = dict(off, MAML_IQR_COMPILE_CACHE="")
  del default["MAML_IQR_COMPILE_CACHE"]
  _cache_hits(default)
  assert os.listdir(tmp_path / "xdg" / "maml_iqr" / "jax")  # the documented default folder
  code = "import os; from maml_iqr import xla_flags; print(xla_flags.compile_cache(), os.environ['JAX_COMPILATION_CACHE_DIR'])"
  mine = str(tmp_path / "mine")
  assert _python(code, env=_env(JAX_COMPILATION_CACHE_DIR=mine)).stdout.split() == ["None", mine]


def test_an_unwritable_cache_folder_only_warns(tmp_path):
  (tmp_path / "file").write_text("not a folder")
  code = "from maml_iqr import xla_flags; print(xla_flags.compile_cache())"
  done = _python(code, env=_env(MAML_IQR_COMPILE_CACHE=str(tmp_path / "file" / "jax")))
  assert done.stdout.split() == ["None"] and "no compilation cache" in done.stderr
