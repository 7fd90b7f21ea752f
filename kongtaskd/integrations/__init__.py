"""kongtaskd's built-in job hooks (``kongtaskd.hooks``): Django, Sentry, OpenTelemetry.

Each module imports its library inside its functions only, so a child whose app uses none
of them pays nothing.
"""
