-- A graceful exit: this pool ($1) holds nothing any more; remove its heartbeat row.
delete from {{schema}}._kongtaskd_heartbeats where pool_id = $1
returning pool_id
