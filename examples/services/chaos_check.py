#!/usr/bin/env python3
"""The checker of a chaos round (chaos.sh): holds the database to every write the load
generator saw acknowledged.

    chaos_check.py LOAD_JSON PG_URL FAULT_START FAULT_END

LOAD_JSON is `uniface-services bench load --json` (one run); FAULT_START and FAULT_END are
seconds from the start of that run. An enrollment answered 201 must be in `faces` (its face id)
unless its subject was later erased with an acknowledged erasure; a subject whose erasure was
answered 200 must be in neither `subjects` nor `faces`. Prints one JSON object: acknowledged
enrollments and erasures, lost enrollments, erased subjects still present, requests not answered
2xx (all, and during the fault and the minute after it), and exits 1 when anything acknowledged
was lost or came back.
"""

import json
import subprocess
import sys


def query(pg_url, sql):
    out = subprocess.run(
        ["psql", pg_url, "-Atc", sql], check=True, capture_output=True, text=True
    ).stdout
    return [line for line in out.splitlines() if line]


def main():
    load_json, pg_url, fault_start, fault_end = sys.argv[1:5]
    fault_start, fault_end = float(fault_start), float(fault_end)
    with open(load_json) as f:
        outcomes = [o for run in json.load(f)["outcomes"] for o in run]
    enrolled = {}  # face id -> (subject, when)
    erased = {}  # subject -> when
    for o in outcomes:
        if o["kind"] == "enroll" and o["status"] == 201 and o["face_id"] is not None:
            enrolled[o["face_id"]] = (o["subject"], o["at"])
        if o["kind"] == "erase" and o["status"] in (200, 204):
            erased[o["subject"]] = o["at"]
    faces = {int(x) for x in query(pg_url, "SELECT face_id FROM faces")}
    subjects = set(query(pg_url, "SELECT subject FROM subjects"))
    lost = sorted(
        fid for fid, (subject, _) in enrolled.items() if fid not in faces and subject not in erased
    )
    back = sorted(s for s in erased if s in subjects)
    not_ok = [o for o in outcomes if not 200 <= o["status"] < 300]
    during = [o for o in not_ok if fault_start <= o["at"] <= fault_end + 60.0]
    report = {
        "requests": len(outcomes),
        "acknowledged_enrollments": len(enrolled),
        "acknowledged_erasures": len(erased),
        "lost_enrollments": len(lost),
        "erased_still_present": len(back),
        "failed_requests": len(not_ok),
        "failed_during_fault": len(during),
        "failed_statuses": sorted({o["status"] for o in not_ok}),
        # from the end of the fault (the restart) to the last request that failed
        "failures_stopped_after": round(max([o["at"] - fault_end for o in during] + [0.0]), 1),
        # kind -> status -> count, of the requests that failed during the fault
        "failed_by_kind": {
            k: {
                str(st): sum(1 for o in during if o["kind"] == k and o["status"] == st)
                for st in sorted({o["status"] for o in during if o["kind"] == k})
            }
            for k in sorted({o["kind"] for o in during})
        },
        "lost_face_ids": lost[:20],
        "erased_present": back[:20],
    }
    print(json.dumps(report))
    sys.exit(1 if lost or back else 0)


if __name__ == "__main__":
    main()
