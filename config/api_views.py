"""API views that belong to no app (authentication) and OpenAPI helpers."""

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from knox.views import LogoutView as KnoxLogoutView
from rest_framework import exceptions, serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from config.auth import api_token_create, lockout_seconds_left

ERROR_SCHEMA = inline_serializer(
    "Error",
    {
        "error": inline_serializer(
            "ErrorBody",
            {
                "status": serializers.IntegerField(),
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "fields": serializers.DictField(
                    child=serializers.ListField(child=serializers.CharField()), required=False
                ),
                "retry_after": serializers.IntegerField(required=False),
            },
        )
    },
)


def error(description):
    return OpenApiResponse(ERROR_SCHEMA, description=description)


COMMON_ERRORS = {401: error("Not authenticated."), 429: error("Throttled; see Retry-After.")}


class LoginLockedOut(exceptions.Throttled):
    default_detail = "Too many failed logins: this login is locked."
    default_code = "login_locked_out"


class LoginSerializer(AuthTokenSerializer):
    # No longer than any username can be (django-axes records what was tried).
    username = serializers.CharField(
        label="Username", write_only=True, max_length=get_user_model()._meta.get_field("username").max_length
    )


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()
    expiry = serializers.DateTimeField(allow_null=True)


class TokenCreateView(APIView):
    """Exchange a username and password for an API token (hashed at rest, expiring, revocable).

    A user holds at most ``API_TOKEN_LIMIT_PER_USER`` live tokens: a new one revokes the oldest.

    Repeated failures lock the login (django-axes, through ``authenticate``): a locked
    login is refused with 429 and ``Retry-After``, even with the right password.
    """

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_scope = "auth"

    @extend_schema(
        request=LoginSerializer,
        responses={
            200: TokenSerializer,
            400: error("Wrong credentials or missing fields."),
            429: error("Throttled, or the login is locked after repeated failures; see Retry-After."),
        },
        tags=["auth"],
    )
    def post(self, request):
        serializer = LoginSerializer(data=request.data, context={"request": request})
        if not serializer.is_valid():
            # authenticate() ran with this request: django-axes flags it when the login is locked.
            if getattr(request, "axes_locked_out", False):
                raise LoginLockedOut(wait=lockout_seconds_left(request, getattr(request, "axes_credentials", None)))
            raise exceptions.ValidationError(serializer.errors)
        user = serializer.validated_data["user"]
        instance, token = api_token_create(user=user)
        user_logged_in.send(sender=user.__class__, request=request, user=user)  # last_login; axes resets failures
        return Response(TokenSerializer({"token": token, "expiry": instance.expiry}).data)


class LogoutView(KnoxLogoutView):
    """Revoke the token this request authenticated with."""

    @extend_schema(request=None, responses={204: None, **COMMON_ERRORS}, tags=["auth"])
    def post(self, request, format=None):
        return super().post(request, format)
