-- PLACEHOLDER on branch 'caps' only: migration 5 belongs to engineer W2 (settle writes,
-- history). It exists here so that 6 can be numbered without a gap; the integrator takes
-- W2's 000005.sql over this file.
select 1;
