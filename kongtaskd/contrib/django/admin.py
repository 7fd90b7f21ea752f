"""The jobs in Django's admin: list, filter, search, and act on them through
:mod:`kongtaskd.actions`, the one action layer the CLI's ``jobs`` verbs and the dashboard use.

* The list reads graphile-worker's ``jobs`` view (:class:`~.models.Job`), newest first over
  the primary key; filters by task, queue and state (:func:`~.models.state_expression`,
  the CLI's state rules) and search by id or exact key.
* Usable at 1M jobs: the paginator never counts (:class:`EstimatedCountPaginator`), the
  filters' choices come from graphile-worker's small tasks and queues tables (never a
  DISTINCT over the jobs), and ``show_full_result_count`` is off.
* Every field is read-only; retry now, reschedule, fail permanently and remove call
  :func:`kongtaskd.actions.apply` on their own connection (the daemon's, from
  ``settings.KONGTASKD``), one transaction per batch, and its audit line names the Django
  user (``django:<username>``). Django's "delete selected" is removed: it would delete
  through the ORM, past the action layer.
* Cancel is one entry in :data:`ACTIONS` (``kongtaskd.actions.Action.CANCEL``, i.e.
  ``kongtaskd.cancel``); pause/resume act on tasks and queues, not on jobs, so they live in
  the dashboard and the CLI (``kongtaskd.actions.steer``).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import psycopg2
from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import SEARCH_VAR
from django.core.paginator import EmptyPage, Paginator
from django.db import connections
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property

from kongtaskd import actions, tunables
from kongtaskd.contrib.django import conf, db, models
from kongtaskd.contrib.django.models import Job, state_expression

# --- counting without count(*) --------------------------------------------------------------


class EstimatedCountPaginator(Paginator):
    """A paginator that never runs ``count(*)`` over the jobs.

    Up to :data:`~kongtaskd.tunables.DJANGO_ADMIN_EXACT_COUNT` jobs it is exact (one read of
    at most that many ids + 1, LIMITed). Beyond, the unfiltered list takes the planner's
    row estimate of ``_private_jobs`` (``pg_class.reltuples``) and a filtered one the
    planner's estimate of its query (EXPLAIN); pages past the real end are empty, not errors.
    """

    @cached_property
    def count(self) -> int:
        queryset: QuerySet[Any] = self.object_list
        cap = tunables.DJANGO_ADMIN_EXACT_COUNT
        seen = len(queryset.values_list("pk", flat=True)[: cap + 1])
        if seen <= cap:
            return seen
        return max(cap + 1, self._estimate(queryset))

    def _estimate(self, queryset: QuerySet[Any]) -> int:
        connection = connections[queryset.db]
        with connection.cursor() as cursor:
            if not queryset.query.where:
                schema = models.SCHEMA
                quoted = db.quoted_schema(schema, queryset.db)
                cursor.execute(
                    db.statement("django_admin_estimate", schema, queryset.db),
                    {"table": f"{quoted}._private_jobs"},
                )
                row = cursor.fetchone()
                if row and row[0] is not None and row[0] >= 0:
                    return int(row[0])
            sql, params = queryset.values("pk").query.sql_with_params()
            cursor.execute(f"explain (format json) {sql}", params)
            plan = cursor.fetchone()[0]
        if isinstance(plan, (str, bytes)):
            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"])

    def validate_number(self, number: Any) -> int:
        # An estimate can be short of the real count: a page past it is asked for, not an error.
        try:
            return super().validate_number(number)
        except EmptyPage:
            return int(number)


# --- filters --------------------------------------------------------------------------------


def _names(statement: str, request: HttpRequest) -> list[str]:
    schema = models.SCHEMA
    alias = Job.objects.db
    with connections[alias].cursor() as cursor:
        cursor.execute(
            db.statement(statement, schema, alias),
            {"limit": tunables.DJANGO_ADMIN_FILTER_CHOICES},
        )
        return [row[0] for row in cursor.fetchall()]


class TaskFilter(admin.SimpleListFilter):
    title = "task"
    parameter_name = "task"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in _names("django_admin_tasks", request)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(task_identifier=value) if value is not None else queryset


class QueueFilter(admin.SimpleListFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in _names("django_admin_queues", request)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(queue_name=value) if value is not None else queryset


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        labels = {"failed": "permanently failed"}
        return [(state, labels.get(state, state)) for state in actions.STATES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        if value not in actions.STATES:
            # One clear message instead of a silently empty list.
            raise admin.options.IncorrectLookupParameters(
                f"state: {value!r} is not one of {', '.join(actions.STATES)}"
            )
        return queryset.filter(state=value)


# --- actions --------------------------------------------------------------------------------


class JobActionForm(helpers.ActionForm):
    """The action bar, with reschedule's options beside the action menu."""

    run_at = forms.DateTimeField(
        required=False, label="run at", help_text="reschedule: new run_at (empty: keep)"
    )
    priority = forms.IntegerField(
        required=False, min_value=-32768, max_value=32767, label="priority"
    )
    message = forms.CharField(required=False, label="failure message", max_length=1000)


def _who(request: HttpRequest) -> str:
    user = getattr(request, "user", None)
    name = user.get_username() if user is not None and user.is_authenticated else "anonymous"
    return f"django:{name}"


def _run(
    request: HttpRequest,
    action: actions.Action,
    queryset: QuerySet[Any],
    **options: Any,
) -> actions.ActionResult:
    """``action`` on the chosen jobs (:func:`_selection`) through the action layer, on a
    connection of its own: each batch commits by itself, whatever transaction the request's
    ORM work is in."""
    config = conf.load()
    conn = psycopg2.connect(config.connection)
    try:
        return actions.apply(
            conn,
            config.schema,
            action,
            _selection(request, queryset, conn, config.schema),
            who=_who(request),
            stale_after=config.stale_after,
            **options,
        )
    finally:
        conn.close()


def _report(model_admin: admin.ModelAdmin, request: HttpRequest, result: Any) -> None:
    summary, problems = result.summary(), result.problems()
    if summary:
        model_admin.message_user(request, summary, messages.SUCCESS)
    if problems:
        model_admin.message_user(request, problems, messages.WARNING)
    if not summary and not problems:
        model_admin.message_user(request, "no job was changed", messages.INFO)


def _selection(
    request: HttpRequest, queryset: QuerySet[Any], conn: Any, schema: str
) -> actions.Selection:
    """What the operator chose: the ticked ids, or with "select all" every job the list's
    filters match, as :class:`kongtaskd.actions.Matching` up to the highest id now (jobs
    added later are not touched; at 1M jobs no id list is read into the request).

    The list's filters are exactly :class:`~kongtaskd.actions.JobFilter`'s task, queue, state
    and key (search); a numeric search (id or key) selects a handful of rows, taken as ids.
    """
    term = (request.GET.get(SEARCH_VAR) or "").strip()
    if request.POST.get("select_across") == "1" and not term.isdigit():
        chosen = actions.JobFilter(
            task=request.GET.get("task"),
            queue=request.GET.get("queue"),
            state=request.GET.get("state"),
            key=term or None,
        )
        return actions.Matching(chosen, actions.highest_id(conn, schema))
    return actions.Ids(tuple(queryset.order_by("id").values_list("id", flat=True)))


@admin.action(description="Retry now (attempts reset)", permissions=["change"])
def retry_now(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any]) -> None:
    _report(model_admin, request, _run(request, actions.Action.RETRY, queryset))


@admin.action(description="Reschedule (run at / priority from the bar)", permissions=["change"])
def reschedule(
    model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any]
) -> None:
    form = JobActionForm(request.POST)
    # The admin fills the action menu's choices on its own instance of the form.
    form.fields["action"].choices = model_admin.get_action_choices(request)
    if not form.is_valid():
        errors = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
        model_admin.message_user(request, f"reschedule: {errors}", messages.ERROR)
        return
    run_at: dt.datetime | None = form.cleaned_data.get("run_at")
    priority: int | None = form.cleaned_data.get("priority")
    if run_at is None and priority is None:
        model_admin.message_user(
            request, "reschedule: give a run at time, a priority, or both", messages.ERROR
        )
        return
    if run_at is not None and timezone.is_naive(run_at):
        run_at = timezone.make_aware(run_at)
    result = _run(
        request,
        actions.Action.RESCHEDULE,
        queryset,
        run_at=run_at,
        priority=priority,
    )
    _report(model_admin, request, result)


@admin.action(description="Fail permanently", permissions=["change"])
def fail_permanently(
    model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any]
) -> None:
    message = (request.POST.get("message") or "").strip() or None
    _report(
        model_admin,
        request,
        _run(request, actions.Action.FAIL, queryset, message=message),
    )


@admin.action(description="Remove", permissions=["change"])
def remove(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any]) -> None:
    _report(model_admin, request, _run(request, actions.Action.REMOVE, queryset))


@admin.action(
    description="Cancel (permanently failed; running: interrupted)", permissions=["change"]
)
def cancel(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any]) -> None:
    _report(model_admin, request, _run(request, actions.Action.CANCEL, queryset))


#: The admin's actions, each one entry of kongtaskd.actions.Action. Pause / resume act on
#: tasks and queues, not on selected jobs: they are the dashboard's and the CLI's
#: (kongtaskd.actions.steer), not rows of this changelist.
ACTIONS = [retry_now, reschedule, fail_permanently, remove, cancel]


# --- the changelist -------------------------------------------------------------------------


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "task_identifier",
        "queue_name",
        "state",
        "priority",
        "run_at",
        "attempts",
        "max_attempts",
        "short_error",
        "key",
        "locked_by",
    )
    list_filter = (TaskFilter, QueueFilter, StateFilter)
    search_fields = ("key",)  # and the id: get_search_results
    search_help_text = "a job id, or a job key (exact)"
    ordering = ("-id",)
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 100
    actions = ACTIONS
    action_form = JobActionForm

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).annotate(state=state_expression())

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in Job._meta.fields] + ["state"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        wanted = Q(key=term)
        if term.isdigit() and int(term) < 2**63:
            wanted |= Q(id=int(term))
        return queryset.filter(wanted), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Also removes Django's "delete selected", which would delete past the action layer.
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The change page is a read-only view; acting needs the change permission.
        if obj is not None:
            return False
        return super().has_change_permission(request, obj)

    @admin.display(description="state", ordering=None)
    def state(self, job: Job) -> str:
        return str(getattr(job, "state", ""))

    @admin.display(description="last error")
    def short_error(self, job: Job) -> str:
        text = (job.last_error or "").splitlines()[0] if job.last_error else ""
        return text[:120] + ("…" if len(text) > 120 else "")
