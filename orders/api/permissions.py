"""The API asks for the admin's permissions: the same codenames, from the same users (staff).

A view lists, per action, the permission the admin asks for the same operation::

    staff_permissions = {"ship": "orders.ship_order"}
    foreign_object_permissions = {"cancel": "orders.cancel_order"}  # only on another user's order

Actions not listed need an authenticated user only. A refusal is a 403 naming the permission.
"""

from rest_framework.permissions import BasePermission


def has_staff_perm(user, perm) -> bool:
    """What the admin asks: an active staff user holding ``perm`` (superusers hold every one)."""
    return bool(user and user.is_authenticated and user.is_active and user.is_staff and user.has_perm(perm))


def can_see_every_order(user) -> bool:
    """Staff who may view orders in the admin see every order through the API too; others their own."""
    return has_staff_perm(user, "orders.view_order")


class StaffActionPermission(BasePermission):
    def has_permission(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return False
        perm = getattr(view, "staff_permissions", {}).get(getattr(view, "action", None))
        return perm is None or self._allowed(request.user, perm)

    def has_object_permission(self, request, view, obj):
        perm = getattr(view, "foreign_object_permissions", {}).get(getattr(view, "action", None))
        if perm is None or getattr(obj, "customer_id", None) == request.user.pk:
            return True
        return self._allowed(request.user, perm)

    def _allowed(self, user, perm):
        if has_staff_perm(user, perm):
            return True
        self.message = f"Staff with the {perm} permission only."  # read by DRF's permission_denied
        return False
