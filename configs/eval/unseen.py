r"""Eval suite on domains the encoder never saw (seed 000 §5 generalisation).

  python -m mdssl_jax.evaluate --workdir=RUN \
      --config=configs/eval/unseen.py:npz=../shared/data/mnist
  python -m mdssl_jax.evaluate --workdir=RUN \
      --config=configs/eval/unseen.py:tfds=cifar10,seen=false

The argument after ":" (everything after the first ":", which is where
ml_collections splits `file.py:arg`) is a comma-separated list of
`key=value` items:

* `npz=DIR[+DIR...]` (e.g. `npz=../shared/data/mnist+../shared/data/
  notmnist`, one word): directories holding train.npz / test.npz (arrays
  `images` [N, H, W, C] uint8 with C in 1, 3, 4 and `labels` [N]); the
  domain is named after the directory's basename;
* `tfds=NAME[+NAME...]`: TFDS datasets (train split "train", test split
  "test"), named after the dataset;
* `seen=false`: skip the training domains (default: evaluate them too, so
  the table holds both the seen and the unseen mean).

Paths therefore cannot contain "," or "+". Images are brought to the
training config's image size (1-channel images are repeated to RGB) and
normalised with its mean / std. The evaluators are those of
configs/eval/default.py: kNN k = 20, k = 200 and the linear probe.
"""

import os

from mdssl_jax.evaluation import suite_config

_KEYS = ("npz", "tfds", "seen")


def _parse(arg):
  """{"npz": [dirs], "tfds": [names], "seen": bool} from the argument."""
  out = {"npz": [], "tfds": [], "seen": True}
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if key not in _KEYS or not sep or not value:
      raise ValueError(
          f"configs/eval/unseen.py: bad argument item {item!r}; use "
          "npz=DIR+DIR, tfds=NAME+NAME and/or seen=false, comma-separated.")
    if key == "seen":
      if value.lower() not in ("true", "false"):
        raise ValueError(f"seen={value!r}: use seen=true or seen=false.")
      out["seen"] = value.lower() == "true"
    else:
      out[key] += [v for v in value.split("+") if v]
  if not out["npz"] and not out["tfds"]:
    raise ValueError(
        "configs/eval/unseen.py needs domains, e.g. configs/eval/unseen.py:"
        "npz=../shared/data/mnist+../shared/data/notmnist or :tfds=cifar10.")
  return out


def get_config(arg=None):
  """The unseen-domain suite for the domains listed in `arg`."""
  parsed = _parse(arg)
  suite = suite_config.base_suite("unseen")
  suite.evals.knn20 = suite_config.evaluator("knn", k=20)
  suite.evals.knn200 = suite_config.evaluator("knn", k=200)
  suite.evals.probe = suite_config.evaluator("linear_probe")
  suite.training_domains = parsed["seen"]
  domains = [dict(name=os.path.basename(os.path.normpath(path)),
                  source="npz", path=path) for path in parsed["npz"]]
  domains += [dict(name=name, source="tfds", tfds_name=name)
              for name in parsed["tfds"]]
  suite.unseen_domains = domains
  return suite
