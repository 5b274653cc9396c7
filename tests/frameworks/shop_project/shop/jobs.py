"""The shop's handlers: they read and write Orders through the ORM, as a Celery task of the project would."""
import os
import time

from greenjobs import current_job, handler

from shop.models import Order


@handler("shop.touch")
def touch(order_id):
    """An io job: read the order and update it through the ORM."""
    order = Order.objects.get(pk=order_id)
    Order.objects.filter(pk=order.pk).update(touched=order.touched + 1, status="touched")
    return order.pk


@handler("shop.count", kind="cpu", timeout=60)
def count(status="touched"):
    """A cpu job running ORM queries in a worker process."""
    return Order.objects.filter(status=status).count()


@handler("shop.env")
def env():
    """The server process's time zone as handlers see it, and an application setting of [app:main]."""
    return {"TZ": os.environ.get("TZ"), "tzname": list(time.tzname), "pid": os.getpid(),
            "price_api": current_job.settings.app.get("shop.price_api")}
