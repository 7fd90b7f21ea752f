from django.db import transaction
from django.http import HttpRequest, JsonResponse

from orders.models import Order
from orders.tasks import confirm_order, email_receipt


def place_order(request: HttpRequest) -> JsonResponse:
    """Create an order and enqueue its background work in the same transaction: if anything
    below fails (here on ?fail=1), neither the order nor its jobs exist."""
    with transaction.atomic():
        order = Order.objects.create(item=request.GET.get("item", "book"))
        confirmation = confirm_order.enqueue(order.id)
        receipt = email_receipt.enqueue(order.id)
        if request.GET.get("fail"):
            raise RuntimeError("payment declined")
    return JsonResponse({"order": order.id, "jobs": [confirmation.id, receipt.id]})
