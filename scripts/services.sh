#!/usr/bin/env bash
# Installs (when missing) and starts (when not running) the real services that
# Vigil's tests talk to:
#   - ClickHouse, Debian's clickhouse-server package: HTTP 127.0.0.1:8123, native 127.0.0.1:9000
#   - a Kafka-protocol broker, tansu 0.6.0 from crates.io: 127.0.0.1:9092, memory storage
# and installs the programs tests run themselves:
#   - Prometheus, Debian's prometheus package (2.42), remote-writing to the collector
#   - Alertmanager, Debian's prometheus-alertmanager package (0.25), as a receiver
#   - Chromium and ChromeDriver, Debian's chromium and chromium-driver packages,
#     for the console's browser tests
# Idempotent: a service that already answers is left alone.
#
#   scripts/services.sh          install + start, wait until both answer
#   scripts/services.sh stop     stop what this script started
#
# State (data, logs, pid files) lives in $VIGIL_SERVICES_DIR (default /tmp/vigil-services).
set -euo pipefail

STATE_DIR=${VIGIL_SERVICES_DIR:-/tmp/vigil-services}
CLICKHOUSE_HTTP_PORT=8123
CLICKHOUSE_TCP_PORT=9000
KAFKA_PORT=9092
TANSU_VERSION=0.6.0
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
READY_TIMEOUT_S=60

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root (or sudo) to run: $*"
    fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
clickhouse_ready() { [ "$(curl -fsS "http://127.0.0.1:$CLICKHOUSE_HTTP_PORT/ping" 2>/dev/null)" = "Ok." ]; }
kafka_ready() { port_open "$KAFKA_PORT"; }

# wait_for NAME CHECK PIDFILE LOGFILE
wait_for() {
    local name=$1 check=$2 pidfile=$3 logfile=$4 waited=0
    until "$check"; do
        if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            log "$name exited during start-up; last lines of $logfile:"
            tail -n 20 "$logfile" >&2 || true
            die "$name could not start"
        fi
        if [ "$waited" -ge $((READY_TIMEOUT_S * 10)) ]; then
            tail -n 20 "$logfile" >&2 || true
            die "$name did not answer within ${READY_TIMEOUT_S}s (log: $logfile)"
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

install_clickhouse() {
    command -v clickhouse-server >/dev/null && return
    log "installing clickhouse-server from Debian's packages"
    as_root apt-get update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q clickhouse-server clickhouse-client >/dev/null \
        || die "apt-get install clickhouse-server failed"
}

start_clickhouse() {
    if clickhouse_ready; then
        log "ClickHouse already answers on 127.0.0.1:$CLICKHOUSE_HTTP_PORT"
        return
    fi
    install_clickhouse
    local dir=$STATE_DIR/clickhouse
    mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas"
    log "starting ClickHouse (data in $dir)"
    setsid clickhouse-server --config-file=/etc/clickhouse-server/config.xml -- \
        --path="$dir/data/" --tmp_path="$dir/tmp/" \
        --user_files_path="$dir/user_files/" --format_schema_path="$dir/format_schemas/" \
        --http_port=$CLICKHOUSE_HTTP_PORT --tcp_port=$CLICKHOUSE_TCP_PORT \
        --listen_host=127.0.0.1 \
        --logger.log="$dir/server.log" --logger.errorlog="$dir/server.err.log" \
        >"$dir/stdout.log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
    wait_for ClickHouse clickhouse_ready "$dir/pid" "$dir/server.err.log"
}

install_tansu() {
    if [ -x "$CARGO_BIN/tansu" ] && "$CARGO_BIN/tansu" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
        return
    fi
    log "installing tansu $TANSU_VERSION with cargo install (about 11 minutes on 2 cores)"
    cargo install --locked tansu --version "$TANSU_VERSION" --features dynostore \
        || die "cargo install tansu failed"
}

install_prometheus() {
    command -v prometheus >/dev/null && command -v prometheus-alertmanager >/dev/null && return
    log "installing prometheus and prometheus-alertmanager from Debian's packages"
    as_root apt-get update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        prometheus prometheus-alertmanager >/dev/null \
        || die "apt-get install prometheus prometheus-alertmanager failed"
}

install_browser() {
    command -v chromium >/dev/null && command -v chromedriver >/dev/null && return
    log "installing chromium and chromium-driver from Debian's packages"
    as_root apt-get update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        chromium chromium-driver >/dev/null \
        || die "apt-get install chromium chromium-driver failed"
}

start_kafka() {
    if kafka_ready; then
        log "a Kafka-protocol broker already answers on 127.0.0.1:$KAFKA_PORT"
        return
    fi
    install_tansu
    local dir=$STATE_DIR/kafka
    mkdir -p "$dir"
    log "starting tansu (memory storage)"
    setsid "$CARGO_BIN/tansu" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine memory://tansu/ \
        >"$dir/broker.log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
    wait_for Kafka kafka_ready "$dir/pid" "$dir/broker.log"
}

stop() {
    local name
    for name in kafka clickhouse; do
        local pidfile=$STATE_DIR/$name/pid
        [ -f "$pidfile" ] || continue
        local pid
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            log "stopping $name (pid $pid)"
            kill "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        fi
        rm -f "$pidfile"
    done
}

case "${1:-start}" in
start)
    if ! command -v curl >/dev/null; then
        log "installing curl (to ask ClickHouse whether it is up)"
        as_root apt-get update -q >/dev/null
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl >/dev/null \
            || die "apt-get install curl failed"
    fi
    start_clickhouse
    start_kafka
    install_prometheus
    install_browser
    log "ClickHouse: http://127.0.0.1:$CLICKHOUSE_HTTP_PORT (native 127.0.0.1:$CLICKHOUSE_TCP_PORT)"
    log "Kafka:      127.0.0.1:$KAFKA_PORT"
    ;;
stop) stop ;;
*) die "usage: $0 [start|stop]" ;;
esac
