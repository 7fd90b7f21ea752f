-- Wake every daemon's claim (kongtaskd migration 6): a capped task's job ended on this
-- daemon, so a slot is free for whichever daemon takes it first. $1: why ('slot').
select pg_notify('kongtaskd:steer', $1::text)
