#!/usr/bin/env bash
# Create, set up and run mdssl_jax on a Cloud TPU VM pod slice with gcloud.
#
#   launch/tpu_pod.sh create --name=mdssl --zone=us-central2-b \
#       --accelerator-type=v4-32 --version=tpu-ubuntu2204-base
#   launch/tpu_pod.sh launch --name=mdssl --zone=us-central2-b \
#       mdssl_jax.main --config=configs/relicv2_r50.py \
#       --workdir=gs://BUCKET/runs/relicv2 \
#       --config.data.data_dir=gs://BUCKET/tfds
#   launch/tpu_pod.sh delete --name=mdssl --zone=us-central2-b
#
# Every worker runs the same `python -m mdssl_jax.main ARGS --distributed`;
# jax.distributed.initialize() finds the pod's topology by itself. Add
# --dry-run to print the commands instead of running them.
set -euo pipefail

# Paths on the workers: each worker's shell expands their ~.
# shellcheck disable=SC2088
readonly REMOTE_DIR='~/mdssl_jax' REMOTE_VENV='~/venv' \
  REMOTE_LOG='~/mdssl_jax_run.log'

usage() {
  cat <<'EOF'
usage: launch/tpu_pod.sh COMMAND --name=TPU --zone=ZONE [options]
                         [MODULE ARGS...]

commands:
  create    create the pod slice (needs --accelerator-type and --version)
  copy      copy this checkout (tracked and untracked, not ignored, files)
            to ~/mdssl_jax on every worker
  install   on every worker: a Python 3.11 venv in ~/venv (made by uv) with
            `pip install -e ~/mdssl_jax jax[tpu]`
  run       run `python -m MODULE ARGS --distributed` on all workers at once
  launch    copy, install, then run
  delete    delete the pod slice

options (before MODULE; everything after MODULE goes to the module):
  --name=TPU                the TPU VM name (required)
  --zone=ZONE               its zone (required)
  --project=PROJECT         gcloud project (default: gcloud's configured one)
  --accelerator-type=TYPE   create: slice type, e.g. v4-32, v5p-64, v6e-16
  --version=VERSION         create: TPU software version: tpu-ubuntu2204-base
                            (v4), v2-alpha-tpuv5 (v5p), v2-alpha-tpuv5-lite
                            (v5e), v2-alpha-tpuv6e (v6e)
  --spot                    create: a Spot (preemptible) slice
  --python-version=X.Y      install: the venv's Python (default 3.11; jax
                            needs >= 3.11; the Ubuntu 22.04 images have 3.10)
  --detach                  run: keep running after gcloud returns (nohup;
                            output in ~/mdssl_jax_run.log on each worker)
  --dry-run                 print the commands, run nothing
  -h, --help                this text

MODULE is mdssl_jax.main (the multi-host trainer); ARGS must include
--workdir on storage every worker shares (gs://BUCKET/...).
EOF
}

die() {
  echo "error: $*" >&2
  echo >&2
  usage >&2
  exit 2
}

# Quotes a word for a POSIX shell only where it needs quoting: plain words
# as they are, --flag=VALUE as --flag= and the quoted VALUE, double quotes
# where nothing in them expands, else single quotes.
quote() {
  local word=$1 prefix=""
  if [[ $word =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$word"
    return
  fi
  if [[ $word =~ ^--[A-Za-z0-9_.-]+= ]]; then
    prefix=${BASH_REMATCH[0]}
    word=${word#"$prefix"}
  fi
  if [[ $word != *[\"\$\`\\!]* ]]; then
    printf '%s"%s"' "$prefix" "$word"
  else
    printf "%s'%s'" "$prefix" "${word//\'/\'\\\'\'}"
  fi
}

quote_all() {
  local out="" word
  for word in "$@"; do
    out+="${out:+ }$(quote "$word")"
  done
  printf '%s' "$out"
}

# Prints (--dry-run) or runs one command.
do_cmd() {
  if ((dry_run)); then
    quote_all "$@"
    echo
  else
    "$@"
  fi
}

gcloud_tpu() {
  local cmd=(gcloud compute tpus tpu-vm "$@")
  [[ -z $project ]] || cmd+=(--project="$project")
  do_cmd "${cmd[@]}"
}

on_all_workers() {
  gcloud_tpu ssh "$name" --zone="$zone" --worker=all --command="$1"
}

cmd_create() {
  [[ -n $accel ]] || die "create needs --accelerator-type (e.g. v4-32)."
  [[ -n $version ]] || die "create needs --version (e.g. tpu-ubuntu2204-base \
for v4; see --help)."
  local cmd=(create "$name" --zone="$zone" --accelerator-type="$accel"
    --version="$version")
  ((spot == 0)) || cmd+=(--spot)
  gcloud_tpu "${cmd[@]}"
}

cmd_copy() {
  local tarball="${TMPDIR:-/tmp}/mdssl_jax-$name.tar.gz"
  local files="${TMPDIR:-/tmp}/mdssl_jax-$name.files"
  if ((dry_run)); then
    echo "# $files: the checkout's files (git ls-files --cached --others" \
      "--exclude-standard; deleted ones left out)"
  else
    list_files >"$files"
  fi
  do_cmd tar -czf "$tarball" -C "$repo" -T "$files"
  gcloud_tpu scp "$tarball" "$name:mdssl_jax.tar.gz" --zone="$zone" \
    --worker=all
  on_all_workers "mkdir -p $REMOTE_DIR && tar -xzf ~/mdssl_jax.tar.gz \
-C $REMOTE_DIR && rm ~/mdssl_jax.tar.gz"
}

# The files to copy: git's view of the checkout, or (no git) every file but
# the usual build and run outputs.
list_files() {
  local f
  if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$repo" ls-files --cached --others --exclude-standard |
      while IFS= read -r f; do
        if [[ -e $repo/$f ]]; then printf '%s\n' "$f"; fi
      done
  else
    (cd "$repo" && find . \( -name .git -o -name runs -o -name '.venv*' \
      -o -name __pycache__ -o -name '*.egg-info' \) -prune -o -type f -print)
  fi
}

cmd_install() {
  # shellcheck disable=SC2088
  local uv='~/.local/bin/uv'
  on_all_workers "set -e; python3 -m pip install -q --user -U uv; \
$uv venv -q --allow-existing --python $py_version $REMOTE_VENV; \
$uv pip install -q --python $REMOTE_VENV/bin/python -e $REMOTE_DIR \"jax[tpu]\""
}

# Checks MODULE and its flags; sets run_command, what every worker runs.
prepare_run() {
  ((${#module_args[@]} > 0)) || die "$command needs MODULE (e.g. \
mdssl_jax.main) and its flags after the options."
  local module=${module_args[0]}
  [[ $module == mdssl_jax.main ]] || die "MODULE must be mdssl_jax.main \
(the multi-host trainer), got '$module'; evaluate or analyse a workdir on \
one worker afterwards (gcloud ... ssh --worker=0)."
  local args=("${module_args[@]}") workdir="" has_dist=0 i
  for ((i = 1; i < ${#args[@]}; i++)); do
    case ${args[i]} in
      --workdir=*) workdir=${args[i]#--workdir=} ;;
      --workdir) workdir=${args[i + 1]:-} ;;
      --distributed) has_dist=1 ;;
    esac
  done
  # main's default workdir is a per-host timestamp: the hosts would diverge.
  [[ -n $workdir ]] || die "$command needs --workdir=gs://BUCKET/... in the \
module's flags: every worker must write to the same directory."
  [[ $workdir == gs://* ]] || echo "warning: --workdir=$workdir is not a" \
    "gs:// path; every worker must see the same directory there." >&2
  ((has_dist)) || args+=(--distributed)
  run_command="$REMOTE_VENV/bin/python -m $(quote_all "${args[@]}")"
  if ((detach)); then
    run_command="nohup $run_command >$REMOTE_LOG 2>&1 </dev/null &"
  fi
  run_command="cd $REMOTE_DIR && $run_command"
}

cmd_delete() {
  gcloud_tpu delete "$name" --zone="$zone" --quiet
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name="" zone="" accel="" version="" py_version=3.11
dry_run=0 spot=0 detach=0
project="" module_args=() run_command=""

[[ $# -gt 0 ]] || die "missing COMMAND."
case $1 in
  -h | --help) usage; exit 0 ;;
  create | copy | install | run | launch | delete) command=$1 ;;
  *) die "unknown COMMAND '$1'." ;;
esac
shift
while [[ $# -gt 0 ]]; do
  opt=$1
  case $opt in
    --*=*) key=${opt%%=*} value=${opt#*=} ;;
    --name | --zone | --project | --accelerator-type | --version \
      | --python-version)
      [[ $# -ge 2 && $2 != -* ]] || die "$opt needs a value."
      key=$opt value=$2
      shift ;;
    *) key=$opt value="" ;;
  esac
  case $key in
    --name) name=$value ;;
    --zone) zone=$value ;;
    --project) project=$value ;;
    --accelerator-type) accel=$value ;;
    --version) version=$value ;;
    --python-version) py_version=$value ;;
    --spot) spot=1 ;;
    --detach) detach=1 ;;
    --dry-run) dry_run=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; module_args=("$@"); break ;;
    -*) die "unknown option '$opt' (options go before MODULE, e.g. \
'run --name=N --zone=Z mdssl_jax.main --config=...')." ;;
    *) module_args=("$@"); break ;;
  esac
  shift
done
[[ -n $name ]] || die "--name is required."
[[ -n $zone ]] || die "--zone is required."
if [[ $command != run && $command != launch && ${#module_args[@]} -gt 0 ]]
then
  die "$command takes no MODULE, got '${module_args[*]}'."
fi

case $command in
  create) cmd_create ;;
  copy) cmd_copy ;;
  install) cmd_install ;;
  run) prepare_run; on_all_workers "$run_command" ;;
  launch)
    prepare_run
    cmd_copy
    cmd_install
    on_all_workers "$run_command" ;;
  delete) cmd_delete ;;
esac
