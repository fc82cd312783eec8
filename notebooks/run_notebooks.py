r"""Executes the notebooks with nbclient and stores their outputs.

  python notebooks/run_notebooks.py                 # all, FAST mode
  python notebooks/run_notebooks.py 03_relicv2_views.ipynb
  python notebooks/run_notebooks.py --full          # FAST = False

Each notebook runs top to bottom in a fresh `python3` kernel started in the
repository root, with its runs in a new temporary directory
(`MDSSL_NB_WORKDIR`), and is saved in place with its outputs.
tests/test_notebooks.py executes them the same way (`execute`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import nbclient
import nbformat

NOTEBOOK_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(NOTEBOOK_DIR)
NOTEBOOKS = ("01_quickstart.ipynb", "02_mdssl_lambdas.ipynb",
             "03_relicv2_views.ipynb", "04_evaluate_checkpoint.ipynb")
_DEVICE_FLAG = "--xla_force_host_platform_device_count"


def kernel_env(work: str, *, fast: bool = True,
               jax_cache: str | None = None) -> dict[str, str]:
  """The environment of a notebook kernel.

  Args:
    work: where the notebook writes its runs (`MDSSL_NB_WORKDIR`).
    fast: FAST mode (`MDSSL_NB_FAST`).
    jax_cache: a persistent JAX compilation cache directory, or None.

  Returns:
    This process's environment without simulated host devices (the
    notebooks run on the real ones), plus the notebook variables.
  """
  env = dict(os.environ)
  flags = [f for f in env.pop("XLA_FLAGS", "").split()
           if not f.startswith(_DEVICE_FLAG)]
  if flags:
    env["XLA_FLAGS"] = " ".join(flags)
  env.update(MDSSL_NB_FAST="1" if fast else "0", MDSSL_NB_WORKDIR=work,
             TF_CPP_MIN_LOG_LEVEL="2")
  if jax_cache:
    env.update(JAX_COMPILATION_CACHE_DIR=jax_cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


def execute(path: str, env: dict[str, str], *, timeout: int = 600
            ) -> nbformat.NotebookNode:
  """Runs a notebook top to bottom in a fresh `python3` kernel.

  Args:
    path: the .ipynb file.
    env: the kernel's environment (`kernel_env`).
    timeout: seconds allowed per cell.

  Returns:
    The executed notebook (the file is not written).

  Raises:
    nbclient.exceptions.CellExecutionError: a cell raised; the message
      holds the traceback.
  """
  notebook = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(
      notebook, timeout=timeout, kernel_name="python3",
      resources={"metadata": {"path": REPO_DIR}})
  client.execute(env=env)
  return notebook


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("notebooks", nargs="*", default=NOTEBOOKS)
  parser.add_argument("--full", action="store_true",
                      help="run with FAST = False")
  args = parser.parse_args(argv)
  for name in args.notebooks:
    path = os.path.join(NOTEBOOK_DIR, os.path.basename(name))
    with tempfile.TemporaryDirectory(prefix="mdssl_nb_") as work:
      start = time.perf_counter()
      notebook = execute(path, kernel_env(work, fast=not args.full))
    nbformat.write(notebook, path)
    print(f"{name}: {time.perf_counter() - start:.0f} s, "
          f"{os.path.getsize(path) / 1e3:.0f} kB", flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
