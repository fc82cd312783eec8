r"""Eval suite: the seeds' linear-probe protocols and kNN at k = 20 / 200.

  python -m mdssl_jax.evaluate --workdir=RUN \
      --config=configs/eval/linear_protocols.py
  python -m mdssl_jax.evaluate --workdir=/tmp/mdssl_demo \
      --config=configs/eval/linear_protocols.py:relicv2,cpu

The argument picks presets of `mdssl_jax.evaluation.protocols` (comma-
separated bare words): `mdssl` (seed 000 Table 7), `relicv2` (seed 004 D.1,
crop + flip views re-encoded by the frozen encoder), `solo_learn` (seed
003), `msbreg_transfer` (seed 002), `all` (default: mdssl, relicv2,
solo_learn, knn20 and knn200). `cpu` shrinks the protocols so the suite
runs in minutes on the demo workdir on 2 CPU cores: mdssl 3000 steps,
relicv2 10 epochs at batch 256, solo_learn and msbreg_transfer unchanged
(their frozen-feature steps are cheap). Evaluators are named probe_<preset>.
"""

from mdssl_jax import config_lib
from mdssl_jax.evaluation import protocols
from mdssl_jax.evaluation import suite_config

# Config arguments that select a setup; tests load and validate each.
VARIANTS = ("", "cpu", "mdssl", "relicv2", "solo_learn", "msbreg_transfer",
            "relicv2,cpu", "mdssl,solo_learn")
_CPU = {"mdssl": dict(steps=3000),
        "relicv2": dict(epochs=10.0, batch_size=256)}


def get_config(arg=None):
  """The suite of the presets named in `arg` (see the module doc)."""
  arg = config_lib.parse_arg(arg, all=False, cpu=False,
                             **{name: False for name in protocols.PRESETS})
  picked = [name for name in protocols.PRESETS if arg[name]]
  suite = suite_config.base_suite("linear_protocols")
  if arg.all or not picked:
    picked = ["mdssl", "relicv2", "solo_learn"]
    suite.evals.knn20 = protocols.knn(20)
    suite.evals.knn200 = protocols.knn(200)
  for name in picked:
    shrink = _CPU.get(name, {}) if arg.cpu else {}
    suite.evals[f"probe_{name}"] = protocols.PRESETS[name](**shrink)
  return suite
