"""Management commands of kongtaskd.contrib.django."""
