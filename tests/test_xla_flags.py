"""The XLA:CPU tuning set on import: applied where safe, overridable, and actually in effect."""
import os
import subprocess
import sys

import pytest

from maml_iqr import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Counts YNNPACK fusions whose root is a reduction in the compiled sum over tasks that MAML's outer gradient does.
PROBE = """
import re, jax, jax.numpy as jnp
import maml_iqr
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


def _run(env_updates: dict) -> tuple[str, str]:
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "MAML_IQR_XLA_TUNING")}
  env.update(env_updates)
  code = "import os, maml_iqr; print(os.environ.get('XLA_FLAGS', ''))"
  flags = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
  reduces = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.strip().splitlines()[-1]
  return flags, reduces


needs_option = pytest.mark.skipif(not xla_flags.jaxlib_knows(xla_flags.OPTION),
                                  reason="this jaxlib has no YNNPACK fusion option; nothing to tune")


@needs_option
def test_import_sets_the_flag_and_reductions_leave_ynnpack():
  flags, reduces = _run({})
  assert xla_flags.FLAG in flags
  assert reduces == "0"


@needs_option
def test_opt_out_and_user_choice_are_respected():
  flags, reduces = _run({"MAML_IQR_XLA_TUNING": "0"})
  assert xla_flags.OPTION not in flags and int(reduces) > 0  # jaxlib's default: YNNPACK reductions
  mine = f"{xla_flags.OPTION}=individual_dot,reduce"
  flags, reduces = _run({"XLA_FLAGS": mine})
  assert flags == mine and int(reduces) > 0


def test_unknown_option_is_never_added(monkeypatch):
  monkeypatch.setattr(xla_flags, "OPTION", "--xla_cpu_option_that_does_not_exist")
  monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
  assert not xla_flags.tune_cpu()
  assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x"
