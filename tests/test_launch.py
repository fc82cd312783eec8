"""The launch scripts' --dry-run commands (bash only: no gcloud, no SLURM)."""

import os
import shlex
import subprocess

import pytest

_LAUNCH = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "launch")
_REPO = os.path.dirname(_LAUNCH)
_ARGS = ["--config=configs/relicv2_r50.py:r50x2",
         "--workdir=gs://bucket/runs/relic",
         "--config.data.data_dir=gs://bucket/my tfds"]


def _run(script, *args, env=None, cwd=None):
  """Runs launch/<script> (or a path) with bash; SLURM_* only from `env`."""
  base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
  return subprocess.run(
      ["bash", os.path.join(_LAUNCH, script), *args], capture_output=True,
      text=True, timeout=60, env={**base, **(env or {})}, cwd=cwd,
      check=False)


def _commands(out):
  """The printed commands as argv lists (comment lines left out)."""
  return [shlex.split(line) for line in out.splitlines()
          if line and not line.startswith("#")]


def _remote(argv):
  """The --command=... of a `gcloud ... ssh` argv, split into words."""
  (command,) = [a for a in argv if a.startswith("--command=")]
  return command[len("--command="):]


# ---- launch/tpu_pod.sh -------------------------------------------------------


def test_tpu_launch_copies_installs_and_runs_on_all_workers():
  r = _run("tpu_pod.sh", "launch", "--dry-run", "--name=pod",
           "--zone=us-central2-b", "--project=proj", "mdssl_jax.main", *_ARGS)
  assert r.returncode == 0, r.stderr
  tar, scp, unpack, install, run = _commands(r.stdout)
  assert tar[:2] == ["tar", "-czf"] and tar[3:5] == ["-C", _REPO]
  gcloud = ["gcloud", "compute", "tpus", "tpu-vm"]
  assert scp[:5] == gcloud + ["scp"] and scp[5] == tar[2]
  for argv in (scp, unpack, install, run):
    assert argv[:4] == gcloud
    assert "--worker=all" in argv and "--zone=us-central2-b" in argv
    assert argv[-1] == "--project=proj"
  assert unpack[4:6] == ["ssh", "pod"]
  assert "tar -xzf ~/mdssl_jax.tar.gz -C ~/mdssl_jax" in _remote(unpack)
  setup = _remote(install)
  assert "--python 3.11 ~/venv" in setup
  assert shlex.split(setup.split(";")[-1])[-3:] == [
      "-e", "~/mdssl_jax", "jax[tpu]"]
  # Every worker runs the same module and flags, plus --distributed.
  cd, python = _remote(run).split(" && ")
  assert cd == "cd ~/mdssl_jax"
  assert shlex.split(python) == [
      "~/venv/bin/python", "-m", "mdssl_jax.main", *_ARGS, "--distributed"]
  assert not r.stderr


def test_tpu_create_and_delete_commands():
  r = _run("tpu_pod.sh", "create", "--dry-run", "--name", "pod",
           "--zone=us-central2-b", "--accelerator-type=v4-32",
           "--version=tpu-ubuntu2204-base", "--spot")
  assert r.returncode == 0, r.stderr
  assert _commands(r.stdout) == [[
      "gcloud", "compute", "tpus", "tpu-vm", "create", "pod",
      "--zone=us-central2-b", "--accelerator-type=v4-32",
      "--version=tpu-ubuntu2204-base", "--spot"]]
  r = _run("tpu_pod.sh", "delete", "--dry-run", "--name=pod", "--zone=z")
  assert _commands(r.stdout) == [[
      "gcloud", "compute", "tpus", "tpu-vm", "delete", "pod", "--zone=z",
      "--quiet"]]


def test_tpu_run_keeps_awkward_arguments_and_detaches():
  args = ["--workdir=gs://b/r", "--config=c.py", "it's", "a$b \"c\""]
  r = _run("tpu_pod.sh", "run", "--dry-run", "--detach", "--name=pod",
           "--zone=z", "mdssl_jax.main", *args, "--distributed")
  assert r.returncode == 0, r.stderr
  (run,) = _commands(r.stdout)
  remote = shlex.split(_remote(run))
  # The worker's shell sees exactly the given words, once --distributed.
  assert remote[:7] == ["cd", "~/mdssl_jax", "&&", "nohup",
                        "~/venv/bin/python", "-m", "mdssl_jax.main"]
  assert remote[7:12] == [*args, "--distributed"]
  assert remote[12:] == [">~/mdssl_jax_run.log", "2>&1", "</dev/null", "&"]


def test_run_tpu_is_tpu_pod_launch():
  r = _run("run_tpu.sh", "--dry-run", "pod", "zone-a", "mdssl_jax.main",
           *_ARGS)
  assert r.returncode == 0, r.stderr
  want = _run("tpu_pod.sh", "launch", "--dry-run", "--name=pod",
              "--zone=zone-a", "mdssl_jax.main", *_ARGS)
  assert r.stdout == want.stdout
  r = _run("run_tpu.sh", "pod", "zone-a")
  assert r.returncode == 2 and "usage:" in r.stderr and not r.stdout


def test_tpu_warns_about_a_workdir_only_one_host_sees():
  r = _run("tpu_pod.sh", "run", "--dry-run", "--name=pod", "--zone=z",
           "mdssl_jax.main", "--config=c.py", "--workdir", "/tmp/run")
  assert r.returncode == 0
  assert "--workdir=/tmp/run is not a gs:// path" in r.stderr


@pytest.mark.parametrize("args, message", [
    ((), "missing COMMAND"),
    (("start", "--name=p", "--zone=z"), "unknown COMMAND 'start'"),
    (("run", "--zone=z", "mdssl_jax.main", "--workdir=gs://b"),
     "--name is required"),
    (("copy", "--name=p"), "--zone is required"),
    (("create", "--name=p", "--zone=z", "--version=v"),
     "create needs --accelerator-type"),
    (("create", "--name=p", "--zone=z", "--accelerator-type=v4-8"),
     "create needs --version"),
    (("run", "--name=p", "--zone=z"), "run needs MODULE"),
    (("launch", "--name=p", "--zone=z", "--config=c.py"),
     "unknown option '--config=c.py'"),
    (("run", "--name=p", "--zone=z", "train.py", "--workdir=gs://b"),
     "MODULE must be mdssl_jax.main"),
    (("run", "--name=p", "--zone=z", "mdssl_jax.evaluate",
      "--workdir=gs://b"), "MODULE must be mdssl_jax.main (the multi-host"),
    (("launch", "--name=p", "--zone=z", "mdssl_jax.main", "--config=c.py"),
     "launch needs --workdir"),
    (("delete", "--name=p", "--zone=z", "mdssl_jax.main"),
     "delete takes no MODULE"),
    (("create", "--name"), "--name needs a value"),
])
def test_tpu_errors_name_the_problem_and_print_usage(args, message):
  # --dry-run right after COMMAND: nothing may run if a check were missing.
  r = _run("tpu_pod.sh", *args[:1], *(("--dry-run",) if args else ()),
           *args[1:])
  assert r.returncode == 2
  assert f"error: {message}" in r.stderr and "usage:" in r.stderr
  assert not r.stdout  # Nothing printed as run, nothing run.


# ---- launch/slurm_gpu.sh -----------------------------------------------------


def _python_argv(line):
  """`cd REPO && python -m ...` -> (REPO, the python argv)."""
  cd, python = line.split(" && ")
  return shlex.split(cd)[1], shlex.split(python)


def test_slurm_batch_script_sruns_one_process_per_node():
  r = _run("slurm_gpu.sh", "--dry-run", "--nodelist=gpu[07-08,10],cpu3",
           "--gpus-per-node=8", "--port=29500", *_ARGS)
  assert r.returncode == 0, r.stderr
  lines = r.stdout.splitlines()
  srun = shlex.split(lines[0])
  script = os.path.join(_REPO, "launch", "slurm_gpu.sh")
  assert srun == [
      "srun", "--nodes=4", "--ntasks=4", "--ntasks-per-node=1",
      "--gpus-per-node=8", "--kill-on-bad-exit=1", script, "--task",
      "--gpus-per-node=8", "--port=29500", "--python=python3",
      "--module=mdssl_jax.main", f"--repo={_REPO}", "--", *_ARGS]
  hosts = ["gpu07", "gpu08", "gpu10", "cpu3"]
  assert lines[1::2] == [f"# process {i} on {h}:" for i, h in
                         enumerate(hosts)]
  for i, line in enumerate(lines[2::2]):
    repo, argv = _python_argv(line)
    assert repo == _REPO
    assert argv == [
        "python3", "-m", "mdssl_jax.main", *_ARGS,
        "--coordinator_address=gpu07:29500", "--num_processes=4",
        f"--process_id={i}", "--local_device_ids=0,1,2,3,4,5,6,7"]


def test_slurm_task_takes_its_id_and_port_from_slurm():
  env = {"SLURM_JOB_ID": "123456", "SLURM_STEP_ID": "0",
         "SLURM_PROCID": "2", "SLURM_NTASKS": "4",
         "SLURM_STEP_NUM_NODES": "4", "SLURM_JOB_NODELIST": "node[09-13]",
         "SLURM_STEP_NODELIST": "node[10-13]", "SLURM_GPUS_ON_NODE": "4"}
  r = _run("slurm_gpu.sh", "--dry-run", "--python=/opt/venv/bin/python",
           *_ARGS, env=env)
  assert r.returncode == 0, r.stderr
  (line,) = r.stdout.splitlines()
  # jax.distributed's own SLURM rule: 61440 + 123456 % 4096 = 62016; the
  # coordinator is the step's first node.
  assert _python_argv(line)[1] == [
      "/opt/venv/bin/python", "-m", "mdssl_jax.main", *_ARGS,
      "--coordinator_address=node10:62016", "--num_processes=4",
      "--process_id=2", "--local_device_ids=0,1,2,3"]


def test_slurm_batch_step_launches_with_the_node_cpus():
  env = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "4294967291",
         "SLURM_JOB_NODELIST": "rack[1-2]-n[01-02]",
         "SLURM_GPUS_ON_NODE": "2", "SLURM_CPUS_ON_NODE": "32"}
  r = _run("slurm_gpu.sh", "--dry-run", *_ARGS, env=env)
  assert r.returncode == 0, r.stderr
  srun = shlex.split(r.stdout.splitlines()[0])
  assert srun[:7] == ["srun", "--nodes=4", "--ntasks=4",
                      "--ntasks-per-node=1", "--gpus-per-node=2",
                      "--kill-on-bad-exit=1", "--cpus-per-task=32"]
  assert "--port=61447" in srun
  hosts = [line.split()[-1].rstrip(":") for line in r.stdout.splitlines()
           if line.startswith("# process")]
  assert hosts == ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]


@pytest.mark.parametrize("args, env, message", [
    ((), {}, "missing ARGS"),
    (("--config=c.py",), {}, "ARGS need --workdir"),
    (("--dry-run", "--gpus-per-node=8", "--port=1", *_ARGS), {},
     "no node list"),
    (("--dry-run", "--nodelist=a1", "--port=1", *_ARGS), {},
     "cannot tell how many GPUs each node has"),
    (("--dry-run", "--nodelist=a1", "--gpus-per-node=8", *_ARGS), {},
     "no job id to derive the coordinator port from"),
    (("--dry-run", "--nodelist=a[1-x]", "--gpus-per-node=8", "--port=1",
      *_ARGS), {}, "cannot read the host range"),
    ((*_ARGS,), {}, "not inside a SLURM job"),
    (("--dry-run", *_ARGS),
     {"SLURM_JOB_ID": "1", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0",
      "SLURM_NTASKS": "8", "SLURM_STEP_NUM_NODES": "1",
      "SLURM_STEP_NODELIST": "a1", "SLURM_GPUS_ON_NODE": "8"},
     "8 tasks on 1 nodes: run one task per node"),
])
def test_slurm_errors_name_the_problem_and_print_usage(args, env, message):
  r = _run("slurm_gpu.sh", *args, env=env)
  assert r.returncode == 2
  assert f"error: {message}" in r.stderr and "usage:" in r.stderr
  assert not r.stdout


def test_slurm_spooled_copy_finds_the_checkout_from_the_submit_dir(tmp_path):
  # sbatch runs a copy of the script from its spool directory.
  spooled = tmp_path / "spool" / "slurm_script"
  spooled.parent.mkdir()
  with open(os.path.join(_LAUNCH, "slurm_gpu.sh")) as f:
    spooled.write_text(f.read())
  env = {"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n1",
         "SLURM_GPUS_ON_NODE": "1", "SLURM_SUBMIT_DIR": _REPO}
  r = _run(str(spooled), "--dry-run", *_ARGS, env=env, cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  srun = shlex.split(r.stdout.splitlines()[0])
  assert os.path.join(_REPO, "launch", "slurm_gpu.sh") in srun
  assert f"--repo={_REPO}" in srun
  env["SLURM_SUBMIT_DIR"] = str(tmp_path)
  r = _run(str(spooled), "--dry-run", *_ARGS, env=env, cwd=tmp_path)
  assert r.returncode == 2
  assert "error: cannot find the mdssl_jax checkout" in r.stderr
