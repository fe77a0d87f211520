"""The API's request parser: DRF's JSON parser, refusing absurd nesting with a 400.

Its own module, importing nothing of DRF's views: ``rest_framework.views`` loads the parser
classes named in ``REST_FRAMEWORK`` when it is first imported, so a module that imports the
views must not be the one that defines them.
"""

from rest_framework import exceptions, parsers

MAX_JSON_DEPTH = 32


def nesting_exceeds(data, limit):
    """Whether ``data`` (parsed JSON) nests lists and objects deeper than ``limit``; no recursion."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing bodies nested deeper than ``MAX_JSON_DEPTH`` with a 400.

    ``json`` raises ``RecursionError`` (not a ``ValueError``) on ``[[[[…`` a thousand deep,
    which DRF's parser lets through as a 500; anything nested deeper than an API body is
    refused before a serializer, a fingerprint or a log line walks it.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        message = f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels."
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(message) from None
        if nesting_exceeds(data, MAX_JSON_DEPTH):
            raise exceptions.ParseError(message)
        return data
