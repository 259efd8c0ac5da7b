#!/usr/bin/env bash
# The deployment's figures for docs/DEPLOYMENT.md, on this machine:
#
#   examples/services/bench.sh           100 photos (and 1,000 templates) per run at 1, 4 and
#                                        16 clients; a replica
#                                        bootstrapped from 100,000 templates
#   examples/services/bench.sh --quick   8 photos, 50 templates, at 1 and 4 clients; 3,000
#                                        templates bootstrapped (CI)
#
# 1. the stack in one process (`stack.sh up`): enrollments/s and identification latency through
#    the gateway (`uniface-services bench http`), a mixed load (`bench load`), peak memory of the
#    process;
# 2. one process per role (`stack.sh up --split`): the same, and each role's peak memory;
# 3. a new replica bootstrapped from PostgreSQL after synthetic faces were added;
# 4. the same work through the library in one process (`uniface-services bench library`).
# Photos: the first photo of each LFW person in name order ($UNIFACE_SHARED_DIR/data/lfw).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
photos=100 templates=1000 clients=1,4,16 faces=100000
if [ "${1:-}" = --quick ]; then photos=8 templates=50 clients=1,4 faces=3000; fi
lfw=${UNIFACE_SHARED_DIR:-$root/../shared}/data/lfw
[ -d "$lfw" ] || { echo "bench.sh: no LFW at $lfw (set UNIFACE_SHARED_DIR)" >&2; exit 1; }
bin=${UNIFACE_SERVICES_BIN:-$root/target/release/uniface-services}
[ -x "$bin" ] || (cd "$root" && cargo build --release -q -p uniface-services)
export UNIFACE_SERVICES_BIN=$bin
stack=$root/examples/services/stack.sh
work=$(mktemp -d)
chmod 755 "$work"
cleanup() {
  for d in "$work"/all "$work"/split; do [ -d "$d" ] && bash "$stack" down "$d" > /dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# the broker's Erlang node: a descendant of the pid stack.sh recorded
beam_of() {
  local c
  for c in $(pgrep -P "$1" || true); do
    if [ "$(cat "/proc/$c/comm" 2> /dev/null)" = beam.smp ]; then echo "$c"; return; fi
    beam_of "$c"
  done
}

echo "# uniface-services bench: $(nproc) cores, $photos photos per run, clients $clients ($(date -u +%F))"
for layout in all split; do
  mkdir -p "$work/$layout" && chmod 755 "$work/$layout"
  flags=()
  [ "$layout" = all ] || flags=(--split)
  bash "$stack" up "$work/$layout" "${flags[@]}" > /dev/null
  echo
  echo "## through the gateway: $([ "$layout" = all ] && echo "one process (--role all)" || echo "one process per role (--split, 2 replicas)")"
  ( set -a; . "$work/$layout/env"; set +a
    "$bin" bench http --lfw "$lfw" --photos "$photos" --clients "$clients"
    echo
    echo "templates instead of photos (the service's own cost):"
    echo
    "$bin" bench http --lfw "$lfw" --photos "$templates" --clients "$clients" --templates
    echo
    echo "a mixed load (enroll, verify, identify, erase: 1, 1, 2, 1), closed loop:"
    echo
    "$bin" bench load --lfw "$lfw" --photos "$photos" --clients "$clients" \
      --mix enroll=1,verify=1,identify=2,erase=1 --max-requests $((photos * 2)) --duration 120
    echo
    "$bin" bench memory "$work/$layout"
    beam=$(beam_of "$(cat "$work/$layout/pids/rabbitmq.pid")")
    [ -z "$beam" ] || awk '/VmHWM/ {printf "| rabbitmq (Erlang node) | %.0f |\n", $2 / 1024}' "/proc/$beam/status" )
  if [ "$layout" = split ]; then
    echo
    echo "## bootstrap of a new replica"
    ( set -a; . "$work/$layout/env"; set +a
      "$bin" bench bootstrap --faces "$faces" --dir "$work/bootstrap-replica" )
  fi
  bash "$stack" down "$work/$layout" > /dev/null
done
echo
echo "## the library in one process (the same work)"
"$bin" bench library --lfw "$lfw" --photos "$photos" --clients "$clients"
echo
echo "templates instead of photos:"
echo
"$bin" bench library --lfw "$lfw" --photos "$templates" --clients "$clients" --templates
