"""The dashboard's WSGI application: routes, the login gate, forms and actions, headers.

Werkzeug does the HTTP (routing, requests, responses) and Jinja2 the HTML, with
autoescaping on for every template: every value from the database (task ids, keys,
payloads, errors) is untrusted, written by applications. Responses carry a strict
Content-Security-Policy (scripts and styles only from /static, no inline script or
handler anywhere), ``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``.

Pages work without JavaScript; ``static/app.js`` adds live refresh and confirmation
dialogs. Actions are POSTs with a one-time token (:mod:`kongtaskd.web.csrf`); without
JavaScript the first POST shows a confirm page, whose POST acts. All actions go through
:mod:`kongtaskd.actions`, the layer the CLI uses too.

Bad input (a malformed filter, an unknown id, a used or missing token) is a 4xx page that
names the problem; anything unexpected is logged with its traceback and the viewer gets a
plain 500 page without it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import ipaddress
import logging
import mimetypes
import re
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
import psycopg2
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from kongtaskd import __version__, actions, tunables
from kongtaskd.config import WebConfig
from kongtaskd.errors import DatabaseError
from kongtaskd.web import auth, charts
from kongtaskd.web.csrf import Forms
from kongtaskd.web.data import SORTS, Count, Data, TaskStats, first_line, pretty_json

log = logging.getLogger("kongtaskd.web")

#: Every response's security headers. style-src 'self': the CSS file only, so SVG charts
#: use presentation attributes, never style="".
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

#: Actions a job page and a bulk form offer (all through kongtaskd.actions).
ACTIONS: dict[str, actions.Action] = {
    "retry": actions.Action.RETRY,
    "reschedule": actions.Action.RESCHEDULE,
    "fail": actions.Action.FAIL,
    "remove": actions.Action.REMOVE,
    "cancel": actions.Action.CANCEL,
}

#: Flow control of tasks and named queues: POST /tasks/NAME/VERB, /queues/NAME/VERB.
STEERS: dict[str, actions.Steer] = {"pause": actions.Steer.PAUSE, "resume": actions.Steer.RESUME}

#: Longest filter value accepted (task identifiers and queue names are at most 128, keys
#: 512); longer is a 400, not a query.
MAX_FILTER_CHARS = 512


class BadRequest(HTTPException):
    code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Refused(HTTPException):
    code = 403

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclasses.dataclass(frozen=True)
class Viewer:
    """Who is looking: the name the audit line uses, and the session (token logins)."""

    who: str
    session: str | None = None


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("kongtaskd.web", "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ago"] = _ago
    env.filters["when"] = _when
    env.filters["first_line"] = first_line
    env.filters["duration"] = _duration
    env.filters["percent"] = _percent
    env.filters["runtime"] = _runtime
    env.filters["seconds"] = _seconds
    env.filters["count"] = lambda value: str(value) if isinstance(value, Count) else f"{value:,}"
    return env


def _percent(rate: float | None) -> str:
    return "" if rate is None else f"{rate * 100:.1f}%"


def _seconds(seconds: float | None) -> str:
    """A measured run time: "1.2 s", "0.004 s", "2m 05s"."""
    if seconds is None:
        return ""
    if seconds >= 60:
        return _duration(seconds)
    return f"{seconds:.3g} s"


def _runtime(seconds: float | None) -> str:
    """A run-time estimate from the histogram: its bucket's upper bound ("≤ 0.5 s")."""
    if seconds is None:
        return ""
    if seconds == float("inf"):
        return "> " + f"{tunables.STATS_BUCKETS[-1]:g} s"
    return f"≤ {seconds:g} s"


def _stat_rows(stats: Any) -> list[dict[str, Any]]:
    """One row per task for the overview's statistics table: last hour and last day."""
    if not isinstance(stats, TaskStats):
        return []
    hour = {summary.task: summary for summary in stats.hour}
    return [
        {"task": day.task, "hour": hour.get(day.task), "day": day}
        for day in sorted(stats.day, key=lambda summary: (-summary.attempts, summary.task))
    ]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _when(moment: dt.datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(moment: dt.datetime | None, now: dt.datetime) -> str:
    if moment is None:
        return ""
    seconds = (now - moment).total_seconds()
    return f"{_duration(seconds)} ago" if seconds >= 0 else f"in {_duration(-seconds)}"


class Dashboard:
    """The WSGI application of one ``kongtaskd web`` process."""

    def __init__(
        self,
        data: Data,
        settings: WebConfig,
        *,
        tokens: Mapping[str, str] | None = None,
    ) -> None:
        self.data = data
        self.settings = settings
        self.tokens = dict(tokens or {})
        self.prefix = "" if settings.base_path == "/" else settings.base_path
        self.forms = Forms()
        self.sessions = auth.Sessions()
        self.limiter = auth.RateLimiter()
        self.templates = _environment()
        self.url_map = Map(
            [
                Rule("/", endpoint="overview", methods=["GET"]),
                Rule("/jobs", endpoint="jobs", methods=["GET"]),
                Rule("/jobs/bulk", endpoint="bulk", methods=["POST"]),
                Rule("/jobs/<int:job_id>", endpoint="job", methods=["GET"]),
                Rule("/jobs/<int:job_id>/<action>", endpoint="job_action", methods=["POST"]),
                Rule("/tasks/<path:name>/<verb>", endpoint="steer_task", methods=["POST"]),
                Rule("/queues/<path:name>/<verb>", endpoint="steer_queue", methods=["POST"]),
                Rule("/daemons", endpoint="daemons", methods=["GET"]),
                Rule("/queues", endpoint="queues", methods=["GET"]),
                Rule("/cron", endpoint="cron", methods=["GET"]),
                Rule("/login", endpoint="login", methods=["GET", "POST"]),
                Rule("/logout", endpoint="logout", methods=["POST"]),
                Rule("/static/<name>", endpoint="static", methods=["GET"]),
            ],
            strict_slashes=False,
        )

    # --- WSGI ---

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except HTTPException as error:
            response = self._error_page(request, error)
        except DatabaseError as error:
            log.warning("page %s: %s", request.path, error.message)
            response = self._page(
                request, "error.html", {"title": "Database", "message": error.message}, 503
            )
        except psycopg2.OperationalError as error:
            log.warning("page %s: database unreachable: %s", request.path, first_line(str(error)))
            response = self._page(
                request,
                "error.html",
                {"title": "Database unreachable", "message": first_line(str(error))},
                503,
            )
        except Exception:
            log.exception("page %s failed", request.path)
            response = self._page(
                request,
                "error.html",
                {"title": "Internal error", "message": "the error is in the dashboard's log"},
                500,
            )
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        path = request.path
        if self.prefix:
            if path != self.prefix and not path.startswith(self.prefix + "/"):
                raise NotFound()
            path = path[len(self.prefix) :] or "/"
        adapter = self.url_map.bind("localhost", path_info=path)
        endpoint, args = adapter.match(path, method=request.method)
        if endpoint == "static":
            return self._static(args["name"])
        viewer = self._viewer(request)
        if isinstance(viewer, Response):
            return viewer
        handler: Callable[..., Response] = getattr(self, f"_{endpoint}")
        return handler(request, viewer, **args)

    # --- who is looking ---

    def _client(self, request: Request) -> str:
        return auth.client_address(request.environ, self.settings.trusted_proxies)

    def _viewer(self, request: Request) -> Viewer | Response:
        settings_auth = self.settings.auth
        client = self._client(request)
        if settings_auth is None:
            return Viewer(f"anonymous@{client}")
        endpoint_is_login = request.path.rstrip("/").endswith("/login")
        if settings_auth.kind == "basic":
            return self._basic(request, client)
        sid = request.cookies.get(auth.SESSION_COOKIE)
        who = self.sessions.who(sid)
        if who is not None:
            return Viewer(who, sid)
        if endpoint_is_login:
            return Viewer("", None)  # the login page itself
        return self._page(request, "login.html", {"title": "Log in", "problem": None}, 401)

    def _basic(self, request: Request, client: str) -> Viewer | Response:
        settings_auth = self.settings.auth
        assert settings_auth is not None
        wait = self.limiter.blocked_for(client)
        if wait:
            return self._too_many(request, wait)
        given = request.authorization
        if given is not None and given.type == "basic":
            user_ok = _same(given.username or "", settings_auth.basic_user or "")
            password_ok = auth.verify_password(
                given.password or "", settings_auth.basic_password_hash or ""
            )
            if user_ok and password_ok:
                return Viewer(settings_auth.basic_user or "")
            self.limiter.failed(client)
            log.warning("failed basic-auth login from %s", client)
        response = self._page(
            request,
            "error.html",
            {"title": "Log in", "message": "this dashboard needs a user name and password"},
            401,
        )
        response.headers["WWW-Authenticate"] = 'Basic realm="kongtaskd", charset="UTF-8"'
        return response

    def _too_many(self, request: Request, wait: float) -> Response:
        response = self._page(
            request,
            "error.html",
            {
                "title": "Too many failed logins",
                "message": f"too many failed logins from this address; try again in "
                f"{int(wait) + 1} s",
            },
            429,
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response

    def _login(self, request: Request, viewer: Viewer) -> Response:
        if self.settings.auth is None or self.settings.auth.kind != "token":
            return self._redirect("/")
        if request.method == "GET":
            if viewer.who:
                return self._redirect("/")
            return self._page(request, "login.html", {"title": "Log in", "problem": None})
        client = self._client(request)
        wait = self.limiter.blocked_for(client)
        if wait:
            return self._too_many(request, wait)
        owner = auth.token_owner(self.tokens, request.form.get("token", ""))
        if owner is None:
            self.limiter.failed(client)
            log.warning("failed token login from %s", client)
            return self._page(
                request, "login.html", {"title": "Log in", "problem": "wrong token"}, 401
            )
        self.sessions.end(viewer.session)
        sid = self.sessions.start(owner)
        log.info("login: token %s from %s", owner, client)
        response = self._redirect("/")
        response.set_cookie(
            auth.SESSION_COOKIE,
            sid,
            max_age=int(tunables.WEB_SESSION_SECONDS),
            path=self.prefix or "/",
            httponly=True,
            samesite="Strict",
            secure=auth.came_over_tls(request.environ, self.settings.trusted_proxies),
        )
        return response

    def _logout(self, request: Request, viewer: Viewer) -> Response:
        self._take(request, viewer, "logout")
        self.sessions.end(viewer.session)
        response = self._redirect("/login" if self.settings.auth else "/")
        response.delete_cookie(auth.SESSION_COOKIE, path=self.prefix or "/")
        return response

    # --- rendering ---

    def url(self, path: str, **params: Any) -> str:
        query = urlencode(
            [(k, "" if v is True else v) for k, v in params.items() if v not in (None, False, "")]
        )
        return f"{self.prefix}{path}" + (f"?{query}" if query else "")

    def _page(
        self, request: Request, template: str, context: Mapping[str, Any], status: int = 200
    ) -> Response:
        viewer = context.get("viewer")
        text = self.templates.get_template(template).render(
            {
                "url": self.url,
                "settings": self.settings,
                "version": __version__,
                "logged_in": bool(
                    self.settings.auth is not None
                    and self.settings.auth.kind == "token"
                    and isinstance(viewer, Viewer)
                    and viewer.session
                ),
                "logout_token": (
                    self.forms.issue(self._form_owner(viewer), "logout")
                    if isinstance(viewer, Viewer) and viewer.session
                    else None
                ),
                "refresh": None,
                "nav": None,
                **context,
            }
        )
        response = Response(text, status=status, mimetype="text/html")
        response.headers["Cache-Control"] = "no-store"
        return response

    def _error_page(self, request: Request, error: HTTPException) -> Response:
        message = getattr(error, "message", None) or (error.description or error.name)
        response = self._page(
            request,
            "error.html",
            {"title": error.name, "message": re.sub(r"<[^>]+>", "", str(message))},
            error.code or 500,
        )
        if error.code == 405:
            response.headers["Allow"] = ", ".join(getattr(error, "valid_methods", None) or [])
        return response

    def _redirect(self, path: str) -> Response:
        response = Response("", status=303)
        response.headers["Location"] = self.url(path)
        return response

    def _static(self, name: str) -> Response:
        if not re.fullmatch(r"[a-z]+\.(css|js)", name):
            raise NotFound()
        try:
            body = resources.files("kongtaskd.web").joinpath("static", name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound() from None
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        response = Response(body, mimetype=mime)
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    # --- forms ---

    def _form_owner(self, viewer: Viewer | None) -> str:
        if viewer is None:
            return ""
        return f"{viewer.who}|{viewer.session or ''}"

    def _form(self, viewer: Viewer, purpose: str, data: Any = None) -> str:
        return self.forms.issue(self._form_owner(viewer), purpose, data)

    def _take(self, request: Request, viewer: Viewer, purpose: str) -> Any:
        ok, data = self.forms.take(request.form.get("csrf"), self._form_owner(viewer), purpose)
        if not ok:
            if not request.form.get("csrf"):
                raise Refused("this form has no security token; reload the page and try again")
            raise Refused(
                "this form was already used, has expired, or is not yours: nothing was done; "
                "reload the page to act again"
            )
        return data

    def _refuse_read_only(self) -> None:
        if self.settings.read_only:
            raise Refused("this dashboard is read-only (web.read_only: true): no actions")

    # --- pages ---

    def _overview(self, request: Request, viewer: Viewer) -> Response:
        overview = self.data.overview()
        pools = self.data.pools()
        stats = self.data.task_stats()
        late_after = self.data.late_after
        problems: list[str] = []
        for pool in pools:
            if pool.stale:
                problems.append(
                    f"daemon {pool.pool_id} on {pool.hostname} has not sent a heartbeat for "
                    f"{_duration(pool.seconds_since_beat)} (stale: its jobs will be released)"
                )
            elif pool.seconds_since_beat > late_after:
                problems.append(
                    f"daemon {pool.pool_id} on {pool.hostname} is late with its heartbeat "
                    f"({_duration(pool.seconds_since_beat)})"
                )
        for queue in overview.stuck_queues:
            problems.append(
                f"queue {queue['queue_name']} has been held by {queue['locked_by']} for "
                f"{_duration(queue['held_seconds'])}: every job behind it waits"
            )
        stat_charts: list[str] = []
        if isinstance(stats, TaskStats):
            for summary, usual in stats.failing(
                min_attempts=tunables.WEB_FAILING_MIN_ATTEMPTS,
                factor=tunables.WEB_FAILING_FACTOR,
                floor=tunables.WEB_FAILING_FLOOR,
            ):
                problems.append(
                    f"task {summary.task} is failing above its usual rate: "
                    f"{summary.failed + summary.retried} of {summary.attempts} attempts in the "
                    f"last hour ({_percent(summary.failure_rate)}, usually {_percent(usual)})"
                )
            for title, since in (
                ("last hour", stats.now - dt.timedelta(hours=1)),
                ("last day", stats.now - dt.timedelta(days=1)),
            ):
                points = stats.per_minute(since)
                stat_charts.append(
                    charts.series_line(
                        [(x, attempts) for x, attempts, _ in points],
                        width=480,
                        label=f"attempts per minute, {title}",
                    )
                )
                stat_charts.append(
                    charts.series_line(
                        [(x, failed) for x, _, failed in points],
                        width=480,
                        label=f"failed attempts per minute, {title}",
                    )
                )
        else:
            # No statistics table (graphile-worker only): the newest jobs are all there is.
            for row in overview.tasks:
                if row.in_window >= 20 and row.with_error * 2 >= row.in_window:
                    problems.append(
                        f"task {row.task}: {row.with_error} of its {row.in_window} newest jobs "
                        "failed their last attempt"
                    )
        chart = charts.state_bars(
            [
                (
                    row.task,
                    [
                        row.ready.value,
                        row.scheduled.value,
                        row.retrying.value,
                        row.running,
                        row.failed,
                    ],
                )
                for row in overview.tasks[:30]
            ],
            labels=("ready", "scheduled", "retrying", "running", "failed"),
        )
        return self._page(
            request,
            "overview.html",
            {
                "title": "Overview",
                "nav": "overview",
                "viewer": viewer,
                "o": overview,
                "now": overview.probe.now,
                "pools": pools,
                "stats": stats,
                "stat_rows": _stat_rows(stats),
                "pauses": self.data.pauses(),
                "steer_form": self._steer_forms(viewer),
                "stat_charts": stat_charts,
                "problems": problems,
                "chart": chart,
                "refresh": self.settings.refresh,
                "window_rows": tunables.WEB_WINDOW_ROWS,
            },
        )

    def _filters(self, request: Request) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for name in ("task", "queue", "state", "q", "key"):
            value = request.args.get(name, "")
            if len(value) > MAX_FILTER_CHARS:
                raise BadRequest(f"filter {name}: longer than {MAX_FILTER_CHARS} characters")
            if "\x00" in value:
                raise BadRequest(f"filter {name}: contains a NUL character")
            found[name] = value or None
        state = found["state"]
        if state is not None and state not in actions.STATES:
            raise BadRequest(f"filter state: {state!r} is not one of {', '.join(actions.STATES)}")
        return found

    def _int_arg(self, request: Request, name: str) -> int | None:
        text = request.args.get(name, "").strip()
        if not text:
            return None
        if not re.fullmatch(r"\d{1,19}", text) or int(text) > 2**63 - 1:
            raise BadRequest(f"{name}: expected a job id (a positive whole number), got {text!r}")
        return int(text)

    def _jobs(self, request: Request, viewer: Viewer) -> Response:
        filters = self._filters(request)
        job_id = self._int_arg(request, "id")
        if job_id is not None:
            return self._redirect(f"/jobs/{job_id}")
        if filters["key"] is not None:
            found = self.data.job_by_key(filters["key"])
            if found is not None:
                return self._redirect(f"/jobs/{found}")
            return self._page(
                request,
                "error.html",
                {
                    "title": "No such job",
                    "message": f"no job has the key {filters['key']!r}",
                    "viewer": viewer,
                },
                404,
            )
        sort = request.args.get("sort", "id")
        if sort not in SORTS:
            raise BadRequest(f"sort: {sort!r} is not one of {', '.join(SORTS)}")
        direction = request.args.get("dir", "")
        if direction not in ("", "asc", "desc"):
            raise BadRequest(f"dir: {direction!r} is not asc or desc")
        descending = SORTS[sort] if not direction else direction == "desc"
        top = self._int_arg(request, "top")
        after = None
        after_text = request.args.get("after", "")
        if after_text:
            match = re.fullmatch(r"(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?):(\d{1,19})", after_text)
            if not match:
                raise BadRequest(f"after: expected VALUE:ID, got {after_text!r}")
            after = (float(match.group(1)), int(match.group(2)))
        page = self.data.jobs_page(
            task=filters["task"],
            queue=filters["queue"],
            state=filters["state"],
            error=filters["q"],
            sort=sort,
            descending=descending,
            top=top,
            after=after,
        )
        base = {
            "task": filters["task"],
            "queue": filters["queue"],
            "state": filters["state"],
            "q": filters["q"],
        }
        if sort != "id":
            base["sort"] = sort
        if direction:
            base["dir"] = direction
        next_url = None
        if page.next_after is not None:
            if sort == "id":
                # Newest first by id: the window slides down with the page.
                next_url = self.url("/jobs", **base, top=page.next_after[1] - 1)
            else:
                value, last = page.next_after
                next_url = self.url("/jobs", **base, top=top, after=f"{value!r}:{last}")
        older_url = None
        if not page.window.whole_table and page.window.low is not None and page.window.low > 1:
            older_url = self.url("/jobs", **base, top=page.window.low - 1)
        filtered = any(filters[name] for name in ("task", "queue", "state", "q"))
        bulk_token = None
        if not self.settings.read_only and filtered:
            bulk_token = self._form(viewer, "bulk")
        return self._page(
            request,
            "jobs.html",
            {
                "title": "Jobs",
                "nav": "jobs",
                "viewer": viewer,
                "page": page,
                "filters": filters,
                "filtered": filtered,
                "sort": sort,
                "descending": descending,
                "sorts": list(SORTS),
                "states": actions.STATES,
                "tasks": self.data.task_names(),
                # Finished jobs are no longer in the table: the history (keep_completed)
                # answers for them, unless the filter is about waiting or failed jobs.
                "finished": (
                    self.data.recent_completed(task=filters["task"])
                    if not (filters["state"] or filters["queue"] or filters["q"])
                    else []
                ),
                "top": top,
                "next_url": next_url,
                "older_url": older_url,
                "first_url": self.url("/jobs", **base) if (top or after) else None,
                "sort_url": lambda name: self.url("/jobs", **{**base, "sort": name, "dir": None}),
                "bulk_token": bulk_token,
                "bulk_actions": list(ACTIONS),
                "now": self.data.probe().now,
                "window_rows": tunables.WEB_WINDOW_ROWS,
            },
        )

    def _job(self, request: Request, viewer: Viewer, job_id: int) -> Response:
        job = self.data.job(job_id)
        now = self.data.probe().now
        if job is None:
            history = self.data.history(job_id)
            return self._page(
                request,
                "missing.html",
                {
                    "title": f"Job {job_id}",
                    "viewer": viewer,
                    "job_id": job_id,
                    "history": history,
                    "history_kept": self.data.probe().history,
                    "now": now,
                    "nav": "jobs",
                },
                # A finished job found in the history is an answer, not a missing page.
                200 if history is not None else 404,
            )
        tokens = {}
        if not self.settings.read_only:
            tokens = {name: self._form(viewer, f"job:{job_id}:{name}") for name in ACTIONS}
        return self._page(
            request,
            "job.html",
            {
                "title": f"Job {job_id}",
                "nav": "jobs",
                "viewer": viewer,
                "job": job,
                "now": now,
                "payload": (pretty_json(job.payload) if self.settings.show_payloads else None),
                "tokens": tokens,
            },
        )

    def _run_at(self, request: Request) -> dt.datetime | None:
        text = request.form.get("run_at", "").strip()
        if not text:
            return None
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(
                f"run_at: {text!r} is not an ISO 8601 time (e.g. 2026-11-23T09:00:00Z)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)  # the form says times are UTC
        return moment

    def _priority(self, request: Request) -> int | None:
        text = request.form.get("priority", "").strip()
        if not text:
            return None
        if not re.fullmatch(r"-?\d{1,5}", text) or not -32768 <= int(text) <= 32767:
            raise BadRequest(
                f"priority: expected a whole number from -32768 to 32767, got {text!r}"
            )
        return int(text)

    def _job_action(self, request: Request, viewer: Viewer, job_id: int, action: str) -> Response:
        if action not in ACTIONS:
            raise NotFound()
        self._refuse_read_only()
        self._take(request, viewer, f"job:{job_id}:{action}")
        run_at = self._run_at(request) if action == "reschedule" else None
        priority = self._priority(request) if action == "reschedule" else None
        if action == "reschedule" and run_at is None and priority is None:
            raise BadRequest("reschedule: give a run_at time, a priority or both")
        message = request.form.get("message", "").strip() or None if action == "fail" else None
        if request.form.get("confirmed") != "yes":
            return self._page(
                request,
                "confirm.html",
                {
                    "title": "Confirm",
                    "nav": "jobs",
                    "viewer": viewer,
                    "question": f"{action} job {job_id}?",
                    "target": self.url(f"/jobs/{job_id}/{action}"),
                    "token": self._form(viewer, f"job:{job_id}:{action}"),
                    "fields": {
                        "run_at": request.form.get("run_at", ""),
                        "priority": request.form.get("priority", ""),
                        "message": request.form.get("message", ""),
                    },
                    "cancel": self.url(f"/jobs/{job_id}"),
                },
            )
        result = self._apply(
            viewer,
            ACTIONS[action],
            actions.Ids((job_id,)),
            run_at=run_at,
            priority=priority,
            message=message,
        )
        return self._page(
            request,
            "done.html",
            {
                "title": "Done",
                "nav": "jobs",
                "viewer": viewer,
                "summary": result.summary(),
                "problems": result.problems(),
                "back": self.url(f"/jobs/{job_id}"),
            },
        )

    def _steer_task(self, request: Request, viewer: Viewer, name: str, verb: str) -> Response:
        return self._steer(request, viewer, "task", name, verb)

    def _steer_queue(self, request: Request, viewer: Viewer, name: str, verb: str) -> Response:
        return self._steer(request, viewer, "queue", name, verb)

    def _steer_forms(self, viewer: Viewer) -> Callable[[str, str, str], str] | None:
        """For templates: the one-time token of a task's or queue's pause/resume form (None
        on a read-only dashboard: no forms)."""
        if self.settings.read_only:
            return None
        return lambda kind, name, verb: self._form(viewer, f"{kind}:{name}:{verb}")

    def _steer(self, request: Request, viewer: Viewer, kind: str, name: str, verb: str) -> Response:
        if verb not in STEERS:
            raise NotFound()
        if len(name) > MAX_FILTER_CHARS or "\x00" in name:
            raise BadRequest(f"{kind}: too long or contains a NUL character")
        self._refuse_read_only()
        purpose = f"{kind}:{name}:{verb}"
        self._take(request, viewer, purpose)
        # The name percent-encoded, as the pages' forms write it ("?", "#", "%" in names).
        path = f"/{kind}s/{quote(name, safe='/')}/{verb}"
        back = self.url("/queues") if kind == "queue" else self.url("/")
        if request.form.get("confirmed") != "yes":
            return self._page(
                request,
                "confirm.html",
                {
                    "title": "Confirm",
                    "nav": "queues" if kind == "queue" else "overview",
                    "viewer": viewer,
                    "question": f"{verb} {kind} {name} on every daemon?",
                    "target": self.url(path),
                    "token": self._form(viewer, purpose),
                    "fields": {},
                    "cancel": back,
                },
            )
        what = STEERS[verb]
        with self.data.pool.connection() as conn:
            changed = actions.steer(
                conn,
                self.data.schema,
                what,
                tasks=[name] if kind == "task" else [],
                queues=[name] if kind == "queue" else [],
                who=viewer.who,
            )
        self.data.cache.clear()
        state = "paused" if what is actions.Steer.PAUSE else "not paused"
        summary = (
            f"{what.value} {kind} {name}"
            if changed.changed
            else f"{kind} {name} was already {state}"
        )
        return self._page(
            request,
            "done.html",
            {
                "title": "Done",
                "nav": "queues" if kind == "queue" else "overview",
                "viewer": viewer,
                "summary": summary,
                "problems": None,
                "back": back,
            },
        )

    def _apply(
        self, viewer: Viewer, action: actions.Action, selection: actions.Selection, **options: Any
    ) -> actions.ActionResult:
        with self.data.pool.connection() as conn:
            result = actions.apply(
                conn,
                self.data.schema,
                action,
                selection,
                who=viewer.who,
                stale_after=self.data.stale_after,
                **options,
            )
        self.data.cache.clear()  # the next page shows what the action did
        return result

    def _bulk(self, request: Request, viewer: Viewer) -> Response:
        self._refuse_read_only()
        if request.form.get("confirmed") == "yes":
            snapshot = self._take(request, viewer, "bulk-confirm")
            return self._bulk_run(request, viewer, snapshot)
        self._take(request, viewer, "bulk")
        action = request.form.get("action", "")
        if action not in ACTIONS:
            raise BadRequest(f"action: {action!r} is not one of {', '.join(ACTIONS)}")
        values = {}
        for name in ("task", "queue", "state", "q"):
            value = request.form.get(name, "")
            if len(value) > MAX_FILTER_CHARS or "\x00" in value:
                raise BadRequest(f"filter {name}: too long or contains a NUL character")
            values[name] = value or None
        if not any(values.values()):
            raise BadRequest("a bulk action needs a filter (task, queue, state or error text)")
        if values["state"] is not None and values["state"] not in actions.STATES:
            raise BadRequest(
                f"filter state: {values['state']!r} is not one of {', '.join(actions.STATES)}"
            )
        run_at = self._run_at(request) if action == "reschedule" else None
        priority = self._priority(request) if action == "reschedule" else None
        if action == "reschedule" and run_at is None and priority is None:
            raise BadRequest("reschedule: give a run_at time, a priority or both")
        chosen = actions.JobFilter(
            task=values["task"], queue=values["queue"], state=values["state"], error=values["q"]
        )
        with self.data.pool.connection() as conn:
            upto = actions.highest_id(conn, self.data.schema)
            selection = actions.Matching(chosen, upto)
            count = actions.count_matching(conn, self.data.schema, selection)
        snapshot = {
            "action": action,
            "filter": chosen,
            "upto": upto,
            "count": count,
            "run_at": run_at,
            "priority": priority,
        }
        return self._page(
            request,
            "bulk.html",
            {
                "title": "Confirm bulk action",
                "nav": "jobs",
                "viewer": viewer,
                "action": action,
                "filter": chosen,
                "count": count,
                "upto": upto,
                "run_at": run_at,
                "priority": priority,
                "token": self._form(viewer, "bulk-confirm", snapshot) if count else None,
                "batch": tunables.ACTION_BATCH,
                "cancel": self.url(
                    "/jobs",
                    task=values["task"],
                    queue=values["queue"],
                    state=values["state"],
                    q=values["q"],
                ),
            },
        )

    def _bulk_run(self, request: Request, viewer: Viewer, snapshot: dict[str, Any]) -> Response:
        selection = actions.Matching(snapshot["filter"], snapshot["upto"])
        result = self._apply(
            viewer,
            ACTIONS[snapshot["action"]],
            selection,
            run_at=snapshot["run_at"],
            priority=snapshot["priority"],
        )
        changed = len(result.changed)
        summary = (
            f"{result.action} {changed:,} of the {snapshot['count']:,} jobs that matched "
            f"{selection.describe()}"
        )
        problems = None
        if result.running:
            problems = f"{len(result.running):,} were running and were left alone"
        return self._page(
            request,
            "done.html",
            {
                "title": "Done",
                "nav": "jobs",
                "viewer": viewer,
                "summary": summary,
                "problems": problems,
                "back": self.url(
                    "/jobs", task=snapshot["filter"].task, queue=snapshot["filter"].queue
                ),
            },
        )

    def _daemons(self, request: Request, viewer: Viewer) -> Response:
        probe = self.data.probe()
        return self._page(
            request,
            "daemons.html",
            {
                "title": "Daemons",
                "nav": "daemons",
                "viewer": viewer,
                "probe": probe,
                "now": probe.now,
                "pools": self.data.pools(),
                "details": self.data.daemon_details(),
                "running": self.data.running_jobs(),
                "stale_after": self.data.stale_after,
                "refresh": self.settings.refresh,
                "window_rows": tunables.WEB_WINDOW_ROWS,
            },
        )

    def _queues(self, request: Request, viewer: Viewer) -> Response:
        after = request.args.get("after", "")
        prefix = request.args.get("prefix", "") or None
        for name, value in (("after", after), ("prefix", prefix or "")):
            if len(value) > MAX_FILTER_CHARS or "\x00" in value:
                raise BadRequest(f"{name}: too long or contains a NUL character")
        held = request.args.get("held", "") not in ("", "0")
        rows, more = self.data.queues_page(after=after, prefix=prefix, held=held)
        probe = self.data.probe()
        return self._page(
            request,
            "queues.html",
            {
                "title": "Queues",
                "nav": "queues",
                "viewer": viewer,
                "rows": rows,
                "now": probe.now,
                "prefix": prefix,
                "held": held,
                "pauses": [p for p in self.data.pauses() if p.kind == "queue"],
                "steer_form": self._steer_forms(viewer),
                "next_url": (
                    self.url("/queues", after=rows[-1]["queue_name"], prefix=prefix, held=held)
                    if more
                    else None
                ),
                "first_url": self.url("/queues", prefix=prefix, held=held) if after else None,
                "window_rows": tunables.WEB_WINDOW_ROWS,
            },
        )

    def _cron(self, request: Request, viewer: Viewer) -> Response:
        after = request.args.get("after", "")
        if len(after) > MAX_FILTER_CHARS or "\x00" in after:
            raise BadRequest("after: too long or contains a NUL character")
        rows, more = self.data.crontabs(after=after)
        probe = self.data.probe()
        return self._page(
            request,
            "cron.html",
            {
                "title": "Cron",
                "nav": "cron",
                "viewer": viewer,
                "rows": rows,
                "next_runs": self.data.cron_next_runs(),
                "now": probe.now,
                "next_url": self.url("/cron", after=rows[-1]["identifier"]) if more else None,
                "first_url": self.url("/cron") if after else None,
            },
        )


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the dashboard on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
