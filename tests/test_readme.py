"""The README's code runs as written: the meta-objective a researcher adds in a few lines."""
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from maml_iqr import maml
from tests.conftest import REPO, write_synthetic_folders


def _section_blocks(heading: str) -> tuple[str, str]:
  """The python and bash code blocks of the README section under `heading`."""
  text = open(os.path.join(REPO, "README.md")).read()
  section = re.split(r"\n#{2,4} ", text.split(heading, 1)[1], maxsplit=1)[0]
  python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  bash = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
  return python, bash


def test_readme_meta_objective_registers_and_runs_from_the_command_line(tmp_path):
  python, bash = _section_blocks("### Add a meta-objective")
  (tmp_path / "my_objectives.py").write_text(python)
  namespace = {}
  exec(compile(python, "my_objectives.py", "exec"), namespace)  # registers it in this process too
  name = re.search(r'register_objective\("(\w+)"\)', python).group(1)
  try:
    # its gradient on a quadratic loss: one inner step, first order -> the query gradient at theta_1
    loss = lambda theta, x: 0.5 * jnp.mean(jnp.sum((theta - x) ** 2, -1))
    rng = np.random.default_rng(0)
    task = {"support": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
            "query": jnp.asarray(rng.normal(size=(2, 2)), jnp.float32)}
    theta, cfg = jnp.array([1.0, -2.0]), maml.MamlConfig(inner_lr=0.3, inner_steps=5, objective=name)
    grad = jax.grad(lambda t: maml.batched_meta_loss(loss, t, jax.tree.map(lambda x: x[None], task), cfg))(theta)
    theta_1 = theta - 0.3 * (theta - task["support"].mean(0))
    np.testing.assert_allclose(grad, theta_1 - task["query"].mean(0), rtol=1e-5)
  finally:
    maml.OBJECTIVES.pop(name, None)

  # the command line, as the README gives it, on a tiny synthetic folder instead of the default experiment
  assert f"--import={os.path.splitext('my_objectives.py')[0]}" in bash and f"objective={name}" in bash
  folders = write_synthetic_folders(tmp_path / "data", n_good=16, n_bad=6, size=32)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), REPO]))
  cmd = [sys.executable, "-m", "launch.main", "--import=my_objectives", "--config=configs/folder.py:quick",
         f"--config.maml.objective={name}", f"--workdir={tmp_path / 'w'}",
         "--config.method=maml_iqr", "--config.refine.folds=2",  # folder.py's default is gaussian_iqr
         f"--config.data.root={folders / 'good'}", f"--config.data.defective_root={folders / 'bad'}",
         "--config.noise.ratio=0.5", "--config.refine.max_iterations=1", "--config.maml.task_size=4",
         "--config.score.pixel_auroc_images=0"]
  p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  assert '"objective": "' + name + '"' in (tmp_path / "w" / "results.json").read_text()
  # and a module that cannot be imported is one line, exit code 2
  bad = subprocess.run(cmd[:3] + ["--import=no_such_module_xyz"] + cmd[4:], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2 and "error: --import=no_such_module_xyz: cannot import it" in bad.stderr
