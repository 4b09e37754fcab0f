#!/usr/bin/env python3
"""Fails when the server's routes and docs/openapi.yaml differ.

The routes are read from the source, as the router is built from them: every
`ChatAPI.Route` in Sources/ChatFrontend/Routes/*.swift (`.init(.get, "/path/:id/", ...)`),
and the WebSocket endpoint kinds the handshake accepts (`parts[1] == "chat"` in
ChatChannel.swift). HEAD is served wherever GET is (ChatAPI.buildRouter), so it
is not listed in either. Every route must be an operation of the document, and
every operation a route (a stale operation fails too); every WebSocket kind must
be an endpoint of `x-websocket`.

    docs/openapi-routes.py [--root .]
"""
import argparse
import glob
import os
import re
import sys

import yaml

ROUTE = re.compile(r'(?:\.init|Route)\(\s*\.(get|post|put|patch|delete|head|options)\s*,\s*"([^"]+)"')
WS_KIND = re.compile(r'parts\[1\]\s*==\s*"(\w+)"')
METHODS = {"get", "post", "put", "patch", "delete", "head", "options", "trace"}


def shape(path):
    """A path with its parameters unnamed: `/rooms/:room/` and `/rooms/{room_id}/` are one."""
    return re.sub(r"\{[^}/]+\}|:[^/]+", "{}", path)


def server_routes(root):
    routes = set()
    for file in sorted(glob.glob(os.path.join(root, "Sources/ChatFrontend/Routes/*.swift"))):
        for method, path in ROUTE.findall(open(file).read()):
            routes.add((method.upper(), shape(path)))
    channel = open(os.path.join(root, "Sources/ChatFrontend/ChatChannel.swift")).read()
    kinds = set(WS_KIND.findall(channel))
    return routes, kinds


def document_routes(spec):
    operations = set()
    for path, item in spec.get("paths", {}).items():
        for method in item:
            if method in METHODS:
                operations.add((method.upper(), shape(path)))
    endpoints = {shape(p) for p in spec.get("x-websocket", {}).get("endpoints", {})}
    return operations, endpoints


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser.add_argument("--spec", default=None)
    args = parser.parse_args()
    spec = yaml.safe_load(open(args.spec or os.path.join(args.root, "docs/openapi.yaml")))
    routes, kinds = server_routes(args.root)
    operations, endpoints = document_routes(spec)
    if len(routes) < 10 or not kinds:
        sys.exit(f"found only {len(routes)} routes and {len(kinds)} WebSocket kinds in the source: has the route syntax changed?")
    problems = [f"route not in docs/openapi.yaml: {m} {p}" for m, p in sorted(routes - operations)]
    problems += [f"operation the server does not route: {m} {p}" for m, p in sorted(operations - routes)]
    problems += [f"WebSocket endpoint not in x-websocket: /ws/{k}/{{}}/" for k in sorted(kinds)
                 if f"/ws/{k}/{{}}/" not in endpoints]
    problems += [f"x-websocket endpoint the server does not accept: {e}" for e in sorted(endpoints)
                 if not any(e == f"/ws/{k}/{{}}/" for k in kinds)]
    for problem in problems:
        print(problem)
    print(f"{len(routes)} routes, {len(operations)} operations, {len(kinds)} WebSocket endpoints: "
          + ("differ" if problems else "the same"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
