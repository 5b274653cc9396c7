"""A new order is confirmed by a greenjobs job, submitted only once its row is committed."""
from django.db.models.signals import post_save
from django.dispatch import receiver

from greenjobs_client.django import submit_on_commit
from orders.models import Order


@receiver(post_save, sender=Order)
def confirm_new_order(sender, instance, created, **kwargs):
    if created:
        submit_on_commit("echo", kwargs={"order_ref": instance.ref, "total": instance.total},
                         idempotency_key=f"order-{instance.ref}-confirm")
