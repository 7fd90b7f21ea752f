-- The FastAPI recipe's tables (the queue's own schema is installed by `kongtaskd migrate`).
create table if not exists orders (
  id bigserial primary key,
  item text not null,
  quantity integer not null
);
create table if not exists stock (
  item text primary key,
  available integer not null
);
create table if not exists shipments (
  order_id bigint not null references orders (id),
  placed_at timestamptz not null,
  job_id bigint not null
);
