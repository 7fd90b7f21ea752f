-- The SQLAlchemy recipe's table (the queue's own schema is installed by `kongtaskd migrate`).
create table if not exists report_requests (
  id bigserial primary key,
  month text not null unique,
  built_by_job bigint
);
