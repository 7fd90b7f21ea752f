"""``manage.py kongtaskd``."""
