"""The shop's background work as django.tasks functions; kongtaskd runs them."""

try:
    from django.tasks import task  # Django 6
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import task

from orders.models import Order, Receipt


@task()
def confirm_order(order_id: int) -> None:
    """Confirm the order, then enqueue its shipping: both commit together (the worker runs
    each task in one transaction), or neither does and the job is retried."""
    order = Order.objects.get(pk=order_id)
    order.confirmed = True
    order.save(update_fields=["confirmed"])
    ship_order.enqueue(order_id)


@task(priority=10)
def ship_order(order_id: int) -> None:
    Order.objects.filter(pk=order_id).update(shipped=True)


@task(queue_name="emails", takes_context=True)
def email_receipt(context, order_id: int) -> None:
    Receipt.objects.create(order_id=order_id, attempt=context.attempt)
