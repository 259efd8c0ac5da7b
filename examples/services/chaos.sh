#!/usr/bin/env bash
# Chaos rounds on the reference deployment. For each fault, ROUNDS rounds, each on a fresh split
# stack (`stack.sh up --split`: gateway, enrollment, verification, templates, relay, two
# identification replicas) under a steady mixed load (`uniface-services bench load`, synthetic
# templates, 4 clients unless --clients, enroll/verify/identify/erase 3/1/2/1):
#
#   kill-replica       SIGKILL identification-0; `stack.sh up` restarts it 5 s later
#   kill-relay         SIGKILL the relay; restarted 5 s later
#   kill-enrollment    SIGKILL the enrollment process (requests in flight); restarted 5 s later
#   stop-rabbitmq      the broker stopped for 20 s
#   restart-postgres   the database stopped at once (as a crash), started again 5 s later
#   wipe-replica       identification-1 killed and its gallery folder deleted; restarted, it
#                      bootstraps from the database
#   fill-disk          identification-0's folder is a 64 MiB tmpfs of its own (mounted before
#                      the round; root): filled to the last byte for 15 s, then freed. The
#                      round counts only if the replica saw its writes fail ("No space left")
#
# After the load: the time until /readyz answers 200 and the audit is clean (every replica equal
# to the database), then chaos_check.py holds the database to every acknowledged enrollment and
# erasure. One table row per round; exit status 1 when anything acknowledged was lost, an erased
# subject came back, or the deployment did not recover within 180 s.
#
#   examples/services/chaos.sh [--rounds N] [--faults kill-replica,...] [--seconds S] [--clients C]
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/examples/services
rounds=1 seconds=30 clients=4
faults=kill-replica,kill-relay,kill-enrollment,stop-rabbitmq,restart-postgres,wipe-replica,fill-disk
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --faults) faults=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    *) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
bin=${UNIFACE_SERVICES_BIN:-$root/target/release/uniface-services}
[ -x "$bin" ] || (cd "$root" && cargo build --release -q -p uniface-services)
export UNIFACE_SERVICES_BIN=$bin
stack=$here/stack.sh
work=$(mktemp -d)
chmod 755 "$work"
current=
unmount() { # every tmpfs mounted under the folder $1
  # (a folder with none is not an error: grep's status 1 must not end the script under pipefail)
  { findmnt -rn -o TARGET | grep -F "$1/" || true; } | sort -r | while read -r m; do umount "$m" || umount -l "$m"; done
}
cleanup() {
  [ -z "$current" ] || bash "$stack" down "$current" > /dev/null 2>&1 || true
  unmount "$work"
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$1" "$2"; }

inject() { # fault dir
  case $1 in
    kill-replica) bash "$stack" kill "$2" identification-0 > /dev/null; sleep 5 ;;
    kill-relay) bash "$stack" kill "$2" relay-0 > /dev/null; sleep 5 ;;
    kill-enrollment) bash "$stack" kill "$2" enrollment-0 > /dev/null; sleep 5 ;;
    stop-rabbitmq) bash "$stack" stop-rabbitmq "$2" > /dev/null; sleep 20 ;;
    restart-postgres) bash "$stack" stop-postgres "$2" > /dev/null; sleep 5 ;;
    wipe-replica)
      bash "$stack" kill "$2" identification-1 > /dev/null
      rm -rf "$2/replica-1/gallery"
      sleep 2 ;;
    fill-disk)
      # every free byte of the replica's own file system taken, then given back
      dd if=/dev/zero of="$2/replica-0/filler" bs=64k > /dev/null 2>&1 || true
      sleep 15
      rm -f "$2/replica-0/filler" ;;
    *) echo "chaos.sh: unknown fault $1" >&2; exit 2 ;;
  esac
  bash "$stack" up "$2" > "$2/restart.log" 2>&1
}

echo "# chaos rounds: $(nproc) cores, ${seconds} s of load per round ($(date -u +%F))"
echo
echo "| fault | round | requests | acknowledged enrollments / erasures | lost | erased still present | failed requests (during the fault) | failures stopped (s after the restart) | clean audit (s after the load) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
bad=0
for fault in ${faults//,/ }; do
  for ((round = 1; round <= rounds; round++)); do
    current=$work/$fault-$round
    mkdir -p "$current" && chmod 755 "$current"
    if [ "$fault" = fill-disk ]; then
      mkdir -p "$current/replica-0"
      mount -t tmpfs -o size=64m,mode=755 uniface-chaos "$current/replica-0" \
        || { echo "chaos.sh: fill-disk needs a tmpfs of its own (mount as root)" >&2; exit 1; }
    fi
    bash "$stack" up "$current" --split > "$work/up.log" 2>&1 || { cat "$work/up.log" >&2; exit 1; }
    # the load's own key: its rate is not what a round measures (refusals during an outage are
    # fast, and a closed loop would run into the admin key's 1,000 requests/s)
    load_key=$( (set -a; . "$current/env"; set +a
      "$bin" keys-create --scopes admin --rate 1000000 --burst 1000000 --description chaos.sh) |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
    # shellcheck disable=SC1091
    (set -a; . "$current/env"; set +a; UNIFACE_ADMIN_KEY=$load_key
      "$bin" bench load --lfw "${UNIFACE_SHARED_DIR:-$root/../shared}/data/lfw" --templates --photos 500 --clients "$clients" --mix enroll=3,verify=1,identify=2,erase=1 \
        --duration "$seconds" --max-requests 1000000 --prefix "chaos-$fault-$round" \
        --json "$current/load.json" > "$current/load.out" 2>&1) &
    load=$!
    started=$(now)
    sleep 5
    fault_start=$(since "$started" "$(now)")
    inject "$fault" "$current"
    fault_end=$(since "$started" "$(now)")
    wait "$load" || { echo "chaos.sh: the load generator failed:" >&2; tail -5 "$current/load.out" >&2; exit 1; }
    # recovered: ready, and every replica equal to the database
    # recovery counts from the load's end, not from its process's exit: the process waits for
    # the requests it gave up on at the deadline, which can take as long as the recovery itself
    healed=$(python3 -c 'import json, sys; print(float(sys.argv[1]) + json.load(open(sys.argv[2]))["reports"][0]["seconds"])' \
      "$started" "$current/load.json") recovered=
    for _ in $(seq 360); do
      if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/readyz", timeout=2)' \
          "$(. "$current/env"; echo "$UNIFACE_URL")" 2> /dev/null \
        && (set -a; . "$current/env"; set +a; "$bin" audit > "$current/audit.out" 2>&1); then
        recovered=$(since "$healed" "$(now)")
        break
      fi
      sleep 0.5
    done
    check=$(python3 "$here/chaos_check.py" "$current/load.json" "$(. "$current/env"; echo "$UNIFACE_PG_URL")" \
      "$fault_start" "$fault_end") || bad=1
    [ -n "$recovered" ] || { bad=1; recovered="not within 180"; }
    if [ "$fault" = fill-disk ] && ! grep -q "No space left" "$current/logs/identification-0.log"; then
      bad=1 recovered="$recovered (the replica never saw a full disk: not a test)"
    fi
    python3 - "$fault" "$round" "$recovered" "$check" <<'PYEOF'
import json, sys
fault, rnd, recovered, check = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
print(f"| {fault} | {rnd} | {check['requests']} | {check['acknowledged_enrollments']} / "
      f"{check['acknowledged_erasures']} | {check['lost_enrollments']} | {check['erased_still_present']} | "
      f"{check['failed_requests']} ({check['failed_during_fault']}: "
      f"{', '.join(f'{k} ' + '/'.join(f'{n}×{st}' for st, n in by.items()) for k, by in check['failed_by_kind'].items()) or 'none'}; "
      f"statuses {check['failed_statuses']}) | {check['failures_stopped_after']} | {recovered} |")
PYEOF
    bash "$stack" down "$current" > /dev/null
    unmount "$current"
    rm -rf "$current"
    current=
  done
done
exit "$bad"
