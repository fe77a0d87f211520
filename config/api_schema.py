"""The API's OpenAPI schema class (apart from config.api, which DRF imports while it starts)."""

from drf_spectacular import openapi
from drf_spectacular.plumbing import is_list_serializer
from rest_framework import serializers

# DRF refuses NUL in text (400), and trims it before checking it is not blank: the characters
# Python's str.strip() removes are spelt out, so that ECMA and Python regular expressions agree.
_WHITESPACE = "\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
NOT_BLANK_NO_NUL = f"^[^\\x00]*[^\\x00{_WHITESPACE}][^\\x00]*$"


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's schema, saying two more things the server enforces.

    A nested ``many=True`` serializer's ``min_length``/``allow_empty=False``/``max_length``
    become ``minItems``/``maxItems``; a serializer with ``refuses_unknown_fields`` gets
    ``additionalProperties: false`` on its request component; request text gets a ``pattern``:
    no NUL, and, where it may not be blank, not only whitespace either.
    """

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if (
            direction == "request"
            and isinstance(field, serializers.CharField)
            and schema is not None
            and schema.get("type") == "string"
            and "pattern" not in schema
            and "enum" not in schema
        ):
            if field.trim_whitespace and not field.allow_blank:
                schema["pattern"] = NOT_BLANK_NO_NUL
            else:  # not a pattern: drf-spectacular would make a blank-allowed one a oneOf with ""
                schema["not"] = {"pattern": "\\x00"}
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
