"""Enqueue from Python inside the application's own transaction.

    DATABASE_URL=postgresql://... python examples/signup.py ada@example.com

creates a shop_users row (examples/schema.sql) and a ``send_email`` job (examples/shop.py)
in one transaction: both are committed, or, if anything fails before the commit, neither.
No "user created but welcome email lost", no "email sent to a user who does not exist".
"""

from __future__ import annotations

import os
import sys

import psycopg2

import kongtaskd


def sign_up(conn: psycopg2.extensions.connection, email: str) -> int:
    """Create the user and enqueue the welcome email; the caller commits (or rolls back)."""
    with conn.cursor() as cur:
        cur.execute("insert into shop_users (email) values (%s) returning id", [email])
        (user_id,) = cur.fetchone()
    # Given a connection, add_job runs in that connection's open transaction and does
    # not commit: the job becomes visible to workers only when the caller commits.
    kongtaskd.add_job(
        conn,
        "send_email",
        {
            "to": email,
            "subject": "Welcome!",
            "body": f"Hello {email}, your account number is {user_id}.",
            "message_id": f"welcome-{user_id}",
        },
    )
    return user_id


def main() -> None:
    email = sys.argv[1] if len(sys.argv) > 1 else "ada@example.com"
    # `with conn:` commits when the block succeeds and rolls back if it raises.
    conn = psycopg2.connect(os.environ["DATABASE_URL"])
    try:
        with conn:
            user_id = sign_up(conn, email)
    finally:
        conn.close()
    print(f"user {user_id} signed up; welcome email queued")


if __name__ == "__main__":
    main()
