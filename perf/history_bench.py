"""The settle statement's own cost with and without ``keep_completed`` (issue 14).

    python perf/history_bench.py                 # 4,000 settles of 32 completions each
    python perf/history_bench.py --turns 10000 --batch 32 --synchronous-commit off

End-to-end throughput on a shared machine varies more from run to run than the history
costs (``perf/stats_cost.py`` reports both variants anyway). This isolates the database side:
one connection runs the supervisor's settle statement (PREPAREd as the supervisor does,
generic plan) on a fresh database of pre-queued jobs, each turn completing the previous
turn's ``--batch`` jobs and claiming as many, alternating turn by turn between
``keep_completed`` off and on, so both see the same table, cache and machine load. Reported:
median milliseconds per settle and microseconds per completed job, for each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from benchlib import Server, connect, queue, vacuum

from kongtaskd.queries import Queries
from kongtaskd.settle import Outcomes, Settle, Want

DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=32, help="completions per settle")
    parser.add_argument("--synchronous-commit", choices=("on", "off"), default="on")
    parser.add_argument("--dsn", default=os.environ.get("KONGTASK_PERF_DSN", DEFAULT_DSN))
    args = parser.parse_args()
    server = Server(args.dsn)
    with server.database("kongtaskd") as dsn:
        queue(dsn, "noop", args.turns * args.batch + args.batch)
        vacuum(dsn)
        conn = connect(dsn)
        with conn.cursor() as cur:
            cur.execute("SET plan_cache_mode = force_generic_plan")  # as the supervisor does
            cur.execute(f"SET synchronous_commit = {args.synchronous_commit}")
            cur.execute("select id from graphile_worker._private_tasks where identifier = 'noop'")
            ((task_id,),) = cur.fetchall()
        settle = Settle(Queries(conn, "graphile_worker", names=("settle",)), f"pool-{uuid.uuid4()}")
        want = Want(args.batch, [task_id])
        held = [job.id for job in settle.settle(Outcomes(), want).claimed]
        seconds: dict[bool, list[float]] = {False: [], True: []}
        for turn in range(args.turns):
            keep = turn % 2 == 1
            outcomes = Outcomes(
                completed=held,
                seconds=dict.fromkeys(held, 0.001),
                tasks=dict.fromkeys(held, "noop"),
            )
            started = time.perf_counter()
            result = settle.settle(outcomes, want, keep_completed=keep)
            seconds[keep].append(time.perf_counter() - started)
            held = [job.id for job in result.claimed]
        with conn.cursor() as cur:
            cur.execute("select count(*) from graphile_worker._kongtaskd_completed_jobs")
            ((records,),) = cur.fetchall()
        conn.close()
    print(f"synchronous_commit {args.synchronous_commit}, {args.batch} completions per settle")
    for keep, values in seconds.items():
        median = statistics.median(values)
        print(
            f"keep_completed {'on ' if keep else 'off'}: {median * 1e3:.3f} ms per settle, "
            f"{median * 1e6 / args.batch:.1f} us per job ({len(values)} settles)"
        )
    off, on = (statistics.median(seconds[k]) for k in (False, True))
    print(f"history costs {100 * (on - off) / off:+.1f}% of the statement; {records} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
