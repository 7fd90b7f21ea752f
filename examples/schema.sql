-- The example shop's tables, and a trigger that enqueues a job for every new order.
--
-- Apply after the queue schema exists (kongtaskd migrate, or a daemon has started):
--   psql "$DATABASE_URL" -f examples/schema.sql
-- then any INSERT INTO shop_orders, from any language or tool, enqueues order_placed
-- (examples/shop.py) in the inserting transaction: a rolled-back order leaves no job.

create table if not exists shop_orders (
    id bigint generated always as identity primary key,
    customer_email text not null,
    items text[] not null default '{}',
    created_at timestamptz not null default now(),
    confirmed_at timestamptz
);

create table if not exists shop_users (
    id bigint generated always as identity primary key,
    email text not null unique,
    created_at timestamptz not null default now()
);

create or replace function shop_enqueue_order_placed() returns trigger
language plpgsql as $$
begin
    -- graphile-worker's own add_job: the same function kongtaskd.add_job calls. The job
    -- key makes a second enqueue for the same order (a replayed insert) replace the
    -- first instead of confirming the order twice.
    perform graphile_worker.add_job(
        'order_placed',
        json_build_object('order_id', new.id),
        job_key => 'order-placed-' || new.id,
        max_attempts => 10
    );
    return new;
end;
$$;

drop trigger if exists shop_order_placed on shop_orders;
create trigger shop_order_placed
    after insert on shop_orders
    for each row execute function shop_enqueue_order_placed();
