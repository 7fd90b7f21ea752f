-- The Flask recipe's tables (the queue's own schema is installed by `kongtaskd migrate`).
create table if not exists signups (
  id bigserial primary key,
  email text not null unique
);
create table if not exists welcome_emails (
  user_id bigint not null references signups (id),
  email text not null,
  job_id bigint not null
);
