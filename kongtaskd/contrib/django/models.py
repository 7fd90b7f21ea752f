"""No models yet (the admin's unmanaged model of graphile-worker's ``jobs`` view comes with
the dashboard's action layer). The module exists because Django sends ``post_migrate``,
which installs kongtaskd's schema, only to apps that have one."""
