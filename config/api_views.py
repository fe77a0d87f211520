"""API views that belong to no app (authentication) and OpenAPI helpers."""

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from knox.models import AuthToken
from knox.views import LogoutView as KnoxLogoutView
from rest_framework import serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

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


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()
    expiry = serializers.DateTimeField(allow_null=True)


class TokenCreateView(APIView):
    """Exchange a username and password for an API token (hashed at rest, expiring, revocable)."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_scope = "auth"

    @extend_schema(
        request=AuthTokenSerializer,
        responses={200: TokenSerializer, 400: error("Wrong credentials or missing fields."), 429: COMMON_ERRORS[429]},
        tags=["auth"],
    )
    def post(self, request):
        serializer = AuthTokenSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        instance, token = AuthToken.objects.create(user=serializer.validated_data["user"])
        return Response(TokenSerializer({"token": token, "expiry": instance.expiry}).data)


class LogoutView(KnoxLogoutView):
    """Revoke the token this request authenticated with."""

    @extend_schema(request=None, responses={204: None, **COMMON_ERRORS}, tags=["auth"])
    def post(self, request, format=None):
        return super().post(request, format)
