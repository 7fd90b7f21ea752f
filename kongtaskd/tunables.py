"""Internal tunables: every timing and size the daemon uses that is not a config key.

They live here, in one place, with the reason for each value. Config keys (what users
set) are defined in ``kongtaskd.config``; these are the ones we chose for them.
"""

from __future__ import annotations

#: Longest ``last_error`` a failure stores. Tracebacks of deep stacks can be huge; the head
#: (exception type and message) and the tail (the innermost frames) are what people read.
ERROR_TEXT_MAX_CHARS = 8192

#: How long a freshly forked child may take to import its handlers and connect before the
#: supervisor gives up on it, and a zygote to import them (at start-up, for a reload, to
#: replace a lost one). Imports of big frameworks take seconds; minutes mean a hang.
CHILD_START_TIMEOUT = 60.0

#: How long a spawn request may wait for the zygote's answer (one double fork: milliseconds).
#: A zygote that takes longer is presumed hung, killed and replaced.
ZYGOTE_SPAWN_TIMEOUT = 5.0

#: A child forked by the zygote is adopted by the supervisor when the intermediate process
#: exits (microseconds later); it waits at most this long for that before it checks its
#: parent, and takes a longer wait to mean the supervisor is gone.
CHILD_ADOPTION_WAIT = 2.0

#: Back-off between attempts to replace a zygote that died (OOM-killed) when the code on
#: disk no longer imports: first delay, cap. The children keep running meanwhile.
ZYGOTE_RETRY_FIRST = 1.0
ZYGOTE_RETRY_MAX = 60.0

#: A child that dies within this many seconds of its birth died "immediately".
CHILD_RAPID_DEATH_WINDOW = 5.0

#: After this many immediate deaths in a row the supervisor stops respawning and exits:
#: something in the environment is broken and a restart loop would only hide it.
CHILD_RAPID_DEATH_LIMIT = 5

#: Seconds between a child's SIGTERM (job timeout, fast shutdown) and its SIGKILL. Long
#: enough for a handler's ``finally`` blocks, short enough that a stuck job is really gone.
CHILD_KILL_GRACE = 5.0

#: Respawn back-off after a child died: first delay, cap. Stops a crash loop from burning CPU.
RESPAWN_BACKOFF_FIRST = 0.1
RESPAWN_BACKOFF_MAX = 10.0

#: Up to this fraction is added at random to ``max_jobs_per_child``, so children that were
#: born together do not all recycle in the same second.
RECYCLE_JITTER = 0.1

#: Reconnect back-off for the supervisor's connection (and a child's): first delay, cap
#: (seconds), with jitter in [0.5, 1] like graphile-worker's listener. The cap is the
#: longest the daemon stays idle after the database is back. Measured by hand in
#: tests/acceptance/test_failover.py's set-up with the promotion 30 s after the primary
#: died: first job 9.0 and 21.2 s after it with a 30 s cap, 1.3 and 1.3 s with 5 s (at 12 s,
#: 0.7/0.8 against 4.3/4.7 s: a short outage may be caught sooner by a longer schedule, but
#: never later than the cap). A refused connect every 5 s per process costs PostgreSQL
#: nothing worth weighing against that; each failed try is one log line.
RECONNECT_BACKOFF_FIRST = 0.05
RECONNECT_BACKOFF_MAX = 5.0

#: How long shutdown keeps retrying to write outcomes that are still in memory before it
#: gives up and logs them one by one (a lost database at shutdown). Never silently dropped.
FINAL_FLUSH_DEADLINE = 30.0

#: How often the supervisor re-checks for jobs with no NOTIFY (the config's
#: ``poll_interval`` is the default); kept here only as a floor against busy loops.
MIN_POLL_INTERVAL = 0.01
#: The shortest sleep before a deadline that lies ahead (an outcome's write delay, a
#: prefetch expiry): such a deadline is met to the millisecond, where MIN_POLL_INTERVAL
#: would add up to 10 ms to a 5 ms delay.
MIN_WAKE_AHEAD = 0.001

#: Prefetch (jobs claimed before a child is free) only while the average job takes less
#: than this: then a child frees up within milliseconds and the job starts "soon". Longer
#: jobs are claimed only for idle children, so no job sits locked while another daemon
#: could run it.
PREFETCH_MAX_AVERAGE_JOB_SECONDS = 0.05

#: A prefetched job that no child took within this many seconds is handed back.
PREFETCH_MAX_WAIT = 1.0

#: While every child has work (running, or waiting in hand), a finished job's outcome may wait
#: up to this long to be written together with the outcomes that follow it: one round trip
#: for several jobs instead of one each. A daemon with few children and jobs of a few
#: milliseconds otherwise paid the settle statement's fixed cost (about 0.3-0.6 ms of server
#: CPU) once per job, and several such daemons on one database multiplied it (perf/
#: "many daemons"). Outcomes are written at once when a child needs work (the claim rides
#: along), on a failure or hand-back, when a capped task's slot comes free, at drain, and
#: whenever jobs are short enough to be batched (``BATCH_MAX_AVERAGE_JOB_SECONDS``: their
#: outcomes come many per loop turn already).
#: The cost: a job's row, and its named queue's lock, are released up to this much later
#: while the daemon is busy (graphile-worker's completeJobBatchDelay and River's batch
#: completer trade the same way), and a supervisor killed inside the window leaves those
#: jobs to be run again (at-least-once, as for any job running at a crash). 0 = at once.
OUTCOME_WRITE_DELAY = 0.005
#: ...unless this many outcomes are waiting: then they go at once (a bigger statement would
#: hold the supervisor longer than the delay saves).
OUTCOME_WRITE_BATCH = 128

#: While the settle statement is in flight, the supervisor's wait for its answer also reads
#: the children's outcomes and hands them jobs already in hand (``overlap.py``), instead of
#: leaving every child that finishes meanwhile idle for the rest of the round trip. Costs a
#: poll(2) per wake-up of that wait and psycopg2's non-blocking path for the settle; gains
#: 3-8% where handlers wait, nothing measurable for CPU-bound no-op jobs on 2 shared cores
#: (perf/results/analysis.md). False: the settle blocks the loop (the behaviour before; kept
#: for A/B measurements).
SERVE_CHILDREN_DURING_SETTLE = True

#: Inline rows: a claimed job travels to its child with the row the claim read when its
#: payload is at most this many bytes (``sql/settle.sql``), so the child starts it without
#: its own row-load round trip (about a tenth of an idle daemon's latency, and a statement
#: per batch off the database under load). Bigger payloads would cost the supervisor more in
#: copies than the round trip they save, and a child loads them itself, as it does every job
#: whose ownership no recent claim vouches for (``INLINE_ROW_MAX_AGE``). 0 turns inline
#: rows off.
INLINE_ROW_MAX_BYTES = 4096
#: A RUN frame carries at most this many bytes of rows (a batch of big rows must never
#: fill the child's socket buffer, which a non-blocking send cannot wait for); the rows
#: beyond go without, and the child loads those.
INLINE_ROWS_MAX_FRAME_BYTES = 65536

#: The supervisor's claims that carry no outcome commit without waiting for the WAL flush
#: (``sql/settle.sql``'s ``commit_mode``): on an idle daemon the flush was most of the time
#: from a job's NOTIFY to its handler (one fsync). The cost: a PostgreSQL crash or failover
#: within ``wal_writer_delay`` (200 ms by default) of such a claim, before anything else
#: flushed it, forgets the claim, and the job runs again after recovery (at-least-once, as
#: every job running at a crash already is). Outcomes are always written synchronously.
CLAIM_ASYNC_COMMIT = True

#: graphile-worker's stale-lock rule: a lock older than this (four hours) is presumed dead
#: when no kongtaskd heartbeat vouches for its pool...
STALE_LOCK_SECONDS = 4 * 3600
#: ...checked at a random interval in this range (seconds), as graphile-worker does.
STALE_LOCK_SWEEP_EVERY = (480.0, 600.0)

#: While a drain runs, ask systemd for more stop time (EXTEND_TIMEOUT_USEC) this often...
EXTEND_TIMEOUT_EVERY = 5.0
#: ...for the rest of the drain plus the kill grace plus this margin (seconds), so the
#: request outlives the time until the next one.
EXTEND_TIMEOUT_MARGIN = 5.0

#: The sd_notify STATUS= line is sent at most this often (seconds), and only when it changed.
STATUS_EVERY = 1.0

#: ``--once`` does not LISTEN: the loop looks for jobs at least this often (seconds).
ONCE_RECHECK_EVERY = 1.0

#: While children start, the supervisor looks at signals and their pipes this often.
CHILD_START_CHECK_EVERY = 0.5

#: Shutdown's retries of unwritten outcomes are at most this far apart (seconds).
FINAL_FLUSH_RETRY_MAX = 1.0

#: How long a child keeps trying to reach the database (a restart, a failover) before it
#: gives up on the job it holds and reports it failed.
CHILD_DB_RETRY_SECONDS = 120.0

#: Before a child exits (``os._exit``), the hooks' integrations get this many seconds, each,
#: to push out what they buffer (Sentry's event queue, OpenTelemetry's span processors).
#: Longer risks slowing a shutdown behind an unreachable collector; shorter loses events.
HOOK_FLUSH_SECONDS = 2.0

#: A metrics scrape must send its request and take its answer within this many seconds.
METRICS_SEND_TIMEOUT = 1.0

#: The queue-depth gauges come from a count over the jobs table, at most this often
#: (seconds), however often Prometheus scrapes: it scans the table, so keep it rare.
METRICS_QUEUE_DEPTH_EVERY = 10.0

#: Batches: while the average job takes less than this, an idle child is handed several
#: job ids at once (one row-load round trip and one pipe write for all of them)...
BATCH_MAX_AVERAGE_JOB_SECONDS = 0.002
#: ...as many as make about this much work (seconds), so a batch never holds jobs back
#: for long: a drain or a freed sibling waits at most this for the batch to end...
BATCH_TARGET_SECONDS = 0.02
#: ...and never more than this many.
BATCH_MAX_JOBS = 32
#: A claimed job's row goes with it only while the claim is at most this many seconds old
#: (and its session not lost since): the claim's lock is then the ownership check the
#: child's load would make. The bound matches a batch's: the rows of a batch are loaded
#: once, and its last job starts up to ``BATCH_TARGET_SECONDS`` later. Longer lets a job the
#: sweep took back in that window start; shorter sends more prefetched jobs without their
#: row (one load round trip per batch). jobbook's "Inline rows" has the argument.
INLINE_ROW_MAX_AGE = BATCH_TARGET_SECONDS

#: `jobs list --json` fetches its rows from a server-side cursor in batches of this many:
#: memory stays at one batch however long the list, and at a few hundred bytes a row one
#: round trip per ~200 KB of output costs next to nothing.
JOBS_LIST_BATCH = 500

#: Secrets (passwords, tokens) are scrubbed from every message, log line and process title
#: as runs of this many characters or more: libpq quotes arbitrary fragments of a mangled
#: connection string, so any such fragment of a password must go. Shorter runs stay (a
#: password's "ab" also occurs in half the words of a log); four is issue #12's bar.
SECRET_WINDOW = 4

#: Migrations: each transaction of the migrator runs with this ``lock_timeout`` (seconds).
#: A lock request waiting in PostgreSQL's queue blocks every later request that conflicts
#: with it, the application's ``add_job`` included; so a migration waits at most this long
#: per attempt, steps out of the queue, and tries again, until ``migration_lock_timeout``.
MIGRATION_LOCK_TRY = 1.0
#: ...after a pause of this many seconds, doubled per failed attempt up to the cap (with
#: jitter in [0.5, 1]): while it pauses, the queue behind the blocker drains.
MIGRATION_LOCK_RETRY_FIRST = 0.25
MIGRATION_LOCK_RETRY_MAX = 2.0
#: A migration statement running this long is checked for a lock wait (pg_blocking_pids on
#: a second connection, opened only then): cheap, and early enough for short timeouts...
MIGRATION_LOCK_PROBE_AFTER = 0.2
#: ...and again this often while it still runs, so the holder is logged soon after
#: MIGRATION_LOCK_REPORT_AFTER, not only at the next try.
MIGRATION_LOCK_PROBE_EVERY = 0.5
#: Once a migration has waited this long for a lock, the holder (pid, application_name,
#: state, query start) is logged, and again every MIGRATION_LOCK_REPORT_EVERY seconds.
MIGRATION_LOCK_REPORT_AFTER = 3.0
MIGRATION_LOCK_REPORT_EVERY = 15.0
#: While a migration waits on the database, it looks at the stop flag (SIGTERM, SIGINT,
#: SIGQUIT) this often: psycopg2 would otherwise block inside libpq, deaf to signals.
MIGRATION_POLL_TICK = 0.1
#: After cancelling the migration's statement, wait this long for the server to end it
#: (then the transaction is rolled back and the connection usable); past it the
#: connection is closed, which ends the transaction too, only later.
MIGRATION_CANCEL_GRACE = 1.0

#: A child's captured stdout/stderr (output.py): bytes per read of a pipe, and the longest
#: line logged as one record (a longer run without a newline is cut into records this long,
#: so a binary blob written to stdout cannot grow one record without bound).
OUTPUT_READ_BYTES = 65536
OUTPUT_LINE_MAX_BYTES = 16384
#: How long a job boundary waits for the output reader to finish logging a chunk; only a
#: log destination that stopped accepting writes makes it wait, and a job must not hang on it.
OUTPUT_SYNC_TIMEOUT = 2.0

#: Bulk actions (kongtaskd.actions) change at most this many jobs per transaction: each
#: batch holds its row locks for a few milliseconds, so 100k jobs never lock the table for
#: long, while one round trip per 500 jobs keeps a bulk retry of 100k to seconds.
ACTION_BATCH = 500

# --- the dashboard (kongtaskd.web) -----------------------------------------------------------

#: Connections of one dashboard process. Its pages are cached per refresh interval, so a
#: handful serves any number of viewers; the pool never grows the database's load with them.
WEB_POOL_MAX = 4

#: Worker threads of the HTTP server: more than the pool, so a request waiting for a
#: connection does not hold up static files and cached pages.
WEB_THREADS = 8

#: Pages that cannot use an index look at the newest this-many jobs (by id, from the primary
#: key) and say so: "searched the newest 20,000 jobs", with a link to the next 20,000. About
#: 30 ms per query at any table size (measured at 1M jobs; 50,000 took 80 ms, too much for
#: an overview of three such queries within 200 ms).
WEB_WINDOW_ROWS = 20_000

#: Counts on the overview stop at this many and show "10,000+": an exact count of a big
#: state would scan it whole on every refresh.
WEB_COUNT_CAP = 10_000

#: ...and all the overview's index counts together read at most this many index entries
#: (about 1 ms per thousand, measured): with many (priority, task) pairs each count gets
#: a smaller cap ("1,000+"), so the page's cost does not grow with the number of tasks.
WEB_COUNT_BUDGET = 120_000

#: At most this many (priority, task) pairs are counted on the overview; more is a schema
#: with thousands of task identifiers, and the page says it cut the list.
WEB_MAX_TASK_PAIRS = 500

#: Rows on one page of /jobs, /queues and /cron.
WEB_PAGE_ROWS = 50

#: The CSRF token of a form, and the session of a token login, expire after these seconds.
WEB_FORM_SECONDS = 3600.0
WEB_SESSION_SECONDS = 12 * 3600.0

#: Failed logins per client address allowed in WEB_LOGIN_WINDOW seconds; more get 429 until
#: the window has passed. Five is enough for typos, far too few for guessing.
WEB_LOGIN_FAILURES = 5
WEB_LOGIN_WINDOW = 300.0

#: Open forms (one-time CSRF tokens) remembered per process; the oldest go first.
WEB_MAX_FORMS = 10_000

#: A daemon whose heartbeat is older than this many heartbeat intervals (the dashboard's
#: configuration's heartbeat_interval) is drawn red on the overview before stale_after
#: declares it dead: two missed beats are a daemon in trouble, one may be a slow database.
WEB_LATE_BEATS = 2

#: A named queue held longer than this (seconds) while jobs wait behind it is a red line.
WEB_STUCK_QUEUE_SECONDS = 600.0

#: The overview's red line "task failing above its usual rate": a task whose last hour has at
#: least WEB_FAILING_MIN_ATTEMPTS attempts (fewer are noise), fails at least WEB_FAILING_FLOOR
#: of them, and at least WEB_FAILING_FACTOR times its rate over the rest of the day (the
#: statistics, kongtaskd's work only). A task that always fails half its attempts is not news.
WEB_FAILING_MIN_ATTEMPTS = 20
WEB_FAILING_FLOOR = 0.2
WEB_FAILING_FACTOR = 2.0

#: scrypt cost of `kongtaskd web hash-password` (stored in the hash, so it can be raised
#: later without breaking old hashes): N=2^15, r=8, p=1 takes 32 MiB and tens of
#: milliseconds per check. OWASP suggests N=2^17 (128 MiB); 2^15 keeps a login cheap on a
#: small host next to the daemon, and the per-client rate limit bounds online guessing.
WEB_SCRYPT_N = 2**15
WEB_SCRYPT_R = 8
WEB_SCRYPT_P = 1

#: A dashboard query running longer than this (milliseconds) is cancelled by PostgreSQL:
#: a page must never hold a connection (or the database) for long; the page shows an error.
WEB_STATEMENT_TIMEOUT_MS = 10_000

#: Answers the dashboard's cache keeps (filters make keys); expired ones go first.
WEB_CACHE_ENTRIES = 2_000

#: The Django admin's changelist counts a filtered list exactly up to this many jobs (one
#: LIMITed read of ids, never a count(*)); beyond it the paginator uses the planner's
#: estimate, as a 1M-job table cannot be counted on every page.
DJANGO_ADMIN_EXACT_COUNT = 1_000

#: At most this many task identifiers and queue names are offered in the Django admin's
#: filters (a queue per customer makes thousands); others still work as URL parameters.
DJANGO_ADMIN_FILTER_CHOICES = 200

#: Run-time histogram of the statistics (``_kongtaskd_stats.histogram``): upper bounds in
#: seconds of each bucket, the last bucket holding everything longer. Fixed, so rows of every
#: daemon and every minute add up; spaced about 1-2.5-5 per decade from 1 ms to 10 min, which
#: puts a p50/p95 estimate within a bucket of the truth for jobs from no-ops to batch work.
STATS_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0),
)

#: Rows deleted per pruning statement (statistics older than ``stats_retention``, history
#: older than ``keep_completed``). One batch runs with each heartbeat; while a batch comes back
#: full, the next one runs on the next loop turn, so a backlog (a first start after a long
#: time, a fleet completing thousands of jobs a second) is worked off without ever holding
#: locks or the loop for more than one batch (a few milliseconds).
PRUNE_BATCH = 2000

#: At most this many statistics rows (task, minute) are held in memory between heartbeats;
#: beyond it the heartbeat is brought forward. Bounds the heartbeat statement's size when a
#: fleet runs thousands of distinct tasks.
STATS_MAX_PENDING_ROWS = 1000

#: What a heartbeat row's ``details`` may list at most: children, crontab items, and task
#: identifiers or queue names of the configuration summary. Keeps the row small (a few KB)
#: whatever the concurrency or crontab size; the counts are always complete.
DETAILS_MAX_CHILDREN = 256
DETAILS_MAX_CRON_ITEMS = 200
DETAILS_MAX_LIST_ITEMS = 100

#: At start-up the supervisor NOTIFYs its own LISTEN from a second connection and waits this
#: long for it (session.py): on a direct connection it arrives in about a millisecond; on a
#: pooler in transaction mode it never does, and the daemon refuses to start rather than
#: hear no new job, cancel or pause. Generous, so a loaded server is never mistaken for one.
LISTEN_CHECK_SECONDS = 5.0
