"""A plain kongtaskd handler (``KONGTASKD["tasks"]``), for work enqueued by SQL or Node."""

from orders.models import Order


def audit(payload, ctx):
    ctx.logger.info("orders so far: %d", Order.objects.count())
