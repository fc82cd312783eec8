"""Workdir integrity: one writer, config compatibility, logs, clear errors.

One real 4-step run (`base`, checkpoints at steps 2 and 4) is copied for
every test that needs a trained workdir; refused resumes stop before any
compilation, and the runs that train reuse `base`'s compiled programs
through the persistent compilation cache.
"""

import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import types

from absl import logging as absl_logging
import pytest

from mdssl_jax import checkpoint as ckpt_lib
from mdssl_jax import config_lib
from mdssl_jax import presets
from mdssl_jax import progress
from mdssl_jax import train
from mdssl_jax import workdir as workdir_lib
from mdssl_jax.data import sources

STEPS = 4


def tiny_config(method="mdssl", steps=STEPS):
  c = config_lib.get_default_config(method)
  presets.tiny_test_config(c, steps=steps)
  c.checkpoint.every_steps = 2
  c.mesh_shape = 1
  return c


def snapshot(path) -> dict[str, bytes]:
  """{relative path: bytes} of every file under `path`."""
  out = {}
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      with open(full, "rb") as f:
        out[os.path.relpath(full, path)] = f.read()
  return out


def steps_of(workdir) -> list[int]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line)["step"] for line in f]


class _Records(logging.Handler):
  """Collects log records (module fixtures cannot use caplog)."""

  def __init__(self):
    super().__init__(logging.WARNING)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """A finished 4-step run."""
  workdir = str(tmp_path_factory.mktemp("base") / "run")
  train.train_and_evaluate(tiny_config(), workdir)
  return workdir


def copy_of(base, tmp_path) -> str:
  workdir = str(tmp_path / "copy")
  shutil.copytree(base, workdir)
  return workdir


def test_a_run_leaves_its_config_and_no_lock(base):
  assert not os.path.exists(os.path.join(base, workdir_lib.LOCK_FILE))
  assert not os.path.exists(os.path.join(base, workdir_lib.HISTORY_FILE))
  with open(os.path.join(base, "config.json")) as f:
    assert json.load(f)["total_steps"] == STEPS
  assert steps_of(base) == [1, 2, 3, 4]


# ---- One writer per workdir --------------------------------------------------


_HOLDER = textwrap.dedent("""
    import os, sys
    from mdssl_jax import workdir
    with workdir.Lock(sys.argv[1]):
      print("locked", flush=True)
      sys.stdin.readline()
      with open(os.path.join(sys.argv[1], "holder_done"), "w") as f:
        f.write("ok")
""")


def test_second_process_is_refused_and_the_first_is_unharmed(base,
                                                             tmp_path):
  workdir = copy_of(base, tmp_path)
  before = snapshot(workdir)
  holder = subprocess.Popen([sys.executable, "-c", _HOLDER, workdir],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    lock = os.path.join(workdir, workdir_lib.LOCK_FILE)
    with open(lock) as f:
      held = f.read()
    start = time.time()
    with pytest.raises(workdir_lib.WorkdirError) as e:
      train.train_and_evaluate(tiny_config(), workdir)
    assert time.time() - start < 10
    message = str(e.value)
    for part in (f"pid {holder.pid}", f"host {socket.gethostname()}",
                 "since 20", "--workdir", "stop that run"):
      assert part in message, message
    with open(lock) as f:
      assert f.read() == held  # The holder's lock is untouched.
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.wait(timeout=60) == 0
  finally:
    holder.kill()
    holder.wait()
  assert not os.path.exists(lock)
  after = snapshot(workdir)
  assert after.pop("holder_done") == b"ok"
  assert after == before  # The refused run wrote nothing.


def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
  lock = tmp_path / workdir_lib.LOCK_FILE
  dead = _dead_pid()
  lock.write_text(json.dumps({"host": "otherhost", "pid": dead,
                              "since": "2026-01-02T03:04:05"}))
  with caplog.at_level(logging.WARNING):
    with workdir_lib.Lock(str(tmp_path)):
      mine = json.loads(lock.read_text())
      assert mine["pid"] == os.getpid()
      assert mine["host"] == socket.gethostname()
  assert any(f"host otherhost, pid {dead}, since 2026-01-02T03:04:05" in m
             for m in caplog.messages), caplog.messages
  assert not lock.exists()
  lock.write_text("garbage from a kill mid-write")
  with caplog.at_level(logging.WARNING):
    with workdir_lib.Lock(str(tmp_path)):
      pass
  assert "pid ?" in caplog.messages[-1]


def test_lock_released_and_created_dirs_removed_on_startup_failure(
    tmp_path, monkeypatch):
  workdir = str(tmp_path / "runs" / "name" / "stamp")

  def interrupt(*_):
    assert os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))
    raise KeyboardInterrupt

  monkeypatch.setattr(sources, "load_domains", interrupt)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(tiny_config(), workdir)
  assert not os.path.exists(tmp_path / "runs")  # Nothing empty left.
  existing = tmp_path / "existing"
  existing.mkdir()
  monkeypatch.setattr(sources, "load_domains", lambda *_: 1 / 0)
  with pytest.raises(ZeroDivisionError):
    train.train_and_evaluate(tiny_config(), str(existing))
  assert existing.is_dir()  # Not ours to delete, but no lock left.
  assert not (existing / workdir_lib.LOCK_FILE).exists()


# ---- Config compatibility on resume ------------------------------------------


def _changed(what):
  if what == "method":
    return tiny_config("simclr"), "method: \"mdssl\" -> \"simclr\""
  c = tiny_config()
  if what == "model":
    c.model.width_multiplier = 0.125
    return c, "model.width_multiplier: 0.0625 -> 0.125"
  if what == "seed":
    c.seed = 1
    return c, "seed: 0 -> 1"
  if what == "batch":
    c.data.per_domain_batch = 4
    return c, "data.per_domain_batch: 8 -> 4"
  c.optim.base_lr = 0.01
  return c, "optim.base_lr: 0.3 -> 0.01"


@pytest.mark.parametrize("what", ["method", "model", "seed", "batch",
                                  "optim"])
def test_changed_config_is_refused_and_the_workdir_untouched(base, tmp_path,
                                                             what):
  workdir = copy_of(base, tmp_path)
  before = snapshot(workdir)
  config, line = _changed(what)
  with pytest.raises(workdir_lib.WorkdirError) as e:
    train.train_and_evaluate(config, workdir)
  message = str(e.value)
  assert line in message, message
  assert "from step 4" in message and "new --workdir" in message
  assert "--config.checkpoint.allow_changes=" in message
  assert "--config.checkpoint.resume_policy=allow" in message
  assert snapshot(workdir) == before  # config.json byte-identical.


def test_resume_off_with_checkpoints_is_refused(base, tmp_path):
  workdir = copy_of(base, tmp_path)
  before = snapshot(workdir)
  config = tiny_config()
  config.checkpoint.resume = False
  with pytest.raises(workdir_lib.WorkdirError, match="resume=False"):
    train.train_and_evaluate(config, workdir)
  assert snapshot(workdir) == before


def test_named_changes_and_allow_policy_are_accepted(base):
  config = tiny_config()
  config.seed = 3
  config.optim.base_lr = 0.1
  config.eval.max_test_per_domain = 7  # Free: evaluation only.
  with pytest.raises(workdir_lib.WorkdirError) as e:
    workdir_lib.resume_changes(config, base, 4)
  assert "eval." not in str(e.value)
  config.checkpoint.allow_changes = ("seed,optim",)  # As the CLI gives it.
  config_lib.validate(config)
  assert workdir_lib.resume_changes(config, base, 4) == {
      "checkpoint.allow_changes": ([], ["seed,optim"]),
      "eval.max_test_per_domain": (150, 7), "optim.base_lr": (0.3, 0.1),
      "seed": (0, 3)}
  config.checkpoint.allow_changes = ("seed",)
  with pytest.raises(workdir_lib.WorkdirError, match="optim.base_lr"):
    workdir_lib.resume_changes(config, base, 4)
  config.checkpoint.resume_policy = "allow"
  assert "optim.base_lr" in workdir_lib.resume_changes(config, base, 4)
  config.checkpoint.resume_policy = "lenient"
  with pytest.raises(config_lib.ConfigError, match="resume_policy"):
    config_lib.validate(config)


def test_keys_added_to_the_schema_later_compare_at_their_default():
  old = {"model": {"depth": 18}}
  new = {"model": {"depth": 18, "new_key": "x"}}
  assert workdir_lib.config_changes(old, new, new) == {}
  assert workdir_lib.config_changes(old, new, {"model": {"new_key": "y"}}
                                    ) == {"model.new_key": ("<absent>", "x")}


@pytest.fixture(scope="module")
def resumed(base, tmp_path_factory):
  """`base` cut back to its step-2 checkpoint, with damaged log lines, then
  resumed with total_steps 4 -> 6 (an allowed change)."""
  workdir = str(tmp_path_factory.mktemp("resumed") / "run")
  shutil.copytree(base, workdir)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))
  log = os.path.join(workdir, "metrics.jsonl")
  with open(log) as f:
    lines = f.readlines()
  lines.insert(1, "garbage\n")
  with open(log, "w") as f:
    f.writelines(lines + ['{"step": 5, "lo'])  # A kill mid-write.
  records = _Records()
  logging.getLogger().addHandler(records)
  try:
    train.train_and_evaluate(tiny_config(steps=6), workdir)
  finally:
    logging.getLogger().removeHandler(records)
  return types.SimpleNamespace(workdir=workdir, warnings=records.messages)


def test_allowed_change_is_recorded_in_config_history(resumed):
  with open(os.path.join(resumed.workdir, workdir_lib.HISTORY_FILE)) as f:
    rows = [json.loads(line) for line in f]
  assert len(rows) == 1
  assert rows[0]["resumed_from_step"] == 2
  assert rows[0]["changes"] == {"total_steps": [4, 6]}
  assert rows[0]["time"].startswith("20")
  with open(os.path.join(resumed.workdir, "config.json")) as f:
    assert json.load(f)["total_steps"] == 6


def test_resume_keeps_metrics_in_step_order(resumed):
  assert steps_of(resumed.workdir) == [1, 2, 3, 4, 5, 6]


def test_damaged_log_lines_are_skipped_with_a_warning(resumed, tmp_path):
  log = os.path.join(resumed.workdir, "metrics.jsonl")
  assert any(f"line 2 of {log}" in m for m in resumed.warnings), (
      resumed.warnings)
  assert any(f"line 6 of {log}" in m for m in resumed.warnings)
  path = tmp_path / "m.jsonl"
  path.write_text('{"step": 1, "loss": 2.0}\n\x00\x00\n[1]\n'
                  '{"step": 2, "loss": 1.0}\n')
  assert progress.JsonlWriter(str(path)).read() == [
      {"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]


# ---- Clear failures ----------------------------------------------------------


def test_workdir_that_cannot_be_created_or_written(tmp_path, monkeypatch):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(workdir_lib.WorkdirError,
                     match=f"Cannot create the workdir {blocker}/run.*"
                     "writable location"):
    train.train_and_evaluate(tiny_config(), str(blocker / "run"))
  workdir = tmp_path / "ro" / "run"
  real_open = os.open

  def read_only(path, *args, **kwargs):
    if str(path).startswith(str(workdir)):
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
    return real_open(path, *args, **kwargs)

  monkeypatch.setattr(os, "open", read_only)
  with pytest.raises(workdir_lib.WorkdirError) as e:
    train.train_and_evaluate(tiny_config(), str(workdir))
  assert str(e.value) == (
      f"The workdir {workdir} is not writable (Read-only file system). Fix "
      "its permissions, free space there, or pass another --workdir.")
  assert not os.path.exists(tmp_path / "ro")


def test_disk_full_stops_with_a_message_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch):
  workdir = str(tmp_path / "full")
  save = ckpt_lib.Checkpointer.save

  def fill_disk_at_step_4(self, step, state, meta):
    if step == 4:
      raise OSError(errno.ENOSPC, "No space left on device")
    save(self, step, state, meta)

  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", fill_disk_at_step_4)
  with pytest.raises(workdir_lib.WorkdirError) as e:
    train.train_and_evaluate(tiny_config(), workdir)
  assert str(e.value).startswith(f"Disk full while writing the workdir "
                                 f"{workdir}")
  assert "last good checkpoint (step 2) is kept" in str(e.value)
  assert ckpt_lib.finished_step(workdir) == 2
  assert not os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))
  _, state, _ = train.load_for_eval(tiny_config(), workdir)
  assert int(state.step) == 2
  assert workdir_lib.is_disk_full(RuntimeError("x: No space left on device"))
  assert not workdir_lib.is_disk_full(OSError(errno.EACCES, "denied"))


def test_non_finite_message_variants():
  msg = train.nonfinite_message(3, 4, None, "/w/checkpoints", "float32")
  assert "no checkpoint was written yet" in msg
  assert "last good" not in msg and "float32" not in msg
  assert "allow_changes" not in msg
  msg = train.nonfinite_message(3, 4, 2, "/w/checkpoints", "bfloat16")
  assert "last good checkpoint (step 2) in /w/checkpoints is intact" in msg
  assert "--config.compute_dtype=float32" in msg
  assert "--config.checkpoint.allow_changes=optim,compute_dtype" in msg


_RESTORE = textwrap.dedent("""
    import sys
    from mdssl_jax import checkpoint, config_lib, presets, train
    c = config_lib.get_default_config("mdssl")
    presets.tiny_test_config(c, steps=4)
    c.checkpoint.every_steps = 2
    c.mesh_shape = 1
    try:
      train.train_and_evaluate(c, sys.argv[1])
    except checkpoint.CheckpointError as e:
      print("error:", e)
""")


def test_missing_manifest_gives_a_short_error_and_no_event_loop_noise(
    base, tmp_path):
  workdir = copy_of(base, tmp_path)
  os.remove(os.path.join(workdir, "checkpoints", "4", "state",
                         "manifest.ocdbt"))
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  out = subprocess.run([sys.executable, "-c", _RESTORE, workdir], env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "manifest.ocdbt is missing" in out.stdout, out.stdout
  assert "Earlier checkpoints: [2]" in out.stdout
  for noise in ("Event loop is closed", "tensorstore_spec", "Traceback"):
    assert noise not in out.stdout + out.stderr, out.stderr[-3000:]


def test_checkpoint_error_carries_no_tensorstore_dump(base, monkeypatch):
  # The shape of the message TensorStore gave for a missing manifest.
  spec = json.dumps({"driver": "zarr", "kvstore": {"path": "x" * 4000}})
  dump = (f'NOT_FOUND: Error opening "zarr" driver: Metadata at '
          f'"step/.zarray" does not exist [tensorstore_spec[1]={spec!r}] '
          f'[tensorstore_spec={spec!r}]\n[source locations=a.cc:1]')

  def fail(*args, **kwargs):
    raise ValueError(dump)

  config = tiny_config()
  setup = train.build_setup(config, train.run_shape(
      config, sources.load_domains(config.data)))
  with ckpt_lib.Checkpointer(base, async_save=False) as ck:
    monkeypatch.setattr(ck._manager, "restore", fail)
    with pytest.raises(ckpt_lib.CheckpointError) as e:
      ck.restore(train.abstract_state(setup, config))
  message = str(e.value)
  assert ('ValueError: NOT_FOUND: Error opening "zarr" driver: Metadata at '
          '"step/.zarray" does not exist. It is corrupt') in message
  assert "tensorstore_spec" not in message and len(message) < 600


def test_orbax_thread_tracebacks_are_not_repeated(base, caplog):
  # A full disk made each of Orbax's save threads log the error with a
  # traceback before the save re-raised it (measured on a 700 KB tmpfs).
  with ckpt_lib.Checkpointer(base, async_save=False):
    with caplog.at_level(logging.ERROR):
      absl_logging.error("[process=%d] _SignalingThread.run() raised an "
                         "exception: %s", 0, "RESOURCE_EXHAUSTED")
      absl_logging.error("another error")
  assert caplog.messages == ["another error"]
