-- kongtaskd.contrib.django: whether a table exists (to_regclass: null, no error, when not),
-- for tables only some schemas have: the completed-job history exists once its migration
-- ran. `table` is the schema-qualified, quoted name.
select to_regclass(%(table)s) is not null
