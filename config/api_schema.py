"""The API's OpenAPI schema class (apart from config.api, which DRF imports while it starts)."""

from drf_spectacular import openapi
from drf_spectacular.plumbing import is_list_serializer


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's schema, saying two more things the server enforces.

    A nested ``many=True`` serializer's ``min_length``/``allow_empty=False``/``max_length``
    become ``minItems``/``maxItems``; a serializer with ``refuses_unknown_fields`` gets
    ``additionalProperties: false`` on its request component.
    """

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if schema is not None and is_list_serializer(field) and schema.get("type") == "array":
            if field.min_length is not None or not field.allow_empty:
                schema["minItems"] = max(field.min_length or 0, 0 if field.allow_empty else 1)
            if field.max_length is not None:
                schema["maxItems"] = field.max_length
        return schema

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and getattr(serializer, "refuses_unknown_fields", False):
            schema["additionalProperties"] = False
        return schema
