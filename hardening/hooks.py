"""schemathesis hooks for fountain (loaded through SCHEMATHESIS_HOOKS by hardening/schemathesis.sh).

search's `POST /documents/import` takes JSON lines (`application/x-ndjson`), documented as a string:
schemathesis has no serializer for that media type, so the generated string is sent as it is,
UTF-8 encoded (a generated non-string body is sent as one JSON line).
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return (json.dumps(value) + "\n").encode("utf-8")
