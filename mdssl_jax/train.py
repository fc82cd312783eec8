"""The shared trainer: one jitted step over a device mesh for every method.

Synopsis:

  from mdssl_jax import train
  state = train.train_and_evaluate(config, workdir)

Sections: state and sharding / the update step / the loop (checkpoints,
logging, non-finite guard) / evaluation.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import time
from typing import Any, Iterator

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
from mdssl_jax import host_memory
from mdssl_jax import methods
from mdssl_jax import optim
from mdssl_jax import progress as progress_lib
from mdssl_jax import sharding as sharding_lib
from mdssl_jax.data import pipeline, sources
from mdssl_jax.evaluation import report
from mdssl_jax.methods import base

PyTree = Any


# ---- State -------------------------------------------------------------------


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


@flax.struct.dataclass
class Setup:
  """Static pieces built from the config (not part of the checkpoint)."""
  method: base.Method = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  lr_fn: Any = flax.struct.field(pytree_node=False)
  ema_fn: Any = flax.struct.field(pytree_node=False)
  total_steps: int = flax.struct.field(pytree_node=False)
  warmup_steps: int = flax.struct.field(pytree_node=False)
  global_batch: int = flax.struct.field(pytree_node=False)


def build_setup(config: ml_collections.ConfigDict,
                domains: list[sources.DomainData]) -> Setup:
  """Resolves durations and builds the method, optimiser and schedules."""
  num_domains = len(config.data.domains)
  global_batch = num_domains * config.data.per_domain_batch
  total_examples = sum(d.num_train for d in domains)
  steps_per_epoch = max(total_examples / global_batch, 1.0)
  total, warmup = optim.resolve_durations(config, steps_per_epoch)
  method = methods.get_method(config.method)(config, total_steps=total)
  tx, lr_fn = optim.make_optimizer(
      config.optim, total_steps=total, warmup_steps=warmup,
      global_batch=global_batch, lr_multiplier=method.lr_multiplier())
  ema_fn = None
  if method.has_target:
    ema_fn = optim.ema_schedule(config.ema.base, total, config.ema.schedule)
  return Setup(method, tx, lr_fn, ema_fn, total, warmup, global_batch)


# Initialisation runs once and is dominated by threefry random bits: on CPU
# its compilation takes ~7x longer with XLA's optimisations than without,
# while the unoptimised program still runs in a fraction of a second.
_FAST_COMPILE = {"xla_backend_optimization_level": 0,
                 "xla_llvm_disable_expensive_passes": True}


def create_state(setup: Setup, config: ml_collections.ConfigDict,
                 sharding: Any = None) -> TrainState:
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


def init_state(setup: Setup, config: ml_collections.ConfigDict) -> TrainState:
  """Initial state (called under jit with replicated out_shardings)."""
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
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=batch_stats,
                    opt_state=setup.tx.init(params),
                    target_params=target_params,
                    target_batch_stats=target_bs,
                    buffers=method.init_buffers(), rng=train_rng)


# ---- The update step ---------------------------------------------------------


def train_step(state: TrainState, batch: dict[str, jax.Array], *,
               setup: Setup) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimiser step (+ EMA and buffer updates) for any method.

  A non-finite loss or gradient leaves the state unchanged and raises the
  `nonfinite` flag; the host loop stops the run on it before any checkpoint
  of a bad state could be written.
  """
  method = setup.method
  rng = jax.random.fold_in(state.rng, state.step)

  def objective(params):
    inputs = base.StepInputs(
        params=params, batch_stats=state.batch_stats,
        target_params=state.target_params,
        target_batch_stats=state.target_batch_stats, buffers=state.buffers,
        batch=batch, rng=rng, step=state.step)
    return method.loss(inputs)

  (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(
      state.params)
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
      target_batch_stats=aux.target_batch_stats, buffers=aux.buffers,
      rng=state.rng)
  keep = lambda new, old: jnp.where(finite, new, old)
  new_state = jax.tree.map(keep, new_state, state)
  new_state = new_state.replace(step=state.step + 1)
  metrics.update(loss=loss, lr=setup.lr_fn(state.step), grad_norm=grad_norm,
                 param_norm=optax.tree.norm(params),
                 update_norm=optax.tree.norm(updates),
                 nonfinite=(~finite).astype(jnp.float32))
  return new_state, metrics


# ---- Helpers for the loop ----------------------------------------------------


def _global_batches(it: Iterator[dict[str, np.ndarray]], batch_sharding
                    ) -> Iterator[dict[str, jax.Array]]:
  for local in it:
    yield jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(batch_sharding, x),
        local)


def _to_host(metrics: dict[str, jax.Array]) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def _save_loss_plot(records: list[dict[str, Any]], path: str) -> None:
  """Loss and learning-rate curves as a PNG (skipped without matplotlib)."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  steps = [r["step"] for r in records]
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
  axes[0].plot(steps, [r["loss"] for r in records])
  axes[0].set(xlabel="step", ylabel="train loss")
  axes[1].plot(steps, [r["lr"] for r in records])
  axes[1].set(xlabel="step", ylabel="learning rate")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


class NonFiniteLossError(FloatingPointError):
  """Raised when training produced a NaN/inf loss or gradient."""


# ---- Evaluation --------------------------------------------------------------


def evaluate_state(config: ml_collections.ConfigDict, setup: Setup,
                   state: TrainState, domains: list[sources.DomainData]
                   ) -> dict[str, Any]:
  """kNN and linear-probe top-1 per domain on frozen backbone features."""
  ev = config.eval
  per_domain = pipeline.make_eval_arrays(
      config, domains, max_train=ev.get("max_train_per_domain"),
      max_test=ev.get("max_test_per_domain"))
  params, batch_stats = state.params, state.batch_stats

  @jax.jit
  def embed(images):
    return setup.method.features(params, batch_stats, images)

  eval_cfg = {k: ev[k] for k in report.EVAL_DEFAULTS if k in ev}
  return report.evaluate_domains(per_domain, embed, eval_cfg)


# ---- The loop ----------------------------------------------------------------


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       max_steps_this_run: int | None = None) -> TrainState:
  """Trains `config.method` on the configured domains, then evaluates.

  Resumes automatically from the newest checkpoint in `workdir`. Writes
  `config.json`, TensorBoard summaries, `metrics.jsonl`, `loss.png`,
  checkpoints and `results.json` (per-domain kNN and linear-probe top-1).

  Args:
    config: a validated run config (see `configs/`).
    workdir: output directory (created if missing).
    max_steps_this_run: stop (with a checkpoint, without evaluating) after
      this many steps, e.g. to fit a scheduler's time slice; the next call
      with the same workdir continues the same run.

  Returns:
    The final train state.
  """
  if config.get("keep_host_memory", True):
    # First, so that JAX's threads (if not yet started) use the main heap.
    logging.info("keep_host_memory: %s", "on" if
                 host_memory.keep_freed_host_memory() else "unavailable")
  config_lib.validate(config)
  os.makedirs(workdir, exist_ok=True)
  jax.config.update("jax_threefry_partitionable", True)
  is_main = jax.process_index() == 0

  mesh = sharding_lib.make_mesh(config.get("mesh_shape", -1))
  sharding_lib.check_batch_divisible(config, mesh)
  domains = sources.load_domains(config.data)
  setup = build_setup(config, domains)
  logging.info("method=%s domains=%s global_batch=%d total_steps=%d "
               "warmup=%d devices=%d", config.method,
               [d.name for d in domains], setup.global_batch,
               setup.total_steps, setup.warmup_steps, mesh.size)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  replicated = sharding_lib.replicated(mesh)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  state = create_state(setup, config, replicated)

  checkpointer = ckpt_lib.Checkpointer(
      workdir, keep=config.checkpoint.keep,
      async_save=config.checkpoint.get("async_save", True))
  # Close the writer and Orbax's background threads on every exit path
  # (an error, an interrupt, or success), after pending saves finish.
  with contextlib.ExitStack() as stack:
    stack.enter_context(checkpointer)
    if checkpointer.latest_step() is not None and config.checkpoint.resume:
      state, meta = checkpointer.restore(ckpt_lib.abstract_like(state))
      logging.info("Resuming from step %d (%s).", int(state.step), meta)
    start_step = int(state.step)

    step_fn = jax.jit(functools.partial(train_step, setup=setup),
                      in_shardings=(replicated, batch_sharding),
                      out_shardings=(replicated, replicated),
                      donate_argnums=0)

    writer = stack.enter_context(contextlib.closing(
        metric_writers.create_default_writer(
            workdir, just_logging=not is_main, asynchronous=True)))
    jsonl = progress_lib.JsonlWriter(os.path.join(workdir, "metrics.jsonl"))
    prog = progress_lib.Progress(total_steps=setup.total_steps,
                                 start_step=start_step,
                                 images_per_step=setup.global_batch)
    log_every = max(1, config.log_every)
    ckpt_every = config.checkpoint.every_steps
    eval_every = config.eval.get("every_steps", 0)

    def save(step: int, state: TrainState) -> None:
      checkpointer.save(step, state, {"step": step, "method": config.method,
                                      "total_steps": setup.total_steps})

    batches = _global_batches(
        pipeline.make_train_iterator(
            config, domains, start_step=start_step,
            process_index=jax.process_index(),
            process_count=jax.process_count()),
        batch_sharding)

    end_step = setup.total_steps
    if max_steps_this_run is not None:
      end_step = min(end_step, start_step + max_steps_this_run)
    acc, acc_n = None, 0
    last_good = start_step
    t_start = time.time()
    step = start_step
    try:
      for step in range(start_step, end_step):
        batch = next(batches)
        state, metrics = step_fn(state, batch)
        acc = metrics if acc is None else jax.tree.map(jnp.add, acc, metrics)
        acc_n += 1
        done = step + 1
        is_log = done % log_every == 0 or done == setup.total_steps
        is_ckpt = ckpt_every and (done % ckpt_every == 0)
        if is_log or is_ckpt or done == end_step:
          scalars = {k: v / acc_n for k, v in _to_host(acc).items()}
          if scalars["nonfinite"] > 0:
            raise NonFiniteLossError(
                f"Non-finite loss or gradient between steps {done - acc_n} and "
                f"{done}. The state from before that step was kept, and the "
                f"last good checkpoint (step {last_good}) in "
                f"{checkpointer.directory} is intact. Lower the learning rate "
                "(--config.optim.base_lr), enable gradient clipping "
                "(--config.optim.grad_clip_norm=1.0) or train in float32.")
          scalars.pop("nonfinite")
          acc, acc_n = None, 0
          writer.write_scalars(done, scalars)
          if is_main:
            jsonl.write({"step": done, **scalars})
            print(prog.line(done, scalars), flush=True)
        if is_ckpt and done < setup.total_steps:
          save(done, state)
          last_good = done
        if eval_every and done % eval_every == 0 and done < setup.total_steps:
          results = evaluate_state(config, setup, state, domains)
          writer.write_scalars(done, {f"eval/{k}": v
                                      for k, v in results["mean"].items()})
    except KeyboardInterrupt:
      logging.warning("Interrupted at step %d; saving a checkpoint.", step)
      checkpointer.wait()
      if int(state.step) > last_good:
        save(int(state.step), state)
      raise
    final_step = int(state.step)
    if checkpointer.latest_step() != final_step:
      save(final_step, state)
    checkpointer.wait()
    writer.flush()
    train_time = time.time() - t_start
    if final_step < setup.total_steps or not config.eval.get("at_end", True):
      return state

    if is_main:
      records = jsonl.read()
      _save_loss_plot(records, os.path.join(workdir, "loss.png"))
    results = evaluate_state(config, setup, state, domains)
    if is_main:
      results["train"] = {
          "method": config.method, "steps": final_step,
          "global_batch": setup.global_batch,
          "steps_this_run": final_step - start_step,
          "seconds_this_run": round(train_time, 2),
          "first_loss": records[0]["loss"] if records else None,
          "final_loss": records[-1]["loss"] if records else None,
      }
      report.write_results(results, os.path.join(workdir, "results.json"))
      print(report.format_table(results), flush=True)
    writer.write_scalars(final_step, {f"eval/{k}": v
                                      for k, v in results["mean"].items()})
    return state
