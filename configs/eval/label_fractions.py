r"""Eval suite: linear probe and kNN on 1 / 5 / 10 / 50 / 100 % of the labels.

  python -m mdssl_jax.evaluate --workdir=RUN \
      --config=configs/eval/label_fractions.py

METHODS.md §6.3 (seed 003 Table 5): the same probe trained on a class-
stratified, nested label fraction of each domain's train split (each class
keeps max(1, round(f·n_c)) examples; subsets drawn once per domain and
`subset_seed` and written to the suite's label_subsets_dir, default
RUN/eval/label_subsets, so every encoder is probed on the same images) and
tested on the full test split. The probe is the solo-learn preset with a
fixed epoch count, so smaller fractions get fewer steps (ceil(epochs ·
n_labelled / batch)); its lr scales with the batch actually used (clipped
to n_labelled). The kNN (k = 20) uses the fraction as its neighbour bank.
Evaluators: probe_f1, probe_f5, probe_f10, probe_f50, probe_f100 and
knn_f1 … knn_f100. `:cpu` trains the probes for 30 epochs instead of 100.
"""

from mdssl_jax import config_lib
from mdssl_jax.evaluation import label_fractions
from mdssl_jax.evaluation import protocols
from mdssl_jax.evaluation import suite_config

# Config arguments that select a setup; tests load and validate each.
VARIANTS = ("", "cpu", "subset_seed=1")


def get_config(arg=None):
  """The label-fraction suite (see the module doc)."""
  arg = config_lib.parse_arg(arg, cpu=False, subset_seed=0)
  suite = suite_config.base_suite("label_fractions")
  for fraction in label_fractions.FRACTIONS:
    tag = f"f{round(100 * fraction)}"
    common = dict(label_fraction=fraction, subset_seed=arg.subset_seed)
    suite.evals[f"probe_{tag}"] = protocols.solo_learn(
        **common, **(dict(epochs=30.0) if arg.cpu else {}))
    suite.evals[f"knn_{tag}"] = protocols.knn(20, **common)
  return suite
