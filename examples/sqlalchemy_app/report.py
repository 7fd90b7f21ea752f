"""Plain SQLAlchemy (a script, a CLI, a batch job): enqueue in ``engine.begin()``'s transaction.

    pip install 'kongtaskd[sqlalchemy,psycopg]'
    psql "$DATABASE_URL" -f examples/sqlalchemy_app/schema.sql
    DATABASE_URL=postgresql://app@db/app python examples/sqlalchemy_app/report.py 2030-01
    DATABASE_URL=postgresql://app@db/app kongtaskd -c examples/sqlalchemy_app/kongtask.yaml

Records the report request and adds a ``build_report`` job in one transaction. A second
request for the same month fails on the unique constraint, and takes its job with it.
"""

from __future__ import annotations

import os
import sys

import sqlalchemy as sa

import kongtaskd


def request_report(engine: sa.Engine, month: str) -> int:
    # engine.begin(): one transaction, committed at the end of the block, rolled back if
    # anything in it raises.
    with engine.begin() as conn:
        request_id = conn.execute(
            sa.text("insert into report_requests (month) values (:month) returning id"),
            {"month": month},
        ).scalar_one()
        kongtaskd.add_job(
            conn, "build_report", {"request_id": request_id, "month": month}, job_key=month
        )
    return int(request_id)


def main() -> int:
    url = sa.make_url(os.environ["DATABASE_URL"]).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(url)
    try:
        request_id = request_report(engine, sys.argv[1])
    except sa.exc.IntegrityError:
        print(f"a report for {sys.argv[1]} was already requested", file=sys.stderr)
        return 1
    print(f"report request {request_id} queued")
    return 0


if __name__ == "__main__":
    sys.exit(main())
