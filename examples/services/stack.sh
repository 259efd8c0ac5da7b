#!/usr/bin/env bash
# The reference deployment on one machine: local unprivileged PostgreSQL and RabbitMQ instances
# on loopback with their data in one folder (no system service is touched), and the services.
#
#   examples/services/stack.sh up DIR     install what is missing (Debian packages), start
#                                         PostgreSQL and RabbitMQ, make the deployment key and
#                                         the first admin API key, start `uniface-services serve
#                                         --role all`, wait until /readyz answers, write DIR/env
#                                         (UNIFACE_URL, UNIFACE_ADMIN_KEY, UNIFACE_PG_URL, ...)
#   examples/services/stack.sh up DIR --split   one process per role instead: gateway,
#                                         enrollment, verification, templates, relay and 2
#                                         identification replicas (full copies of a gallery
#                                         of 2 shards: either one answers when the other is
#                                         down)
#   examples/services/stack.sh up DIR --servers-only   only PostgreSQL and RabbitMQ
#   examples/services/stack.sh down DIR   stop everything `up` started in DIR, by pid
#   examples/services/stack.sh status DIR which of them answer
#   examples/services/stack.sh stop-rabbitmq DIR   stop the broker only (a fault drill; `up`
#                                         starts it again)
#   examples/services/stack.sh stop-postgres DIR   stop the database at once, as a crash
#                                         would (`pg_ctl -m immediate`; `up` starts it again)
#   examples/services/stack.sh kill DIR NAME   SIGKILL the service NAME (its pid file
#                                         DIR/pids/NAME.pid, e.g. identification-0, relay-0;
#                                         `up` starts it again)
#
# Ports are chosen free at the first `up` and kept in DIR/env (or set UNIFACE_PG_PORT,
# UNIFACE_AMQP_PORT, UNIFACE_AMQP_DIST_PORT, UNIFACE_HTTP_PORT); `up` again restarts whatever
# is down on the same ports. Each process's pid goes to DIR/pids/<name>.pid (services:
# <role>-<n>.pid); logs to DIR/logs/. Run as root, the servers run as the Debian packages' own
# users (`postgres`, `rabbitmq`), which then own their data folders. The services binary is
# $UNIFACE_SERVICES_BIN, else target/release/uniface-services (built when missing).
set -euo pipefail

usage() {
  sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

[ $# -ge 2 ] || usage
cmd=$1
dir=$2
shift 2
servers_only=0
split=
name=
for a in "$@"; do
  case $a in
    --servers-only) servers_only=1 ;;
    --split) split=1 ;;
    -*) usage ;;
    *) [ "$cmd" = kill ] && [ -z "$name" ] || usage; name=$a ;;
  esac
done
root=$(cd "$(dirname "$0")/../.." && pwd)

pg_bin=/usr/lib/postgresql/15/bin

need_packages() {
  local missing=()
  [ -x "$pg_bin/initdb" ] || missing+=(postgresql)
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (Debian packages)" >&2
    if [ "$(id -u)" -ne 0 ]; then
      echo "stack.sh: ${missing[*]} missing; run as root, or: sudo apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
  fi
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Run "$@" as user $1 when root, else as ourselves.
as_user() {
  local user=$1
  shift
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u "$user" -- "$@"
  else
    "$@"
  fi
}

answers() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

wait_port() { # name port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    answers 127.0.0.1 "$2" && return 0
    sleep 0.1
  done
  echo "stack.sh: $1 did not answer on 127.0.0.1:$2 within $3 s (log: $dir/logs/$1.log)" >&2
  return 1
}

running() { # pid
  # a killed process whose parent never reaps it (an init that does not reap orphans, as in
  # some containers) is a zombie: kill -0 still succeeds on it, but it is not running
  local state
  kill -0 "$1" 2>/dev/null || return 1
  read -r _ _ state _ < "/proc/$1/stat" 2>/dev/null || return 0
  [ "$state" != Z ]
}

alive() { # pidfile
  [ -f "$1" ] && running "$(cat "$1")"
}

up() {
  need_packages
  mkdir -p "$dir"/pids "$dir"/logs
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/env" ]; then
    # shellcheck disable=SC1091
    . "$dir/env"
  fi
  local pg_port=${UNIFACE_PG_PORT:-$(free_port)}
  local amqp_port=${UNIFACE_AMQP_PORT:-$(free_port)}
  local dist_port=${UNIFACE_AMQP_DIST_PORT:-$(free_port)}
  # the servers' passwords, made at the first `up` (readable by this user only)
  local pg_pass mq_pass
  pg_pass=$(secret "$dir/postgres.password")
  mq_pass=$(secret "$dir/rabbitmq.password")

  # PostgreSQL: a cluster of our own on loopback only (password, SCRAM), the socket in its folder
  local pg=$dir/postgres
  if ! alive "$dir/pids/postgres.pid"; then
    if [ ! -f "$pg/data/PG_VERSION" ]; then
      mkdir -p "$pg"
      [ "$(id -u)" -ne 0 ] || chown postgres: "$pg" "$dir/logs"
      (umask 077 && echo "$pg_pass" > "$pg/pw")
      [ "$(id -u)" -ne 0 ] || chown postgres: "$pg/pw"
      as_user postgres "$pg_bin/initdb" -D "$pg/data" -A scram-sha-256 --pwfile="$pg/pw" -U uniface \
        -E UTF8 > "$dir/logs/initdb.log"
      rm -f "$pg/pw"
    fi
    [ "$(id -u)" -ne 0 ] || chown postgres: "$dir/logs"
    as_user postgres "$pg_bin/pg_ctl" -D "$pg/data" -l "$dir/logs/postgres.log" -w -t 60 \
      -o "-p $pg_port -k $pg -c listen_addresses=127.0.0.1" start > /dev/null
    head -1 "$pg/data/postmaster.pid" > "$dir/pids/postgres.pid"
  fi
  wait_port postgres "$pg_port" 60
  PGPASSWORD=$pg_pass "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U uniface uniface 2>/dev/null || true

  # RabbitMQ: a node of our own, listening on loopback only
  local mq=$dir/rabbitmq
  if ! alive "$dir/pids/rabbitmq.pid"; then
    mkdir -p "$mq/mnesia" "$mq/log"
    cat > "$mq/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$amqp_port
default_user = uniface
default_pass = $mq_pass
EOF
    chmod 600 "$mq/rabbitmq.conf"
    echo "[]." > "$mq/enabled_plugins"
    [ "$(id -u)" -ne 0 ] || chown -R rabbitmq: "$mq"
    (
      export HOME=$mq RABBITMQ_MNESIA_BASE=$mq/mnesia RABBITMQ_LOG_BASE=$mq/log \
        RABBITMQ_NODE_PORT=$amqp_port RABBITMQ_DIST_PORT=$dist_port \
        RABBITMQ_NODENAME=uniface-$amqp_port@localhost RABBITMQ_CONFIG_FILE=$mq/rabbitmq \
        RABBITMQ_ENABLED_PLUGINS_FILE=$mq/enabled_plugins \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
      as_user rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server > "$dir/logs/rabbitmq.log" 2>&1 &
      echo $! > "$dir/pids/rabbitmq.pid"
    )
  fi
  wait_port rabbitmq "$amqp_port" 60

  local http_port=${UNIFACE_HTTP_PORT:-$(free_port)}
  local pg_url=postgresql://uniface:$pg_pass@127.0.0.1:$pg_port/uniface
  local amqp_url=amqp://uniface:$mq_pass@127.0.0.1:$amqp_port/%2f
  # DIR/env holds the passwords and the admin key: this user's only
  (umask 077 && : > "$dir/env")
  chmod 600 "$dir/env"
  cat > "$dir/env" <<EOF
UNIFACE_PG_PORT=$pg_port
UNIFACE_PG_URL=$pg_url
UNIFACE_AMQP_PORT=$amqp_port
UNIFACE_AMQP_DIST_PORT=$dist_port
UNIFACE_AMQP_URL=$amqp_url
UNIFACE_HTTP_PORT=$http_port
EOF
  echo "up: PostgreSQL on 127.0.0.1:$pg_port, RabbitMQ on 127.0.0.1:$amqp_port" >&2
  [ "$servers_only" -eq 0 ] || { echo "up: $dir/env"; return 0; }

  # the services
  local bin=${UNIFACE_SERVICES_BIN:-$root/target/release/uniface-services}
  if [ ! -x "$bin" ]; then
    echo "building uniface-services" >&2
    (cd "$root" && cargo build --release -q -p uniface-services) >&2
  fi
  export UNIFACE_PG_URL=$pg_url UNIFACE_AMQP_URL=$amqp_url UNIFACE_KEY_FILE=$dir/deployment.key
  [ -f "$UNIFACE_KEY_FILE" ] || "$bin" key-file "$UNIFACE_KEY_FILE" >&2
  # the first admin key: made once, kept (mode 600) for the operator; no default keys exist
  if [ ! -s "$dir/admin.key" ]; then
    (umask 077 && "$bin" keys-create --scopes admin --rate 1000 --burst 1000 \
      --description "first admin key (stack.sh)" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])' > "$dir/admin.key.tmp")
    mv "$dir/admin.key.tmp" "$dir/admin.key"
  fi
  # the deployment's processes trust each other by this token (one process needs none)
  export UNIFACE_INTERNAL_TOKEN
  UNIFACE_INTERNAL_TOKEN=$(secret "$dir/internal.token")
  # the layout is chosen at the first `up` and kept
  [ -n "$split" ] || split=$(cat "$dir/layout" 2> /dev/null || echo 0)
  echo "$split" > "$dir/layout"
  mkdir -p "$dir/ports"
  local url=http://127.0.0.1:$http_port name=$(basename "$dir") started=()
  if [ "$split" = 1 ]; then
    local replicas=() r
    for r in 0 1; do
      service "identification-$r" "" --role identification --shards 2 \
        --replica-dir "$dir/replica-$r" --replica-name "$name-$r"
      replicas+=(--replica-url "$service_url")
    done
    local upstreams=()
    for r in enrollment verification templates; do
      service "$r-0" "" --role "$r"
      upstreams+=(--upstream "$r=$service_url")
    done
    service relay-0 "" --role relay
    service gateway-0 "$http_port" --role gateway "${upstreams[@]}" "${replicas[@]}"
  else
    service all-0 "$http_port" --role all --replica-dir "$dir/replica-0" --replica-name "$name-0"
  fi
  local i p
  for ((i = 0; i < 1800; i++)); do
    ready "$url/readyz" && break
    for p in "${started[@]}"; do
      if ! alive "$dir/pids/$p.pid"; then
        echo "stack.sh: $p stopped (log: $dir/logs/$p.log):" >&2
        tail -5 "$dir/logs/$p.log" >&2
        exit 1
      fi
    done
    sleep 0.1
  done
  if [ "$i" -ge 1800 ]; then
    echo "stack.sh: $url/readyz did not answer within 180 s (logs: $dir/logs/)" >&2
    exit 1
  fi
  cat >> "$dir/env" <<EOF
UNIFACE_KEY_FILE=$UNIFACE_KEY_FILE
UNIFACE_URL=$url
UNIFACE_ADMIN_KEY=$(cat "$dir/admin.key")
EOF
  echo "up: UniFace on $url ($([ "$split" = 1 ] && echo "one process per role" || echo "roles: all")); $dir/env"
}

# Start the service NAME (pid DIR/pids/NAME.pid, log DIR/logs/NAME.log) unless it runs, on
# PORT or the port it had before (DIR/ports/NAME) or a free one; sets service_url.
service() {
  local name=$1 port=$2
  shift 2
  [ -n "$port" ] || port=$(cat "$dir/ports/$name" 2> /dev/null || free_port)
  echo "$port" > "$dir/ports/$name"
  service_url=http://127.0.0.1:$port
  started+=("$name")
  alive "$dir/pids/$name.pid" && return 0
  nohup "$bin" serve --listen "127.0.0.1:$port" "$@" >> "$dir/logs/$name.log" 2>&1 &
  echo $! > "$dir/pids/$name.pid"
}

secret() { # file: its secret, made (random, mode 600) when missing
  if [ ! -s "$1" ]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(24))' > "$1")
  fi
  cat "$1"
}

ready() { # url: 200 from /readyz
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null
}

down() {
  [ -d "$dir" ] || { echo "stack.sh: no such folder $dir" >&2; exit 1; }
  dir=$(cd "$dir" && pwd)
  # the services first (SIGTERM: they finish the requests in flight)
  local f pid
  for f in "$dir"/pids/*-[0-9]*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do running "$pid" || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$f"
  done
  if [ -f "$dir/postgres/data/postmaster.pid" ]; then
    as_user postgres "$pg_bin/pg_ctl" -D "$dir/postgres/data" -m fast -w stop > /dev/null || true
  fi
  rm -f "$dir/pids/postgres.pid"
  stop_rabbitmq
  # epmd is shared by every Erlang node on the machine: stopped only when none is left
  sleep 0.5
  pgrep -x beam.smp > /dev/null || epmd -kill > /dev/null 2>&1 || true
  echo "down: $dir"
}

stop_rabbitmq() {
  if alive "$dir/pids/rabbitmq.pid"; then
    local pid
    pid=$(cat "$dir/pids/rabbitmq.pid")
    # the wrapper's children (beam, epmd started for this node) go with its process group
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do running "$pid" || break; sleep 0.1; done
  fi
  rm -f "$dir/pids/rabbitmq.pid"
  # beam processes of our node, by its name
  if [ -f "$dir/env" ]; then
    # shellcheck disable=SC1091
    . "$dir/env"
    pkill -f "uniface-$UNIFACE_AMQP_PORT@localhost" 2>/dev/null || true
    for _ in $(seq 100); do pgrep -f "uniface-$UNIFACE_AMQP_PORT@localhost" > /dev/null || break; sleep 0.1; done
  fi
}

status() {
  # shellcheck disable=SC1091
  . "$dir/env"
  for s in "postgres $UNIFACE_PG_PORT" "rabbitmq $UNIFACE_AMQP_PORT" "uniface ${UNIFACE_HTTP_PORT:-0}"; do
    set -- $s
    if answers 127.0.0.1 "$2"; then echo "$1: answers on 127.0.0.1:$2"; else echo "$1: down"; fi
  done
}

stop_postgres() {
  if [ -f "$dir/postgres/data/postmaster.pid" ]; then
    as_user postgres "$pg_bin/pg_ctl" -D "$dir/postgres/data" -m immediate -w stop > /dev/null || true
  fi
  rm -f "$dir/pids/postgres.pid"
}

kill_service() {
  local f=$dir/pids/$name.pid
  [ -n "$name" ] && [ -f "$f" ] || { echo "stack.sh: no service ${name:-NAME} in $dir/pids" >&2; exit 1; }
  kill -KILL "$(cat "$f")" 2>/dev/null || true
  rm -f "$f"
}

case $cmd in
  up) up ;;
  stop-rabbitmq) dir=$(cd "$dir" && pwd); stop_rabbitmq; echo "rabbitmq stopped" ;;
  stop-postgres) dir=$(cd "$dir" && pwd); stop_postgres; echo "postgres stopped" ;;
  kill) dir=$(cd "$dir" && pwd); kill_service; echo "killed $name" ;;
  down) down ;;
  status) status ;;
  *) usage ;;
esac
