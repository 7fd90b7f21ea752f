-- /jobs?key=K: the job with this key (unique index jobs_key_key1: one probe).
select jobs.id from {{schema}}._private_jobs as jobs where jobs.key = %(key)s::text
