from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"

    def ready(self):
        from orders import signals  # noqa: F401  (connects the post_save receiver)
