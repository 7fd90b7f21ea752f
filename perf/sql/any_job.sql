-- Is any job left (the queue scenarios' drain poll: cheaper than a count every 50 ms)?
select exists (select 1 from graphile_worker._private_jobs)
