"""The `ortserve` command line client: a room of its own inside the package, because it shares nothing
with the server around it. It talks to a running server over HTTP, using the Python standard library
only, and imports nothing of the service (tests/api/test_client.py holds it to that)."""

from service.client.cli import main

__all__ = ["main"]
