"""Schemathesis hooks of docs/openapi-check.py.

One accepted difference, nothing else: chatd answers a method it serves on no
path at all (TRACE, CONNECT, ...) with 501, as RFC 9110 15.6.2 says a server
does for a method it does not implement for any resource; schemathesis expects
405 there (a method the resource does not allow). A 405 with `Allow` is still
required for every method chatd does serve elsewhere (GET, POST, PUT, PATCH,
DELETE, HEAD, OPTIONS).
"""
import schemathesis

NOT_IMPLEMENTED = {"TRACE", "CONNECT", "QUERY"}


@schemathesis.hook
def filter_failure(context, failure, case, response):
    method = (response.request.method or "").upper()
    return not (method in NOT_IMPLEMENTED and response.status_code == 501)
