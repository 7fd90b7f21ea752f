-- The highest job id right now: a bulk action acts on the matching jobs up to this id, the
-- set as it was when the operator confirmed (jobs added later are not touched). The
-- primary key answers it with one index probe.
select max(jobs.id) from {{schema}}._private_jobs as jobs
