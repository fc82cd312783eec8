"""The shared trainer: one jitted step over a device mesh for every method.

Synopsis::

  from mdssl_jax import train
  state = train.train_and_evaluate(config, workdir)

`train_and_evaluate` is these pieces in order (tests and benchmarks call
them directly instead of re-implementing them)::

  domains = sources.load_domains(config.data)
  setup = train.build_setup(config, train.run_shape(config, domains))
  mesh = sharding_lib.mesh_from_config(config)
  placement = train.state_sharding(setup, config, mesh)
  state = train.restore_or_init(setup, config, checkpointer, placement)
  step_fn = train.make_train_step(setup, mesh, placement)
  state = train.train_loop(config, setup, state, step_fn, batches, ...)
  results = train.evaluate_state(config, setup, state, domains, extractor)

Sections: setup and state / the update step / the step loop / evaluation /
the whole run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from typing import Any, Callable, Iterator

from absl import logging
from clu import metric_writers
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mdssl_jax import checkpoint as ckpt_lib
from mdssl_jax import config_lib
from mdssl_jax import evaluate as evaluate_lib
from mdssl_jax import host_memory
from mdssl_jax import methods
from mdssl_jax import online_monitors
from mdssl_jax import optim
from mdssl_jax import progress as progress_lib
from mdssl_jax import pseudo_domains
from mdssl_jax import resources
from mdssl_jax import sharding as sharding_lib
from mdssl_jax import workdir as workdir_lib
from mdssl_jax.data import pipeline, sources
from mdssl_jax.data import shards as shards_lib
from mdssl_jax.evaluation import report
from mdssl_jax.evaluation import results_log
from mdssl_jax.evaluation.features import FeatureExtractor
from mdssl_jax.evaluation.suite import run_suite
from mdssl_jax.methods import base

PyTree = Any
Batch = dict[str, jax.Array]
StepFn = Callable[[Any, Batch], tuple[Any, dict[str, jax.Array]]]


# ---- Setup and state ---------------------------------------------------------


@flax.struct.dataclass
class TrainState:
  """Everything that evolves during training; a pytree of arrays."""
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  target_params: PyTree
  target_batch_stats: PyTree
  buffers: PyTree
  rng: jax.Array


@dataclasses.dataclass(frozen=True)
class Setup:
  """Static pieces built from the config (not part of the checkpoint).

  Attributes:
    method: the SSL method (network, loss, buffers).
    tx: the optimiser.
    lr_fn: step -> learning rate.
    ema_fn: step -> EMA momentum τ, or None for methods without a target.
    shape: global batch, total and warm-up steps of the run.
    monitors: the online monitors (`config.monitors`); None when all are
      off. Their state is `TrainState.buffers[online_monitors.MONITOR_KEY]`.
    pseudo_steps: the clustering steps under pseudo-domains
      (`pseudo_domains.schedule`), else None. The table is
      `TrainState.buffers[pseudo_domains.PSEUDO_KEY]`.
  """
  method: base.Method
  tx: optax.GradientTransformation
  lr_fn: Callable[[Any], jax.Array]
  ema_fn: Callable[[Any], jax.Array] | None
  shape: config_lib.RunShape
  monitors: online_monitors.Monitors | None = None
  pseudo_steps: tuple[int, ...] | None = None


def index_dir(workdir: str) -> str:
  """Where a workdir keeps its domains' subset indices (`data.fractions`)."""
  return os.path.join(workdir, "data_index")


def run_shape(config: ml_collections.ConfigDict,
              domains: list[sources.DomainData]) -> config_lib.RunShape:
  """`config_lib.run_shape` for the training images of `domains`."""
  return config_lib.run_shape(config,
                              sum(d.global_num_train for d in domains))


def load_held(config: ml_collections.ConfigDict,
              workdir: str) -> shards_lib.Held:
  """This process's input shards of every configured domain.

  Each process loads the domains (a streaming one opens only its
  `tfds.even_splits` part) and keeps its `config.data.input_shards` share
  (`data.shards`); one shard is the whole data.
  """
  total = config_lib.input_shards(config)
  held = shards_lib.held_shards(total, jax.process_index(),
                                jax.process_count())
  domains = sources.load_domains(config.data, index_dir(workdir))
  return shards_lib.Held.split(domains, total, held)


def class_counts(domains: list[sources.DomainData]) -> tuple[int, ...]:
  """The classes of each domain: `build_setup`'s num_classes."""
  return tuple(d.num_classes for d in domains)


def build_setup(config: ml_collections.ConfigDict,
                shape: config_lib.RunShape,
                num_classes: tuple[int, ...] | None = None) -> Setup:
  """Builds the method, optimiser and schedules for a run of `shape`.

  Args:
    config: the validated run config.
    shape: from `run_shape`.
    num_classes: classes of each domain (`class_counts`), the online
      probe's label spaces; None leaves the probe out (with a warning), as
      for a setup that only evaluates or restores a monitor-free state.
  """
  total = shape.total_steps
  method = methods.get_method(config.method)(config, total_steps=total)
  tx, lr_fn = optim.make_optimizer(
      config.optim, total_steps=total, warmup_steps=shape.warmup_steps,
      global_batch=shape.global_batch, lr_multiplier=method.lr_multiplier())
  ema_fn = None
  if method.has_target:
    ema_fn = optim.ema_schedule(config.ema.base, total, config.ema.schedule)
  monitors = None
  if num_classes is None and config.monitors.online_probe.enabled:
    logging.warning("build_setup got no num_classes: the online probe is "
                    "left out; pass train.class_counts(domains).")
  if online_monitors.any_enabled(config.monitors, num_classes is not None):
    monitors = online_monitors.Monitors.create(
        config, num_classes, _feature_dim(method, config))
  pseudo_steps = None
  if config_lib.uses_pseudo_domains(config):
    pseudo_steps = tuple(pseudo_domains.schedule(config, total))
  return Setup(method, tx, lr_fn, ema_fn, shape, monitors, pseudo_steps)


def _feature_dim(method: base.Method, config: ml_collections.ConfigDict
                 ) -> int:
  """The width F of the backbone features (shapes only, nothing computed)."""
  size = config.views.large.size
  sample = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  def features(images):
    params, batch_stats = method.init(jax.random.PRNGKey(0), images)
    return method.features(params, batch_stats, images)
  return jax.eval_shape(features, sample).shape[-1]


def init_state(setup: Setup, config: ml_collections.ConfigDict) -> TrainState:
  """Initial state (a pure function of config.seed; traced under jit)."""
  rng = jax.random.PRNGKey(config.seed)
  init_rng, train_rng = jax.random.split(rng)
  size = config.views.large.size
  sample = jnp.zeros((2, size, size, 3), jnp.float32)
  params, batch_stats = setup.method.init(init_rng, sample)
  method = setup.method
  target_params = target_bs = {}
  if method.has_target:
    # ξ starts equal to θ (METHODS.md §1.3).
    target_params = jax.tree.map(jnp.copy, method.target_subset(params))
    target_bs = jax.tree.map(jnp.copy, method.target_subset(batch_stats))
  buffers = method.init_buffers()
  if setup.monitors is not None:
    buffers[online_monitors.MONITOR_KEY] = setup.monitors.init()
  if setup.pseudo_steps is not None:
    buffers[pseudo_domains.PSEUDO_KEY] = pseudo_domains.init_buffers(
        setup.shape.num_train_examples)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=batch_stats,
                    opt_state=setup.tx.init(params),
                    target_params=target_params,
                    target_batch_stats=target_bs,
                    buffers=buffers, rng=train_rng)


# Initialisation runs once and is dominated by threefry random bits: on CPU
# its compilation takes ~7x longer with XLA's optimisations than without,
# while the unoptimised program still runs in a fraction of a second.
_FAST_COMPILE = {"xla_backend_optimization_level": 0,
                 "xla_llvm_disable_expensive_passes": True}


def create_state(setup: Setup, config: ml_collections.ConfigDict,
                 sharding: jax.sharding.Sharding | None = None
                 ) -> TrainState:
  """`init_state` compiled and run (placed with `sharding` if given).

  On CPU it is compiled without most XLA optimisations, which saves tens of
  seconds of start-up per run; the values match the optimised program's
  up to float rounding (~1 ulp).
  """
  kwargs = {} if sharding is None else {"out_shardings": sharding}
  lowered = jax.jit(functools.partial(init_state, setup, config),
                    **kwargs).lower()
  options = _FAST_COMPILE if jax.default_backend() == "cpu" else None
  return lowered.compile(compiler_options=options)()


def abstract_state(setup: Setup, config: ml_collections.ConfigDict,
                   sharding: Any = None) -> TrainState:
  """The state's shapes and dtypes, not computed.

  Args:
    setup: the run's setup.
    config: the run config.
    sharding: one Sharding for every leaf, a TrainState of them
      (`state_sharding`), or None.
  """
  shapes = jax.eval_shape(functools.partial(init_state, setup, config))
  if sharding is None or isinstance(sharding, jax.sharding.Sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=sharding), shapes)
  return jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=sh), shapes, sharding)


def state_sharding(setup: Setup, config: ml_collections.ConfigDict,
                   mesh: jax.sharding.Mesh) -> TrainState:
  """Where each state leaf lives: replicated, or by `config.mesh`'s FSDP
  rules (`sharding.state_shardings`; the EMA target and the optimiser
  moments follow the parameters, whose paths and shapes they share)."""
  return sharding_lib.state_shardings(abstract_state(setup, config), mesh,
                                      config.mesh)


def _mesh_of(sharding: Any) -> jax.sharding.Mesh:
  return jax.tree.leaves(sharding, is_leaf=lambda x: isinstance(
      x, jax.sharding.Sharding))[0].mesh


def restore_or_init(setup: Setup, config: ml_collections.ConfigDict,
                    checkpointer: ckpt_lib.Checkpointer,
                    placement: TrainState) -> TrainState:
  """The newest checkpoint's state (config.checkpoint.resume), else a new one.

  Either way the state is placed by `placement` (`state_sharding`),
  whatever mesh the checkpoint was written from. A checkpoint without
  monitor state (written with every monitor off, or before monitors
  existed) resumes with the monitors enabled now started afresh.

  Raises:
    ckpt_lib.CheckpointError: the newest checkpoint cannot be restored.
  """
  if not (config.checkpoint.resume
          and checkpointer.latest_step() is not None):
    return create_state(setup, config, placement)
  state, meta = restore_state(checkpointer, setup, config, placement)
  logging.info("Resuming from step %d (%s).", int(state.step), meta)
  return state


def restore_state(checkpointer: ckpt_lib.Checkpointer, setup: Setup,
                  config: ml_collections.ConfigDict,
                  sharding: jax.sharding.Sharding, step: int | None = None
                  ) -> tuple[TrainState, dict[str, Any]]:
  """(state placed with `sharding`, metadata) of checkpoint `step`.

  The online monitors' state is not part of what is trained: a checkpoint
  without it (written with every monitor off, or before monitors existed),
  with monitor state the config no longer uses, or with monitors of other
  sizes restores everything else, and the enabled monitors start afresh.

  Args:
    checkpointer: the workdir's checkpointer.
    setup: the run's setup.
    config: the run config.
    sharding: where the restored arrays go: one Sharding, or a TrainState
      of them (`state_sharding`).
    step: checkpoint step; None: the latest.

  Raises:
    ckpt_lib.CheckpointError: the checkpoint cannot be restored.
  """
  abstract = abstract_state(setup, config, sharding)
  replicated = sharding_lib.replicated(_mesh_of(sharding))
  key = online_monitors.MONITOR_KEY
  step = checkpointer.latest_step() if step is None else step
  saved = (None if step is None else
           checkpointer.saved_subtree(step, ("buffers", key), replicated))
  wanted = abstract.buffers.get(key)
  if (saved is None) == (wanted is None) and (
      saved is None or _leaf_specs(saved) == _leaf_specs(wanted)):
    return checkpointer.restore(abstract, step)
  # Restore the monitor state as saved (if any), then drop it.
  buffers = {k: v for k, v in abstract.buffers.items() if k != key}
  if saved is not None:
    buffers[key] = saved
  state, meta = checkpointer.restore(abstract.replace(buffers=buffers), step)
  state = state.replace(buffers={k: v for k, v in state.buffers.items()
                                 if k != key})
  if setup.monitors is None:
    logging.info("The checkpoint's monitor state is not used.")
    return state, meta
  logging.info("The checkpoint has no usable monitor state; the online "
               "monitors start afresh.")
  fresh = jax.device_put(setup.monitors.init(), replicated)
  return state.replace(buffers={**state.buffers, key: fresh}), meta


def _leaf_specs(tree: PyTree) -> list[tuple[tuple[int, ...], str]]:
  """Sorted (shape, dtype) of a tree's leaves (container types ignored)."""
  return sorted((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(tree))


# ---- The update step ---------------------------------------------------------


def train_step(state: TrainState, batch: Batch, *,
               setup: Setup) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimiser step (+ EMA and buffer updates) for any method.

  A non-finite loss or gradient leaves the state unchanged and raises the
  `nonfinite` flag; the host loop stops the run on it before any checkpoint
  of a bad state could be written.
  """
  method = setup.method
  rng = jax.random.fold_in(state.rng, state.step)
  monitors = setup.monitors
  key = online_monitors.MONITOR_KEY
  # The method sees (and returns) its own buffers only; the pseudo-domain
  # table changes between steps only (clustering rounds).
  host_keys = (key, pseudo_domains.PSEUDO_KEY)
  buffers = {k: v for k, v in state.buffers.items() if k not in host_keys}
  carried = {k: v for k, v in state.buffers.items()
             if k == pseudo_domains.PSEUDO_KEY}

  def objective(params):
    inputs = base.StepInputs(
        params=params, batch_stats=state.batch_stats,
        target_params=state.target_params,
        target_batch_stats=state.target_batch_stats, buffers=buffers,
        batch=batch, rng=rng, step=state.step)
    with method.dropout_from(rng):
      if monitors is None:
        return method.loss(inputs)
      return method.loss_with_features(inputs)

  (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(
      state.params)
  if monitors is not None:
    aux, features = aux
    monitor_state, monitor_metrics = monitors.update(
        state.buffers[key], features, batch, state.step)
    carried[key] = monitor_state
  new_buffers = {**aux.buffers, **carried}
  grads = method.transform_grads(grads, state.step)
  updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(aux.metrics)
  target_params = state.target_params
  if method.has_target:
    tau = setup.ema_fn(state.step)
    # ξ ← τ·ξ + (1 − τ)·θ, after the optimiser step.
    target_params = optax.incremental_update(
        method.target_subset(params), state.target_params, 1.0 - tau)
    metrics["tau"] = tau
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  new_state = TrainState(
      step=state.step + 1, params=params, batch_stats=aux.batch_stats,
      opt_state=opt_state, target_params=target_params,
      target_batch_stats=aux.target_batch_stats,
      buffers=new_buffers,
      rng=state.rng)
  keep = lambda new, old: jnp.where(finite, new, old)
  new_state = jax.tree.map(keep, new_state, state)
  new_state = new_state.replace(step=state.step + 1)
  metrics.update(loss=loss, lr=setup.lr_fn(state.step), grad_norm=grad_norm,
                 param_norm=optax.tree.norm(params),
                 update_norm=optax.tree.norm(updates),
                 nonfinite=(~finite).astype(jnp.float32))
  if monitors is not None:
    metrics.update(monitor_metrics)
  return new_state, metrics


def make_train_step(setup: Setup, mesh: jax.sharding.Mesh,
                    placement: TrainState | None = None) -> StepFn:
  """`train_step` jitted over `mesh`: (state, batch) -> (state, metrics).

  The state stays where `placement` (`state_sharding`; None: replicated)
  puts it, metrics are replicated, the batch is split on its leading axis
  over every device, and the input state is donated (do not reuse it).
  """
  replicated = sharding_lib.replicated(mesh)
  placement = replicated if placement is None else placement
  return jax.jit(functools.partial(train_step, setup=setup),
                 in_shardings=(placement, sharding_lib.batch_sharding(mesh)),
                 out_shardings=(placement, replicated), donate_argnums=0)


def global_batches(it: Iterator[dict[str, np.ndarray]],
                   mesh: jax.sharding.Mesh) -> Iterator[Batch]:
  """This process's host batches as global arrays split over `mesh`."""
  sharding = sharding_lib.batch_sharding(mesh)
  for local in it:
    yield jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, x),
        local)


# ---- The step loop -----------------------------------------------------------


class NonFiniteLossError(FloatingPointError):
  """Raised when training produced a NaN/inf loss or gradient."""


def nonfinite_message(first: int, last: int, checkpoint_step: int | None,
                      directory: str, compute_dtype: str) -> str:
  """The NonFiniteLossError text for a blow-up between steps first..last.

  Args:
    first: the last step known to be finite.
    last: the step at which the non-finite mean was seen.
    checkpoint_step: the newest checkpoint on disk; None: none yet.
    directory: where checkpoints go.
    compute_dtype: the run's compute dtype (float32: no dtype advice).
  """
  fixes = ["lower the learning rate (--config.optim.base_lr)",
           "enable gradient clipping (--config.optim.grad_clip_norm=1.0)"]
  if compute_dtype != "float32":
    fixes.append("train in float32 (--config.compute_dtype=float32)")
  text = (f"Non-finite loss or gradient between steps {first} and {last}. "
          "The state from before that step was kept; ")
  if checkpoint_step is None:
    text += (f"no checkpoint was written yet in {directory}, so a rerun "
             "starts afresh. ")
  else:
    text += (f"the last good checkpoint (step {checkpoint_step}) in "
             f"{directory} is intact. ")
  text += "To fix it, " + ", ".join(fixes[:-1]) + " or " + fixes[-1] + "."
  if checkpoint_step is not None:
    keys = "optim" + (",compute_dtype" if compute_dtype != "float32" else "")
    text += (" To resume this workdir with such a change, add "
             f"--config.checkpoint.allow_changes={keys}.")
  return text


def _to_host(metrics: dict[str, jax.Array]) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def save_checkpoint(checkpointer: ckpt_lib.Checkpointer,
                    config: ml_collections.ConfigDict, setup: Setup,
                    step: int, state: TrainState) -> None:
  """Saves `state` (after `step` steps) with the run's metadata."""
  checkpointer.save(step, state, {"step": step, "method": config.method,
                                  "total_steps": setup.shape.total_steps})


def train_loop(config: ml_collections.ConfigDict, setup: Setup,
               state: TrainState, step_fn: StepFn, batches: Iterator[Batch],
               *, end_step: int, checkpointer: ckpt_lib.Checkpointer,
               writer: metric_writers.MetricWriter,
               jsonl: progress_lib.JsonlWriter | None = None,
               evaluate: Callable[[TrainState], dict] | None = None
               ) -> TrainState:
  """Steps `state` up to `end_step` and checkpoints the last state.

  Every `config.log_every` steps (and at the end) the mean metrics since the
  last log go to `writer`, `jsonl` and the console; checkpoints are saved
  every `config.checkpoint.every_steps` steps and at the end; `evaluate`
  runs every `config.eval.every_steps` steps before the last. An interrupt
  saves the last finished step and re-raises.

  Args:
    config: the validated run config.
    setup: the run's setup.
    state: the state to continue from, at step `int(state.step)`.
    step_fn: from `make_train_step`.
    batches: global batches from that step on.
    end_step: stop after this step (≤ setup.shape.total_steps).
    checkpointer: where checkpoints go.
    writer: metric writer (training and periodic-evaluation scalars).
    jsonl: metrics.jsonl writer; None (other processes) also skips the
      console lines.
    evaluate: state -> results with "mean", for periodic evaluation.

  Returns:
    The state after `end_step` steps.

  Raises:
    NonFiniteLossError: a step had a non-finite loss or gradient; the state
      before it was kept and no checkpoint of a bad state was written.
  """
  start_step = int(state.step)
  total = setup.shape.total_steps
  prog = progress_lib.Progress(total_steps=total, start_step=start_step,
                               images_per_step=setup.shape.global_batch)
  ckpt_every = config.checkpoint.every_steps
  eval_every = config.eval.every_steps
  acc, acc_n = None, 0
  last_good = start_step
  step = start_step
  try:
    for step in range(start_step, end_step):
      state, metrics = step_fn(state, next(batches))
      acc = metrics if acc is None else jax.tree.map(jnp.add, acc, metrics)
      acc_n += 1
      done = step + 1
      is_log = done % config.log_every == 0 or done == total
      is_ckpt = ckpt_every and done % ckpt_every == 0
      if is_log or is_ckpt or done == end_step:
        scalars = {k: v / acc_n for k, v in _to_host(acc).items()}
        if scalars.pop("nonfinite") > 0:
          checkpointer.wait()
          raise NonFiniteLossError(nonfinite_message(
              done - acc_n, done, checkpointer.latest_step(),
              checkpointer.directory, config.compute_dtype))
        acc, acc_n = None, 0
        writer.write_scalars(done, scalars)
        if jsonl is not None:
          jsonl.write({"step": done, **scalars})
          print(prog.line(done, scalars), flush=True)
      if is_ckpt and done < total:
        save_checkpoint(checkpointer, config, setup, done, state)
        last_good = done
      if evaluate and eval_every and done % eval_every == 0 and done < total:
        _write_eval_scalars(writer, done, evaluate(state))
  except KeyboardInterrupt:
    logging.warning("Interrupted at step %d; saving a checkpoint.", step)
    checkpointer.wait()
    if int(state.step) > last_good:
      save_checkpoint(checkpointer, config, setup, int(state.step), state)
    raise
  final_step = int(state.step)
  if checkpointer.latest_step() != final_step:
    save_checkpoint(checkpointer, config, setup, final_step, state)
  checkpointer.wait()
  writer.flush()
  return state


# ---- Evaluation --------------------------------------------------------------


def make_extractor(config: ml_collections.ConfigDict, setup: Setup,
                   mesh: jax.sharding.Mesh | None = None) -> FeatureExtractor:
  """The run's feature extractor (compiled once per image shape).

  Args:
    config: the run config (eval.feature_batch_size).
    setup: the run's setup (the method's frozen-encoder features).
    mesh: split each feature batch over this mesh; the evaluated state must
      then live on it. None: the default device.
  """
  sharding = None if mesh is None else sharding_lib.batch_sharding(mesh)
  return FeatureExtractor(setup.method.features,
                          batch_size=config.eval.feature_batch_size,
                          sharding=sharding)


def evaluate_state(config: ml_collections.ConfigDict, setup: Setup,
                   state: TrainState, domains: list[sources.DomainData],
                   extractor: FeatureExtractor | None = None
                   ) -> dict[str, Any]:
  """Runs the `config.evals` suite per domain on frozen backbone features.

  Args:
    config: the run config.
    setup: the run's setup.
    state: the state to evaluate (its params and batch_stats).
    domains: the run's domains.
    extractor: the run's extractor (`make_extractor`), shared by every
      evaluation so that nothing recompiles; None: a new one over the mesh
      the state lives on.

  Returns:
    `suite.run_suite`'s results: {"domains", "mean", "eval_config"}.
  """
  if extractor is None:
    placed = jax.tree.leaves(state.params)[0].sharding
    extractor = make_extractor(config, setup, getattr(placed, "mesh", None))
  procs = jax.process_count()
  if procs > 1:
    _check_multiprocess_evals(config)
  # On several processes each embeds its own rows (its input shards) and
  # the extractor gathers the features; the labels are gathered here.
  per_domain = pipeline.make_eval_arrays(
      config, domains, max_train=-(-config.eval.max_train_per_domain // procs),
      max_test=-(-config.eval.max_test_per_domain // procs))
  if procs > 1:
    for d in per_domain:
      for split in ("train", "test"):
        d[f"{split}_labels"] = sharding_lib.allgather_rows(
            d[f"{split}_labels"])
  return run_suite(config, extractor, state.params, state.batch_stats,
                   per_domain)


def _check_multiprocess_evals(config: ml_collections.ConfigDict) -> None:
  """Evaluators that re-encode images need every image on one host."""
  bad = [name for name, e in config.evals.items()
         if e.type == "finetune" or e.get("augment", "none") != "none"]
  if bad:
    raise ValueError(
        f"evals {bad} re-encode images, which live on one host each under "
        "multi-host training; run them afterwards on one host with "
        "`python -m mdssl_jax.evaluate --workdir=RUN`, or drop them from "
        "config.evals for the training run.")


def _write_eval_scalars(writer: metric_writers.MetricWriter, step: int,
                        results: dict[str, Any]) -> None:
  writer.write_scalars(step, {f"eval/{k}": v
                              for k, v in results["mean"].items()})


def load_for_eval(config: ml_collections.ConfigDict, workdir: str,
                  step: int | None = None
                  ) -> tuple[Setup, TrainState, list[sources.DomainData]]:
  """Restores a checkpoint of `workdir` for evaluation.

  Args:
    config: the config the workdir was trained with (validated).
    workdir: a workdir written by `train_and_evaluate`.
    step: checkpoint step; None: the latest.

  Returns:
    (setup, state replicated over the config's mesh, loaded domains).

  Raises:
    ckpt_lib.CheckpointError: no such checkpoint, or it cannot be restored.
  """
  jax.config.update("jax_threefry_partitionable", True)  # As in training.
  domains = sources.load_domains(config.data, index_dir(workdir))
  setup = build_setup(config, run_shape(config, domains),
                      class_counts(domains))
  mesh = sharding_lib.make_mesh(config.mesh_shape)
  with ckpt_lib.Checkpointer(workdir, async_save=False) as checkpointer:
    state, _ = restore_state(checkpointer, setup, config,
                             sharding_lib.replicated(mesh), step)
  return setup, state, domains


def load_initialisation(config: ml_collections.ConfigDict, workdir: str
                        ) -> tuple[Setup, TrainState, list[sources.DomainData]]:
  """`load_for_eval` for the untrained encoder (config.seed's init)."""
  jax.config.update("jax_threefry_partitionable", True)  # As in training.
  domains = sources.load_domains(config.data, index_dir(workdir))
  setup = build_setup(config, run_shape(config, domains),
                      class_counts(domains))
  mesh = sharding_lib.make_mesh(config.mesh_shape)
  return setup, create_state(setup, config,
                             sharding_lib.replicated(mesh)), domains


def _log_results(config: ml_collections.ConfigDict, workdir: str,
                 results: dict[str, Any], step: int) -> None:
  """Appends an evaluation during training to `<workdir>/eval/results.jsonl`,
  as `python -m mdssl_jax.evaluate --workdir=RUN` logs it (same suite)."""
  results_log.append(workdir, results, step=step,
                     suite_name=evaluate_lib.WORKDIR_SUITE,
                     suite_hash=evaluate_lib.workdir_suite_hash(config))


def _write_results(config: ml_collections.ConfigDict, setup: Setup,
                   results: dict[str, Any], workdir: str,
                   records: list[dict[str, Any]], **summary: Any) -> None:
  """loss.png, then results.json with the run's summary; prints the table."""
  progress_lib.save_loss_plot(records, os.path.join(workdir, "loss.png"))
  losses = [r["loss"] for r in records if "loss" in r]
  results["train"] = {
      "method": config.method, "steps": summary["steps"],
      "global_batch": setup.shape.global_batch,
      "steps_this_run": summary["steps_this_run"],
      "seconds_this_run": round(summary["seconds_this_run"], 2),
      "first_loss": losses[0] if losses else None,
      "final_loss": losses[-1] if losses else None,
      "budget": setup.shape.budget(),
      "resources": resources.summary(workdir),
  }
  report.write_results(results, os.path.join(workdir, "results.json"))
  _log_results(config, workdir, results, summary["steps"])
  print(report.format_table(results), flush=True)


# ---- The whole run -----------------------------------------------------------


def evaluate_initialisation(config: ml_collections.ConfigDict, workdir: str
                            ) -> dict[str, Any]:
  """Evaluates the untrained encoder of `config` (init from config.seed).

  Writes `<workdir>/results.json` (with train.steps = 0) and appends the
  evaluation to `eval/results.jsonl` at step 0; nothing is trained or
  checkpointed. The baseline row of a study: on small domains random
  conv features already score well, so the gain is what matters.

  Returns:
    The suite's results.

  Raises:
    workdir_lib.WorkdirError: the workdir holds checkpoints (a trained
      run) or is locked.
  """
  config_lib.validate(config)
  jax.config.update("jax_threefry_partitionable", True)
  created = workdir_lib.create(workdir)
  try:
    with workdir_lib.Lock(workdir):
      if ckpt_lib.finished_step(workdir) is not None:
        raise workdir_lib.WorkdirError(
            f"{workdir} holds a trained run's checkpoints; evaluate the "
            "initialisation into a new --workdir.")
      workdir_lib.record_config(config, workdir, 0, {})
      setup, state, domains = load_initialisation(config, workdir)
      results = evaluate_state(config, setup, state, domains)
      results["train"] = {"method": config.method, "steps": 0,
                          "global_batch": setup.shape.global_batch,
                          "initialisation": True,
                          "budget": {"images_seen": 0,
                                     "unique_images":
                                         setup.shape.num_train_examples,
                                     "epochs": 0.0, "diversity": None}}
      report.write_results(results, os.path.join(workdir, "results.json"))
      _log_results(config, workdir, results, 0)
      print(report.format_table(results), flush=True)
      return results
  except BaseException:
    if not os.path.exists(os.path.join(workdir, "results.json")):
      workdir_lib.remove_if_unused(workdir, created)
    raise


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       max_steps_this_run: int | None = None) -> TrainState:
  """Trains `config.method` on the configured domains, then evaluates.

  Resumes automatically from the newest checkpoint in `workdir`, if the
  config is compatible with the one saved there (`workdir_lib.FREE_KEYS`,
  config.checkpoint.resume_policy / allow_changes). Holds the workdir's
  lock throughout. Writes `config.json` (and `config_history.jsonl` on an
  accepted change), TensorBoard summaries, `metrics.jsonl`, `loss.png`,
  checkpoints and `results.json` (per-domain results of `config.evals`).

  Args:
    config: a run config (see `configs/`); validated here.
    workdir: output directory (created if missing; removed again when this
      call created it and failed before training wrote anything).
    max_steps_this_run: stop (with a checkpoint, without evaluating) after
      this many steps, e.g. to fit a scheduler's time slice; the next call
      with the same workdir continues the same run.

  Returns:
    The final train state.

  Raises:
    config_lib.ConfigError: the config is invalid.
    workdir_lib.WorkdirError: the workdir cannot be written, is locked by
      another run, holds a run of an incompatible config, or the disk
      filled up (the last good checkpoint is kept).
    NonFiniteLossError: training diverged (see `train_loop`).
    ckpt_lib.CheckpointError: the newest checkpoint cannot be restored.
  """
  if config.keep_host_memory and not host_memory.tried():
    # main.py applies it before JAX starts; here for library callers.
    logging.info("keep_host_memory: %s", "on" if
                 host_memory.keep_freed_host_memory() else "unavailable")
  config_lib.validate(config)
  # Only the main process writes the workdir's own files (and holds its
  # lock); every process writes its part of the checkpoints.
  is_main = jax.process_index() == 0
  created = workdir_lib.create(workdir) if is_main else []
  try:
    with contextlib.ExitStack() as stack:
      if is_main:
        stack.enter_context(workdir_lib.Lock(workdir))
      return _train_and_evaluate(config, workdir, stack, is_main,
                                 max_steps_this_run)
  except Exception as e:
    if workdir_lib.is_disk_full(e):
      raise workdir_lib.disk_full_error(
          workdir, ckpt_lib.finished_step(workdir)) from e
    raise
  finally:
    if is_main:
      workdir_lib.remove_if_unused(workdir, created)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        stack: contextlib.ExitStack, is_main: bool,
                        max_steps_this_run: int | None) -> TrainState:
  """`train_and_evaluate` in a created, locked workdir; closes via `stack`."""
  jax.config.update("jax_threefry_partitionable", True)
  checkpointer = stack.enter_context(ckpt_lib.Checkpointer(
      workdir, keep=config.checkpoint.keep,
      async_save=config.checkpoint.async_save))
  latest = checkpointer.latest_step()
  if latest is not None and not config.checkpoint.resume:
    raise workdir_lib.WorkdirError(
        f"{workdir} holds checkpoints (newest: step {latest}) but "
        "checkpoint.resume=False: a new run there would mix with them. "
        "Pass a new --workdir, or drop checkpoint.resume=False to resume.")
  # Read-only check, before anything in the workdir is written.
  changes = (workdir_lib.resume_changes(config, workdir, latest)
             if is_main and latest is not None else {})

  mesh = sharding_lib.mesh_from_config(config)
  held = load_held(config, workdir)
  domains = held.merged()  # This process's rows of every domain.
  setup = build_setup(config, run_shape(config, domains),
                      class_counts(domains))
  shape = setup.shape
  logging.info("method=%s domains=%s global_batch=%d total_steps=%d "
               "warmup=%d devices=%d processes=%d input_shards=%d",
               config.method, [d.name for d in domains], shape.global_batch,
               shape.total_steps, shape.warmup_steps, mesh.size,
               jax.process_count(), held.total)
  if is_main:
    print("budget: C = {images_seen} images seen, N = {unique_images} "
          "unique, E = {epochs:.4g} epochs, D = N/C = {diversity:.4g}"
          .format(**shape.budget()), flush=True)
  placement = state_sharding(setup, config, mesh)
  if config.mesh.fsdp > 1:
    logging.info("FSDP: %s.", sharding_lib.summary(
        abstract_state(setup, config), placement))
  state = restore_or_init(setup, config, checkpointer, placement)
  start_step = int(state.step)
  jsonl = None
  if is_main:
    workdir_lib.record_config(config, workdir, start_step, changes)
    jsonl = progress_lib.JsonlWriter(os.path.join(workdir, "metrics.jsonl"))
    jsonl.keep_until(start_step)
  # Close the writer and Orbax's background threads on every exit path
  # (an error, an interrupt, or success), after pending saves finish.
  writer = stack.enter_context(contextlib.closing(
      metric_writers.create_default_writer(
          workdir, just_logging=not is_main, asynchronous=True)))
  extractor = make_extractor(config, setup, mesh)
  evaluate = functools.partial(evaluate_state, config, setup,
                               domains=domains, extractor=extractor)

  def evaluate_and_log(state: TrainState) -> dict[str, Any]:
    """A periodic evaluation, also appended to eval/results.jsonl."""
    results = evaluate(state)
    if is_main:
      _log_results(config, workdir, results, int(state.step))
    return results

  rounds = None
  if setup.pseudo_steps is not None:
    rounds = pseudo_domains.Rounds(
        config, setup.method, setup.pseudo_steps, domains, mesh,
        total_steps=shape.total_steps, workdir=workdir if is_main else None)
    rounds.resume(state, jsonl)

  def batches_from(step: int, state: TrainState) -> Iterator[Batch]:
    return global_batches(
        pipeline.make_train_iterator(
            config, domains, start_step=step,
            pseudo_table=None if rounds is None else rounds.table(state),
            held=held),
        mesh)

  end_step = shape.total_steps
  if max_steps_this_run is not None:
    end_step = min(end_step, start_step + max_steps_this_run)
  step_fn = make_train_step(setup, mesh, placement)
  t_start = time.time()
  # Pseudo-domains re-cluster between segments; otherwise one segment.
  for a, b in (pseudo_domains.segments(setup.pseudo_steps or (), start_step,
                                       end_step)
               or [(start_step, end_step)]):
    if rounds is not None:
      state = rounds.maybe_cluster(state, a, writer=writer, jsonl=jsonl)
    state = train_loop(config, setup, state, step_fn, batches_from(a, state),
                       end_step=b, checkpointer=checkpointer, writer=writer,
                       jsonl=jsonl, evaluate=evaluate_and_log)
  train_time = time.time() - t_start
  final_step = int(state.step)
  if is_main:
    resources.record_run(workdir, start_step=start_step, end_step=final_step,
                         seconds=train_time,
                         images_per_step=shape.global_batch,
                         devices=mesh.size)
  if final_step < shape.total_steps or not config.eval.at_end:
    return state

  results = evaluate(state)
  if is_main:
    _write_results(config, setup, results, workdir, jsonl.read(),
                   steps=final_step, steps_this_run=final_step - start_step,
                   seconds_this_run=train_time)
  _write_eval_scalars(writer, final_step, results)
  return state
