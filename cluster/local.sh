#!/usr/bin/env bash
# A real multi-process Ray cluster on this machine: a head node and one worker node, every port
# on 127.0.0.1, Ray's token authentication on. Jobs go to it as to any cluster:
#
#   cluster/local.sh up
#   eval "$(cluster/local.sh env)"          # RAY_API_SERVER_ADDRESS, RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH
#   hbt submit jobs/smoke.yaml --storage runs/cluster --data-dir ../shared/data --set model.name_or_path=$PWD/runs/models/e5-small --follow
#   cluster/local.sh down
#
# Settings (environment): HBT_CLUSTER_DIR (state, logs, token; default /tmp/hbt-cluster-$UID,
# short because Ray's socket paths must stay under 108 bytes), HBT_RAY_PORT (GCS, 6390),
# HBT_DASHBOARD_PORT (dashboard and job server, 8265), HBT_HEAD_CPUS and HBT_WORKER_CPUS (1
# each), HBT_OBJECT_STORE_BYTES (per node, 128 MiB), HBT_PYTHON (the Python with hbt and Ray;
# default: the repository's .venv, else python3).
# The state dir is made 0700; a state dir or token that is not yours alone is refused (exit 2).
#
# Ports: GCS, GCS+1 (client server), GCS+2 and GCS+3 (the worker's and the head's dashboard
# agent: left to Ray, both would want 52365, and so would any other Ray on the machine, whose
# agent would leave this cluster's job server with "No available agent to submit job").
#
# Each node runs `ray start --block` in a session of its own, so `down` stops exactly this
# cluster's processes: `ray stop` would stop every Ray on the machine.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
dir="${HBT_CLUSTER_DIR:-/tmp/hbt-cluster-$(id -u)}"
gcs_port="${HBT_RAY_PORT:-6390}"
dashboard_port="${HBT_DASHBOARD_PORT:-8265}"
python="${HBT_PYTHON:-$here/../.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"
store="${HBT_OBJECT_STORE_BYTES:-134217728}"

# Every node process binds to 127.0.0.1 (see cluster/ray_start_loopback.py), and jobs run the
# `hbt` next to this Python.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$dir/auth_token"
export PATH="$(dirname "$python"):$PATH"

alive() { [[ -f "$dir/$1.pid" ]] && kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }

# The state dir sits in a temp root that every local user can write: another user could make it
# first, or plant a token there (one they know) or pid files (which `down` would signal). So the
# dir and the token must be this user's and closed to group and others, or nothing is done.
private() {  # private PATH: exit 2 unless PATH (a symlink itself, not its target) is ours, closed to others
    local owner mode
    read -r owner mode < <(stat -c '%u %a' "$1")
    if [[ "$owner" != "$(id -u)" ]] || (( 8#$mode & 8#077 )); then
        echo "local.sh: $1 is owned by uid $owner with mode $mode: it must be yours ($(id -u)) with no group or other access" >&2
        exit 2
    fi
}

checked_state() {  # the state dir (made 0700 if missing, with `make`) and the token in it, if any, checked
    if [[ "${1:-}" == make ]]; then mkdir -p -m 0700 "$dir"; fi
    [[ -e "$dir" || -L "$dir" ]] || return 0
    private "$dir"
    if [[ -e "$dir/auth_token" || -L "$dir/auth_token" ]]; then private "$dir/auth_token"; fi
}

node_count() {
    "$python" - "$gcs_port" <<'EOF' 2>/dev/null || echo 0
import logging, sys
import ray
ray.init(address=f"127.0.0.1:{sys.argv[1]}", logging_level=logging.ERROR, log_to_driver=False)
print(sum(node["Alive"] for node in ray.nodes()))
EOF
}

wait_for() {  # wait_for SECONDS NODE COMMAND...: until COMMAND succeeds; a failed start is undone
    local seconds="$1" node="$2"; shift 2
    for _ in $(seq "$seconds"); do
        "$@" && return 0
        alive "$node" || break
        sleep 1
    done
    echo "local.sh: the $node node did not come up (in ${seconds} s); see $dir/$node.log" >&2
    down > /dev/null
    exit 1
}

two_nodes() { [[ "$(node_count | tail -n 1)" == 2 ]]; }
job_server() { "$python" -m hbt.cli jobs list --address "http://127.0.0.1:$dashboard_port" >/dev/null 2>&1; }

up() {
    checked_state make
    if alive head || alive worker; then
        echo "local.sh: a cluster is already up in $dir (cluster/local.sh down first)" >&2
        exit 2
    fi
    if [[ ! -s "$dir/auth_token" ]]; then
        (umask 077 && "$python" -c 'import secrets; print(secrets.token_hex(32))' > "$dir/auth_token")
    fi
    setsid "$python" -m ray.scripts.scripts start --head --block --port="$gcs_port" \
        --num-cpus="${HBT_HEAD_CPUS:-1}" --object-store-memory="$store" \
        --dashboard-host=127.0.0.1 --dashboard-port="$dashboard_port" \
        --ray-client-server-port="$((gcs_port + 1))" --dashboard-agent-listen-port="$((gcs_port + 3))" \
        --temp-dir="$dir/head" \
        --disable-usage-stats > "$dir/head.log" 2>&1 < /dev/null &
    echo $! > "$dir/head.pid"
    wait_for 60 head job_server
    # Its own temp dir: two nodes sharing one would delete each other's runtime envs.
    setsid "$python" "$here/ray_start_loopback.py" start --block --address="127.0.0.1:$gcs_port" \
        --num-cpus="${HBT_WORKER_CPUS:-1}" --object-store-memory="$store" \
        --dashboard-agent-listen-port="$((gcs_port + 2))" --temp-dir="$dir/worker" \
        --disable-usage-stats > "$dir/worker.log" 2>&1 < /dev/null &
    echo $! > "$dir/worker.pid"
    wait_for 60 worker two_nodes
    echo "cluster up: 2 nodes, job server http://127.0.0.1:$dashboard_port (eval \"\$(cluster/local.sh env)\")"
}

down() {
    checked_state
    local sessions=()
    for node in worker head; do
        [[ -f "$dir/$node.pid" ]] || continue
        sessions+=("$(cat "$dir/$node.pid")")
        alive "$node" && kill -TERM "$(cat "$dir/$node.pid")"
    done
    # `ray start --block` stops its node's processes on SIGTERM; whatever outlives 15 s is killed.
    for _ in $(seq 15); do
        [[ -z "$(session_pids "${sessions[@]}")" ]] && break
        sleep 1
    done
    local left; left="$(session_pids "${sessions[@]}")"
    if [[ -n "$left" ]]; then kill -KILL $left 2>/dev/null || true; fi
    rm -f "$dir/head.pid" "$dir/worker.pid"
    echo "cluster down"
}

session_pids() {  # the processes of the given session ids
    [[ $# -eq 0 ]] && return 0
    ps -eo pid=,sid=,stat= | awk -v ids=" $* " 'index(ids, " " $2 " ") && $3 !~ /^Z/ { print $1 }'
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) "$python" -m ray.scripts.scripts status --address="127.0.0.1:$gcs_port" ;;
    env)
        checked_state
        echo "export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$dashboard_port RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$dir/auth_token"
        ;;
    *) echo "usage: cluster/local.sh up|down|status|env" >&2; exit 2 ;;
esac
