"""The "support" group: sees everything, retries and cancels, edits no money and deletes nothing."""

SUPPORT_GROUP = "support"
SUPPORT_EXTRA = [
    ("orders", "retry_saga"),
    ("orders", "cancel_order"),
    ("catalog", "release_reservation"),
]
VIEW_APPS = ["orders", "catalog", "payments", "shipping", "notifications", "audit"]


def ensure_support_group(**kwargs):
    """Create or refresh the group (post_migrate: permissions exist by then)."""
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.get_or_create(name=SUPPORT_GROUP)
    view = Permission.objects.filter(content_type__app_label__in=VIEW_APPS, codename__startswith="view_")
    extra = [
        Permission.objects.filter(content_type__app_label=app, codename=codename).first()
        for app, codename in SUPPORT_EXTRA
    ]
    group.permissions.set([*view, *[p for p in extra if p is not None]])
    return group
