"""Flask + SQLAlchemy: enqueue in the request's transaction.

    pip install 'kongtaskd[sqlalchemy,psycopg]' flask
    psql "$DATABASE_URL" -f examples/flask_app/schema.sql
    DATABASE_URL=postgresql://app@db/app flask --app examples/flask_app/app.py run
    DATABASE_URL=postgresql://app@db/app kongtaskd -c examples/flask_app/kongtask.yaml

POST /signups {"email": ...} inserts the user and adds a ``send_welcome`` job in ONE
transaction (``session.begin()``): both commit, or neither does. A duplicate email is a
409, and its job is rolled back with the failed insert: no welcome for a signup that
never happened.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from flask import Flask, jsonify, request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import kongtaskd


def engine_for(database_url: str) -> sa.Engine:
    # postgresql://... -> SQLAlchemy's psycopg 3 driver (psycopg2 works the same).
    url = sa.make_url(database_url).set(drivername="postgresql+psycopg")
    return sa.create_engine(url)


def create_app(database_url: str | None = None) -> Flask:
    app = Flask(__name__)
    engine = engine_for(database_url or os.environ["DATABASE_URL"])

    @app.post("/signups")
    def sign_up() -> Any:
        email = request.get_json()["email"]
        try:
            # session.begin(): commit at the end of the block, roll back if it raises.
            with Session(engine) as session, session.begin():
                user_id = session.execute(
                    sa.text("insert into signups (email) values (:email) returning id"),
                    {"email": email},
                ).scalar_one()
                # The session's transaction: the job is committed with the user, or not at all.
                kongtaskd.add_job(session, "send_welcome", {"user_id": user_id, "email": email})
        except IntegrityError:
            return jsonify(error=f"{email} has already signed up"), 409
        return jsonify(user_id=user_id), 201

    return app


if __name__ == "__main__":
    create_app().run()
