#!/bin/sh
# strand-entrypoint: starts strand-node in a container and runs its lifecycle hooks.
# Installed in the image as /usr/local/bin/strand-entrypoint (deploy/Dockerfile) and
# used by the StatefulSet in k8s/base/statefulset.yaml. Plain POSIX sh (dash).
#
#   strand-entrypoint node      derive this pod's settings, then exec strand-node
#   strand-entrypoint probe     the init container: measure the data disk once
#   strand-entrypoint prestop   the preStop hook: wait for a healthy cluster, then drain
#
# Every strand-node setting is an environment variable STRAND_<FLAG> (flags > env >
# the --config file). `node` fills in only the per-pod ones that are not set already:
#
#   STRAND_NODE_ID                 the StatefulSet ordinal: pod strand-2 is node 2
#                                  (from POD_NAME, else the hostname)
#   STRAND_ADVERTISED_KAFKA_ADDR   STRAND_ADVERTISED_HOST (default HOST_IP, the node's
#                                  IP from the downward API) and port
#                                  STRAND_NODEPORT_BASE + node id: the pod's NodePort
#   STRAND_CORES                   `affinity` (one pinned shard per CPU the kubelet's
#                                  static CPU manager gave the container) when the
#                                  affinity mask has exactly CPU_REQUEST CPUs; otherwise
#                                  CPU_REQUEST unpinned shards, with a warning. Every
#                                  member must run the same shard count.
#   STRAND_TLS_DIR                 ca.pem, node-<id>.pem and node-<id>.key from
#                                  STRAND_TLS_SOURCE_DIR (the mounted strand-tls
#                                  Secret) are copied to STRAND_TLS_RUN_DIR as ca.pem,
#                                  node.pem and node.key (mode 0600)
#
# STRAND_ENTRYPOINT_DRY_RUN=1 prints the settings and the command instead of running
# it (used by tests/integration/test_k8s_manifests.py).
set -eu

PROG=strand-entrypoint
NODE_BIN=${STRAND_NODE_BIN:-strand-node}
CLI_BIN=${STRAND_CLI_BIN:-strand}

log() {
    printf '%s: %s\n' "$PROG" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

# The node id of a StatefulSet pod: the number after the last '-' of its name.
ordinal_of() {
    _ord=${1##*-}
    case $_ord in
        '' | *[!0-9]*) return 1 ;;
    esac
    # Ordinals have no leading zeros; strip any so that 007 stays 7, not octal.
    printf '%s\n' "$_ord" | sed 's/^0*\([0-9]\)/\1/'
}

# CPUs in this process's affinity mask (what the static CPU manager assigned).
affinity_cpus() {
    # nproc honours OMP_NUM_THREADS / OMP_THREAD_LIMIT: ignore them.
    env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc
}

cmd_node() {
    if [ -z "${STRAND_NODE_ID:-}" ]; then
        pod=${POD_NAME:-$(hostname)}
        STRAND_NODE_ID=$(ordinal_of "$pod") ||
            die "cannot take a node id from the pod name '$pod': expected NAME-ORDINAL (a StatefulSet pod), or set STRAND_NODE_ID"
        export STRAND_NODE_ID
    fi
    id=$STRAND_NODE_ID

    if [ -z "${STRAND_ADVERTISED_KAFKA_ADDR:-}" ]; then
        host=${STRAND_ADVERTISED_HOST:-${HOST_IP:-}}
        base=${STRAND_NODEPORT_BASE:-}
        [ -n "$host" ] ||
            die "no advertised host: set HOST_IP (downward API status.hostIP), STRAND_ADVERTISED_HOST or STRAND_ADVERTISED_KAFKA_ADDR"
        [ -n "$base" ] ||
            die "no advertised port: set STRAND_NODEPORT_BASE (pod i is advertised on base + i) or STRAND_ADVERTISED_KAFKA_ADDR"
        case $base in '' | *[!0-9]*) die "STRAND_NODEPORT_BASE='$base' is not a port number" ;; esac
        case $host in
            *:*) host="[$host]" ;; # an IPv6 address
        esac
        export STRAND_ADVERTISED_KAFKA_ADDR="$host:$((base + id))"
    fi

    if [ -z "${STRAND_CORES:-}" ]; then
        request=${CPU_REQUEST:-}
        case $request in
            '' | *[!0-9]* | 0)
                die "CPU_REQUEST='$request': set it from the container's requests.cpu (downward API resourceFieldRef, divisor 1), or set STRAND_CORES"
                ;;
        esac
        have=$(affinity_cpus)
        if [ "$have" -eq "$request" ]; then
            export STRAND_CORES=affinity
        else
            log "warning: the affinity mask has $have CPUs but the container requests $request: the kubelet's static CPU manager policy is not pinning this pod (Guaranteed QoS with integer CPUs needs --cpu-manager-policy=static). Running $request unpinned shards."
            export STRAND_CORES="$request"
        fi
    fi

    if [ -z "${STRAND_TLS_DIR:-}" ]; then
        src=${STRAND_TLS_SOURCE_DIR:-/etc/strand/tls-source}
        run=${STRAND_TLS_RUN_DIR:-/run/strand/tls}
        if [ -f "$src/node-$id.pem" ] && [ -f "$src/node-$id.key" ] && [ -f "$src/ca.pem" ]; then
            mkdir -p "$run"
            # The key must not be readable by the fsGroup: copy it with mode 0600.
            (
                umask 077
                cp "$src/ca.pem" "$run/ca.pem.tmp" && mv -f "$run/ca.pem.tmp" "$run/ca.pem"
                cp "$src/node-$id.pem" "$run/node.pem.tmp" && mv -f "$run/node.pem.tmp" "$run/node.pem"
                cp "$src/node-$id.key" "$run/node.key.tmp" && mv -f "$run/node.key.tmp" "$run/node.key"
            )
            export STRAND_TLS_DIR="$run"
        elif [ -n "${STRAND_PEERS:-}" ]; then
            die "STRAND_PEERS is set but $src has no ca.pem, node-$id.pem and node-$id.key: create the strand-tls Secret with a certificate for every node (docs/deploy.md, 'TLS certificates')"
        fi
    fi

    if [ "${STRAND_ENTRYPOINT_DRY_RUN:-0}" = 1 ]; then
        env | grep '^STRAND_' | grep -v '^STRAND_ENTRYPOINT_DRY_RUN=' | sort
        echo "exec $NODE_BIN $*"
        exit 0
    fi
    log "node $id: advertised $STRAND_ADVERTISED_KAFKA_ADDR, cores $STRAND_CORES, tls ${STRAND_TLS_DIR:-none}"
    exec "$NODE_BIN" "$@"
}

cmd_probe() {
    data_dir=${STRAND_DATA_DIR:?set STRAND_DATA_DIR to the node data directory}
    profile=${STRAND_DISK_PROFILE:?set STRAND_DISK_PROFILE to the disk profile path}
    mkdir -p "$data_dir" "$(dirname "$profile")"
    # A local volume stays on its disk: measure it once, when the volume is new.
    if [ -s "$profile" ] && [ "${STRAND_REPROBE:-false}" != true ]; then
        log "keeping the disk profile $profile (set STRAND_REPROBE=true to measure again)"
        return 0
    fi
    # STRAND_DISK_PROBE_ARGS: extra arguments, e.g. --quick (3-5 s instead of ~30 s).
    # shellcheck disable=SC2086
    set -- disk probe --dir "$data_dir" --out "$profile" ${STRAND_DISK_PROBE_ARGS:-}
    if [ "${STRAND_ENTRYPOINT_DRY_RUN:-0}" = 1 ]; then
        echo "exec $CLI_BIN $*"
        return 0
    fi
    exec "$CLI_BIN" "$@"
}

# In a container, preStop logging goes to the node's own output (PID 1), so that it
# shows up in `kubectl logs`: the kubelet shows a hook's output only when it fails.
prestop_log() {
    if [ "$(cat /proc/1/comm 2>/dev/null)" = strand-node ] && [ -w /proc/1/fd/2 ]; then
        printf '%s prestop: %s\n' "$PROG" "$*" >/proc/1/fd/2 2>/dev/null || log "prestop: $*"
    else
        log "prestop: $*"
    fi
}

# Sum of strand_under_replicated_partitions in a Prometheus text exposition on stdin
# (NAME[{LABELS}] VALUE [TIMESTAMP] lines); prints nothing when the metric is absent.
sum_urp() {
    awk '/^strand_under_replicated_partitions([ \t{]|$)/ {
             line = $0
             if (line ~ /^[^ \t]*\{/) sub(/^[^}]*\}[ \t]*/, "", line)
             else sub(/^[^ \t]+[ \t]+/, "", line)
             split(line, f, /[ \t]+/)
             s += f[1]; n++
         }
         END { if (n > 0) printf "%d\n", s }'
}

# Every member's admin address, from STRAND_PEERS (ID@HOST:PORT,...): the host of its
# replication address and STRAND_ADMIN_PORT.
peer_admin_hosts() {
    printf '%s\n' "${STRAND_PEERS:-}" | tr ',' '\n' | while IFS= read -r member; do
        member=$(printf '%s' "$member" | tr -d ' ')
        [ -n "$member" ] || continue
        addr=${member#*@}
        printf '%s\n' "${addr%:*}"
    done
}

cmd_prestop() {
    # The admin port: STRAND_ADMIN_PORT, else the port of STRAND_ADMIN_ADDR, else 9644.
    port=${STRAND_ADMIN_ADDR:-}
    port=${STRAND_ADMIN_PORT:-${port##*:}}
    port=${port:-9644}
    self="http://127.0.0.1:$port"
    urp_timeout=${STRAND_PRESTOP_URP_TIMEOUT_S:-120}
    drain_timeout=${STRAND_PRESTOP_DRAIN_TIMEOUT_S:-90}
    poll=${STRAND_PRESTOP_POLL_S:-2}
    curl_opts="-fsS --max-time 3"

    # A node that does not answer at all (crashed, or never started) has nothing to
    # hand over: do not make the kubelet or systemd wait for it.
    if ! curl -sS --max-time 3 -o /dev/null "$self/healthz" 2>/dev/null; then
        prestop_log "the node does not answer at $self: nothing to drain"
        return 0
    fi

    # 1. The rolling-upgrade recipe: the broker stopped before this one must be back
    #    and caught up. Wait (bounded) until every member answers and none leads an
    #    under-replicated partition.
    hosts=$(peer_admin_hosts)
    if [ -n "$hosts" ]; then
        deadline=$(($(date +%s) + urp_timeout))
        while :; do
            total=0
            missing=""
            for h in $hosts; do
                # shellcheck disable=SC2086
                n=$(curl $curl_opts "http://$h:$port/metrics" 2>/dev/null | sum_urp) || n=""
                if [ -z "$n" ]; then
                    missing="$missing $h"
                else
                    total=$((total + n))
                fi
            done
            if [ -z "$missing" ] && [ "$total" -eq 0 ]; then
                prestop_log "every member is up and no partition is under-replicated"
                break
            fi
            if [ "$(date +%s)" -ge "$deadline" ]; then
                prestop_log "still ${total} under-replicated partitions, no metrics from:${missing:- none} after ${urp_timeout}s: draining anyway"
                break
            fi
            sleep "$poll"
        done
    fi

    # 2. Hand every leadership to an in-sync follower before the kubelet's SIGTERM.
    # shellcheck disable=SC2086
    if ! curl $curl_opts -X POST "$self/drain" >/dev/null 2>&1; then
        prestop_log "could not start draining at $self/drain: leaving the handover to SIGTERM"
        return 0
    fi
    prestop_log "draining"
    deadline=$(($(date +%s) + drain_timeout))
    while :; do
        # shellcheck disable=SC2086
        state=$(curl $curl_opts "$self/drain" 2>/dev/null | tr -d ' \n') || state=""
        case $state in
            *'"done":true'*)
                prestop_log "drained: this node leads no partition"
                return 0
                ;;
        esac
        if [ "$(date +%s)" -ge "$deadline" ]; then
            prestop_log "not drained after ${drain_timeout}s (${state:-no answer}): stopping anyway; SIGTERM hands over what is left"
            return 0
        fi
        sleep "$poll"
    done
}

case ${1:-} in
    node)
        shift
        cmd_node "$@"
        ;;
    probe)
        shift
        cmd_probe "$@"
        ;;
    prestop)
        shift
        cmd_prestop "$@"
        ;;
    *)
        echo "usage: $PROG node [strand-node flags...] | probe | prestop" >&2
        exit 2
        ;;
esac
