from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.db.models.signals import post_migrate

        from . import receivers
        from .permissions import ensure_support_group

        receivers.connect()
        from config import metrics

        metrics.connect()
        # After every app: the permissions of apps migrated later must exist too.
        post_migrate.connect(ensure_support_group, dispatch_uid="orders.support_group")
