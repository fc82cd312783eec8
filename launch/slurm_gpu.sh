#!/usr/bin/env bash
#SBATCH --job-name=mdssl_jax
#SBATCH --ntasks-per-node=1
# Multi-node GPU training under SLURM: one process per node, all its GPUs.
#
#   sbatch --nodes=4 --gpus-per-node=8 launch/slurm_gpu.sh \
#       --config=configs/relicv2_r50.py --workdir=/shared/runs/relicv2
#   srun --nodes=4 --ntasks-per-node=1 --gpus-per-node=8 \
#       launch/slurm_gpu.sh --config=... --workdir=...      # inside salloc
#
# As a batch script it starts itself once per node with srun; as an srun
# task it runs `python -m mdssl_jax.main ARGS --coordinator_address=
# FIRST_NODE:PORT --num_processes=N --process_id=I --local_device_ids=...`.
# --dry-run prints those commands, also on a machine without SLURM.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch/slurm_gpu.sh [options] [--] ARGS...
       sbatch --nodes=N --gpus-per-node=G launch/slurm_gpu.sh [options] ARGS...

ARGS go to `python -m mdssl_jax.main` and must include --config and a
--workdir on a file system every node shares (NFS, Lustre, GPFS).

options (before ARGS; the first other word and all after it are ARGS):
  --gpus-per-node=G   GPUs each process drives (default $SLURM_GPUS_ON_NODE)
  --port=P            the coordinator's port on the first node (default as
                      jax.distributed's SLURM detection: 61440 + job id
                      mod 4096)
  --python=PATH       interpreter with mdssl_jax installed (default python3)
  --module=M          the module to run (default mdssl_jax.main)
  --repo=DIR          this checkout on the shared file system (default: the
                      script's own checkout, else $SLURM_SUBMIT_DIR)
  --nodelist=LIST     the nodes, e.g. gpu[01-04] (default: an srun task's
                      $SLURM_STEP_NODELIST, else $SLURM_JOB_NODELIST)
  --job-id=ID         the job id for the default port (default $SLURM_JOB_ID)
  --dry-run           print the srun and python commands, run nothing
  -h, --help          this text
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
# where nothing in them expands, else single quotes. (As in tpu_pod.sh:
# sbatch runs a lone copy of this file, which can source nothing beside it.)
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

# Expands a SLURM host list (gpu[01-03,07],cpu1) to one host per line, as
# `scontrol show hostnames` does; that is used where it is installed.
expand_hostlist() {
  if command -v scontrol >/dev/null 2>&1; then
    scontrol show hostnames "$1"
    return
  fi
  local list=$1 item="" depth=0 i c
  for ((i = 0; i < ${#list}; i++)); do
    c=${list:i:1}
    case $c in
      '[') depth=$((depth + 1)) ;;
      ']') depth=$((depth - 1)) ;;
    esac
    if [[ $c == , && $depth -eq 0 ]]; then
      expand_host "$item"
      item=""
    else
      item+=$c
    fi
  done
  [[ -z $item ]] || expand_host "$item"
}

# Expands one host pattern's first [ranges] group, recursively.
expand_host() {
  if [[ ! $1 =~ ^([^[]*)\[([^]]*)\](.*)$ ]]; then
    printf '%s\n' "$1"
    return
  fi
  local prefix=${BASH_REMATCH[1]} ranges=${BASH_REMATCH[2]}
  local rest=${BASH_REMATCH[3]} range lo hi n
  local IFS=,
  for range in $ranges; do
    lo=${range%-*} hi=${range#*-}
    [[ $lo =~ ^[0-9]+$ && $hi =~ ^[0-9]+$ ]] || die "cannot read the host \
range '[$ranges]' in '$1'."
    for ((n = 10#$lo; n <= 10#$hi; n++)); do
      expand_host "$prefix$(printf "%0${#lo}d" "$n")$rest"
    done
  done
}

repo_dir() {
  if [[ -n $repo ]]; then
    printf '%s' "$repo"
    return
  fi
  # sbatch runs a copy of this script from its spool directory.
  local own
  own=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  if [[ -d $own/mdssl_jax ]]; then
    printf '%s' "$own"
  elif [[ -n ${SLURM_SUBMIT_DIR:-} && -d $SLURM_SUBMIT_DIR/mdssl_jax ]]; then
    printf '%s' "$SLURM_SUBMIT_DIR"
  else
    die "cannot find the mdssl_jax checkout: pass --repo=DIR (a directory \
on the shared file system)."
  fi
}

# Sets hosts (array), coordinator and gpus from the flags and SLURM's
# variables ($1: the node list variable to prefer), with a clear error for
# each one missing.
read_job() {
  local preferred=${!1:-}
  nodelist=${nodelist:-${preferred:-${SLURM_JOB_NODELIST:-}}}
  [[ -n $nodelist ]] || die "no node list: run under sbatch/srun, or pass \
--nodelist=LIST (with --dry-run)."
  local expanded host
  expanded=$(expand_hostlist "$nodelist") || exit 2
  hosts=()
  while IFS= read -r host; do
    [[ -z $host ]] || hosts+=("$host")
  done <<<"$expanded"
  ((${#hosts[@]} > 0)) || die "node list '$nodelist' names no host."
  if [[ -z $port ]]; then
    job_id=${job_id:-${SLURM_JOB_ID:-}}
    [[ $job_id =~ ^[0-9]+$ ]] || die "no job id to derive the coordinator \
port from: pass --port=P (or --job-id=ID)."
    port=$((61440 + job_id % 4096))
  fi
  [[ $port =~ ^[0-9]+$ ]] || die "--port must be a number, got '$port'."
  # The process with id 0 hosts the coordinator; srun puts it on the first.
  coordinator=${hosts[0]}:$port
  gpus=${gpus:-${SLURM_GPUS_ON_NODE:-}}
  [[ $gpus =~ ^[1-9][0-9]*$ ]] || die "cannot tell how many GPUs each node \
has: pass --gpus-per-node=G or submit with sbatch --gpus-per-node=G."
}

check_args() {
  local i workdir=""
  for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
      --workdir=*) workdir=${args[i]#--workdir=} ;;
      --workdir) workdir=${args[i + 1]:-} ;;
    esac
  done
  # main's default workdir is a per-host timestamp: the hosts would diverge.
  [[ -n $workdir ]] || die "ARGS need --workdir=DIR on a file system every \
node shares."
}

# Sets task_cmd: the command of the process with id $1.
task_command() {
  local ids="" i
  for ((i = 0; i < gpus; i++)); do
    ids+="${ids:+,}$i"
  done
  task_cmd=("$python" -m "$module" "${args[@]}"
    --coordinator_address="$coordinator" --num_processes="$num_processes"
    --process_id="$1" --local_device_ids="$ids")
}

run_task() {
  # A task's step may span fewer nodes than the job: its own list counts.
  read_job SLURM_STEP_NODELIST
  num_processes=${SLURM_NTASKS:-}
  local process_id=${SLURM_PROCID:-}
  [[ $num_processes =~ ^[0-9]+$ && $process_id =~ ^[0-9]+$ ]] || die "not \
an srun task (SLURM_NTASKS, SLURM_PROCID unset)."
  local nodes=${SLURM_STEP_NUM_NODES:-${SLURM_NNODES:-${#hosts[@]}}}
  ((num_processes == nodes)) || die "$num_processes tasks on $nodes nodes: \
run one task per node (srun --ntasks-per-node=1); each drives all its GPUs."
  task_command "$process_id"
  local dir
  dir=$(repo_dir)
  if ((dry_run)); then
    echo "cd $(quote "$dir") && $(quote_all "${task_cmd[@]}")"
  else
    cd "$dir"
    exec "${task_cmd[@]}"
  fi
}

run_launcher() {
  [[ -n ${SLURM_JOB_ID:-} ]] || ((dry_run)) || die "not inside a SLURM job: \
submit with sbatch --nodes=N --gpus-per-node=G launch/slurm_gpu.sh ARGS, or \
run it with srun inside salloc."
  read_job SLURM_JOB_NODELIST
  num_processes=${#hosts[@]}
  local dir
  dir=$(repo_dir)
  local srun_cmd=(srun --nodes="$num_processes" --ntasks="$num_processes"
    --ntasks-per-node=1 --gpus-per-node="$gpus" --kill-on-bad-exit=1)
  # srun would otherwise bind each task to one CPU: tf.data needs them all.
  [[ -z ${SLURM_CPUS_ON_NODE:-} ]] ||
    srun_cmd+=(--cpus-per-task="$SLURM_CPUS_ON_NODE")
  srun_cmd+=("$dir/launch/slurm_gpu.sh" --task --gpus-per-node="$gpus"
    --port="$port" --python="$python" --module="$module" --repo="$dir"
    -- "${args[@]}")
  if ((dry_run)); then
    quote_all "${srun_cmd[@]}"
    echo
    local i
    for ((i = 0; i < num_processes; i++)); do
      task_command "$i"
      echo "# process $i on ${hosts[i]}:"
      echo "cd $(quote "$dir") && $(quote_all "${task_cmd[@]}")"
    done
  else
    exec "${srun_cmd[@]}"
  fi
}

gpus="" port="" python=python3 module=mdssl_jax.main repo="" nodelist=""
job_id="" dry_run=0 task=0 args=()
while [[ $# -gt 0 ]]; do
  opt=$1
  case $opt in
    --*=*) key=${opt%%=*} value=${opt#*=} ;;
    --gpus-per-node | --port | --python | --module | --repo | --nodelist \
      | --job-id)
      [[ $# -ge 2 && $2 != -* ]] || die "$opt needs a value."
      key=$opt value=$2
      shift ;;
    *) key=$opt value="" ;;
  esac
  case $key in
    --gpus-per-node) gpus=$value ;;
    --port) port=$value ;;
    --python) python=$value ;;
    --module) module=$value ;;
    --repo) repo=$value ;;
    --nodelist) nodelist=$value ;;
    --job-id) job_id=$value ;;
    --dry-run) dry_run=1 ;;
    --task) task=1 ;;  # What the launcher's srun runs on each node.
    -h | --help) usage; exit 0 ;;
    --) shift; args=("$@"); break ;;
    *) args=("$@"); break ;;
  esac
  shift
done
((${#args[@]} > 0)) || die "missing ARGS (--config=... --workdir=...)."
check_args

# srun tasks carry a step id; the batch script and a login shell do not
# (the batch step's id, where set, is SLURM's 0xfffffffb or above).
step=${SLURM_STEP_ID:-}
if ((task)) || [[ $step =~ ^[0-9]+$ && $step -lt 4294967290 ]]; then
  run_task
else
  run_launcher
fi
