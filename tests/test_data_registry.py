"""Tests for the data-source registry and the data package's import graph."""

import ast
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mdssl_jax import config_lib
from mdssl_jax.data import sources

_PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "mdssl_jax"

# A complete source in one module: what "adding a source" means.
_TOY_SOURCE = '''
"""Source "toy": `count` random images, labels i % classes."""
import numpy as np
from mdssl_jax.data import class_subsets
from mdssl_jax.data.domain import DomainData

KEYS = {"count": None, "classes": 3}
REQUIRED = ("count",)


def validate(domain):
  if domain["count"] < domain["classes"]:
    return [f"count={domain['count']} is below classes="
            f"{domain['classes']}."]
  return []


def check_exists(domain):
  return ["toy data is gone"] if domain["count"] == 13 else []


def load(domain, data_cfg):
  size, n = data_cfg["image_size"], domain["count"]
  rng = np.random.default_rng(data_cfg["seed"])
  images = rng.integers(0, 256, (n, size, size, 3), np.uint8)
  labels = (np.arange(n) % domain["classes"]).astype(np.int32)
  dom = DomainData(name=domain["name"], train_images=images,
                   train_labels=labels, test_images=images[:4],
                   test_labels=labels[:4], num_classes=domain["classes"])
  return class_subsets.subsample_domain(dom, domain["max_train"],
                                        domain["max_test"], 0)
'''


def _data_cfg(domains, **kw):
  cfg = config_lib.get_default_config().data
  cfg.domains = domains
  cfg.update(kw)
  return cfg


@pytest.fixture
def toy_source(tmp_path, monkeypatch):
  """Registers the toy source: one module plus one registry line."""
  (tmp_path / "mdssl_toy_source.py").write_text(_TOY_SOURCE)
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setitem(sources.SOURCES, "toy", "mdssl_toy_source")
  return "toy"


def test_unknown_source_lists_the_registered_ones():
  assert sources.available() == ["demo", "mix", "npz", "tfds"]
  with pytest.raises(ValueError) as info:
    sources.validate_data_config(_data_cfg([dict(name="a", source="web")]))
  assert "unknown source 'web'" in str(info.value)
  assert str(sources.available()) in str(info.value)
  with pytest.raises(ValueError, match="valid sources are"):
    sources.get("web")


@pytest.mark.parametrize("source", ["demo", "npz", "tfds"])
def test_unknown_key_is_rejected_with_the_sources_allowed_keys(source):
  module = sources.get(source)
  allowed = sorted(set(sources.COMMON_KEYS) | set(module.KEYS))
  domain = {"name": "a", "source": source, "colour": "red"}
  domain.update({k: "x" for k in module.REQUIRED})
  errors = sources.domain_config_errors(domain)
  assert errors == [f"Domain 'a': unknown keys ['colour'] for "
                    f"source={source!r}; allowed keys are {allowed}."]


def test_every_source_declares_the_interface():
  for name in sources.available():
    module = sources.get(name)
    assert isinstance(module.KEYS, dict) and module.REQUIRED
    assert set(module.REQUIRED) <= set(module.KEYS)
    assert not set(module.KEYS) & set(sources.COMMON_KEYS)
    for fn in ("validate", "check_exists", "load"):
      assert callable(getattr(module, fn)), (name, fn)


def test_resolve_domain_fills_declared_defaults():
  domain = sources.resolve_domain(
      dict(name="c", source="tfds", tfds_name="cifar10", split=None))
  assert domain == dict(
      name="c", source="tfds", max_train=None, max_test=None, resize=None,
      class_subset=None, fraction=None, tfds_name="cifar10", split="train",
      eval_split="test", image_key="image", label_key="label",
      in_memory=None, mask_key=None, masks_path=None)
  with pytest.raises(ValueError, match="needs 'path'"):
    sources.resolve_domain(dict(name="n", source="npz"))


def test_errors_are_collected_per_domain():
  errors = sources.data_config_errors(_data_cfg([
      dict(name="a", source="demo", demo_name="nope", max_train=0),
      dict(name="b", source="tfds", tfds_name="cifar10", in_memory="no")]))
  assert len(errors) == 3
  assert errors[0].startswith("Domain 'a': 'max_train' must be")
  assert errors[1].startswith("Domain 'a': unknown demo_name 'nope'")
  assert errors[2].startswith("Domain 'b': in_memory must be")


def test_toy_source_is_validated_checked_and_loaded(toy_source):
  domains = [dict(name="t", source=toy_source, count=20, max_train=12),
             dict(name="d", source="demo", demo_name="digits",
                  max_train=30, max_test=10)]
  cfg = _data_cfg(domains, image_size=16)
  sources.validate_data_config(cfg)
  assert sources.missing_sources(cfg) == []
  with pytest.raises(ValueError, match="Domain 't': count=2 is below"):
    sources.validate_data_config(_data_cfg([dict(domains[0], count=2)]))
  with pytest.raises(ValueError, match="unknown keys \\['size'\\].*"
                     "'classes', 'count'"):
    sources.validate_data_config(_data_cfg([dict(domains[0], size=4)]))
  with pytest.raises(ValueError, match="source='toy' needs 'count'"):
    sources.validate_data_config(_data_cfg([dict(name="t", source="toy")]))
  assert sources.missing_sources(_data_cfg([dict(domains[0], count=13)])) == [
      "Domain 't': toy data is gone"]
  toy, digits = sources.load_domains(cfg)
  assert toy.name == "t" and toy.num_classes == 3 and toy.num_train == 12
  assert toy.train_images.shape == (12, 16, 16, 3)
  np.testing.assert_array_equal(np.bincount(toy.train_labels), [4, 4, 4])
  assert digits.train_images.shape == (30, 16, 16, 3)


# ----------------------------------------------------------------------------
# Import graph
# ----------------------------------------------------------------------------


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in _PACKAGE.rglob("*.py"):
    parts = path.relative_to(_PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


def _imports(path: pathlib.Path, modules, *, top_level_only: bool):
  """mdssl_jax modules imported by a file (`from p import m`: p.m)."""
  tree = ast.parse(path.read_text())
  nodes = tree.body if top_level_only else ast.walk(tree)
  found = set()
  for node in nodes:
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name in modules}
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      for alias in node.names:
        full = f"{node.module}.{alias.name}"
        if full in modules:
          found.add(full)
        elif node.module in modules:
          found.add(node.module)
  return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while not component or component[-1] != v:
        component.append(stack.pop())
        on_stack.discard(component[-1])
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_no_import_cycles():
  modules = _modules()
  top = {m: _imports(p, modules, top_level_only=True)
         for m, p in modules.items()}
  assert _cycles(top) == []  # Import-time cycles, whole package.
  # Deferred (function-level) imports count too inside mdssl_jax.data: the
  # old demo_data <-> sources cycle was of that kind.
  every = {m: _imports(p, modules, top_level_only=False)
           for m, p in modules.items()}
  data_cycles = [c for c in _cycles(every)
                 if any(m.startswith("mdssl_jax.data") for m in c)]
  assert data_cycles == []
  # The checker itself finds a cycle.
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [
      ["a", "b", "c"]]


def test_data_modules_stay_small():
  for path in (_PACKAGE / "data").rglob("*.py"):
    assert len(path.read_text().splitlines()) <= 500, path


def test_validation_imports_no_tensorflow():
  code = textwrap.dedent("""
      import sys
      from mdssl_jax import config_lib
      from mdssl_jax.data import sources
      data = config_lib.get_default_config().data
      data.domains = [dict(name="a", source="demo", demo_name="digits"),
                      dict(name="b", source="npz", path="/nowhere"),
                      dict(name="c", source="tfds", tfds_name="cifar10")]
      sources.validate_data_config(data)
      heavy = [m for m in ("tensorflow", "jax") if m in sys.modules]
      assert not heavy, heavy
  """)
  subprocess.run([sys.executable, "-c", code], check=True,
                 cwd=_PACKAGE.parent, env=dict(os.environ))
