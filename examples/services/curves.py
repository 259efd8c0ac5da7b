#!/usr/bin/env python3
"""Load curves of the reference deployment, for docs/DEPLOYMENT.md: throughput and latency of
enrollments and identifications against the number of clients, in both layouts, with the CPU
each process used during each step, so that what saturates is measured, not guessed.

    examples/services/curves.py [--clients 1,2,4,8,16,32] [--seconds 10] [--photos 200]
                                [--layouts all,split] [--payloads photos,templates]
                                [--json FILE]

For each layout (`stack.sh up`: one process; `stack.sh up --split`: one process per role, two
identification replicas), a fresh stack; for each payload (LFW photos: the whole pipeline, or
synthetic templates: the service's own cost), an enrollment curve (closed loop, `bench load
--mix enroll`, each client count for --seconds) and then an identification curve on the
gallery the enrollments made. Before and after each step the CPU time of every process of the
stack is read from /proc (a process and its descendants: PostgreSQL's backends, RabbitMQ's
Erlang node), and the load generator's own from its rusage; a cell is the cores it kept busy.

Prints one markdown table per curve. The requests go to 127.0.0.1 only; every step is bounded
by --seconds and 1,000,000 requests. Needs root or the Debian packages (stack.sh), and the
release binary (built when missing).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
STACK = os.path.join(ROOT, "examples", "services", "stack.sh")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds():
    """Every process's (parent, user + system seconds)."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2 :].split()
        out[int(p)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK)
    return out


def tree_seconds(table, root):
    """CPU seconds of `root` and its live descendants."""
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            total += table[pid][1]
        todo.extend(children.get(pid, []))
    return total


def processes(d):
    """name -> pid, from stack.sh's pid files."""
    out = {}
    for f in sorted(os.listdir(os.path.join(d, "pids"))):
        with open(os.path.join(d, "pids", f)) as fh:
            out[f[: -len(".pid")]] = int(fh.read().strip())
    return out


def env_of(d):
    env = dict(os.environ)
    with open(os.path.join(d, "env")) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            if k:
                env[k] = v
    return env


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="1,2,4,8,16,32")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--layouts", default="all,split")
    ap.add_argument("--payloads", default="photos,templates")
    ap.add_argument("--json")
    a = ap.parse_args()
    shared = os.environ.get("UNIFACE_SHARED_DIR", os.path.join(ROOT, "..", "shared"))
    lfw = os.path.join(shared, "data", "lfw")
    if not os.path.isdir(lfw):
        sys.exit(f"curves.py: no LFW at {lfw} (set UNIFACE_SHARED_DIR)")
    binary = os.environ.get("UNIFACE_SERVICES_BIN", os.path.join(ROOT, "target", "release", "uniface-services"))
    if not os.access(binary, os.X_OK):
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "uniface-services"], cwd=ROOT, check=True)
    os.environ["UNIFACE_SERVICES_BIN"] = binary
    clients = [int(c) for c in a.clients.split(",")]
    rows = []
    work = tempfile.mkdtemp()
    os.chmod(work, 0o755)
    print(f"# load curves: {os.cpu_count()} cores, {a.seconds:g} s per step, clients {a.clients} "
          f"({time.strftime('%Y-%m-%d', time.gmtime())})")
    try:
        for layout in a.layouts.split(","):
            d = os.path.join(work, layout)
            os.makedirs(d)
            os.chmod(d, 0o755)
            up = ["bash", STACK, "up", d] + (["--split"] if layout == "split" else [])
            subprocess.run(up, check=True, stdout=subprocess.DEVNULL)
            try:
                env = env_of(d)
                # a key of its own whose rate is not what the curve measures
                made = subprocess.run(
                    [binary, "keys-create", "--scopes", "admin", "--rate", "1000000", "--burst", "1000000",
                     "--description", "curves.py"],
                    env=env, check=True, capture_output=True, text=True).stdout
                env["UNIFACE_ADMIN_KEY"] = json.loads(made)["key"]
                procs = processes(d)
                for payload in a.payloads.split(","):
                    for kind in ("enroll", "identify"):
                        print(f"\n## {layout}: {kind}, {payload}\n")
                        names = [n for n in procs if n not in ("postgres", "rabbitmq")] + ["postgres", "rabbitmq"]
                        print("| clients | answered 2xx/s | p50 ms | p90 ms | p99 ms | not 2xx | CPU cores: "
                              + " | ".join(names) + " | load generator | all |")
                        print("| ---: " * (7 + len(names)) + "| ---: |")
                        for c in clients:
                            row = step(binary, env, lfw, a, layout, payload, kind, c, procs, names)
                            rows.append(row)
                            cores = row["cores"]
                            print(f"| {c} | {row['ok_per_second']:.1f} | {row['p50_ms']:.0f} | {row['p90_ms']:.0f} | "
                                  f"{row['p99_ms']:.0f} | {row['failed']} | "
                                  + " | ".join(f"{cores[n]:.2f}" for n in names)
                                  + f" | {cores['load generator']:.2f} | {sum(cores.values()):.2f} |")
                            sys.stdout.flush()
            finally:
                subprocess.run(["bash", STACK, "down", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


def step(binary, env, lfw, a, layout, payload, kind, c, procs, names):
    out = tempfile.NamedTemporaryFile(suffix=".json", delete=False)
    out.close()
    cmd = [binary, "bench", "load", "--lfw", lfw, "--photos", str(a.photos), "--clients", str(c),
           "--mix", kind, "--duration", str(a.seconds), "--max-requests", "1000000",
           "--prefix", f"curve-{payload}-{kind}", "--json", out.name]
    if payload == "templates":
        cmd.append("--templates")
    before = cpu_seconds()
    own = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    after = cpu_seconds()
    mine = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out.name) as f:
        report = json.load(f)["reports"][0]
    os.unlink(out.name)
    stats = report["kinds"][kind]
    ok = sum(n for st, n in stats["statuses"].items() if 200 <= int(st) < 300)
    cores = {n: max(0.0, tree_seconds(after, procs[n]) - tree_seconds(before, procs[n])) / wall for n in names}
    cores["load generator"] = (mine.ru_utime + mine.ru_stime - own.ru_utime - own.ru_stime) / wall
    return {
        "layout": layout, "payload": payload, "kind": kind, "clients": c,
        "seconds": report["seconds"], "ok_per_second": ok / report["seconds"],
        "p50_ms": stats["p50_ms"], "p90_ms": stats["p90_ms"], "p99_ms": stats["p99_ms"],
        "p999_ms": stats["p999_ms"], "failed": stats["requests"] - ok, "statuses": stats["statuses"],
        "cores": cores,
    }


if __name__ == "__main__":
    main()
