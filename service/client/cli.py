"""ortserve: a command line client for a running server (`ortserve --help`, or python -m service.client --help).

Standard library only, so that it adds nothing to the service's dependencies and runs anywhere
Python does. Exit codes: 0 done, 1 the server answered an error (or /health is not ok), 2 bad usage
or unreadable input, 3 the server cannot be reached, 4 no answer within --timeout.
"""

from __future__ import annotations

import argparse
import http.client
import json
import mimetypes
import os
import re
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Iterable, Sequence

DEFAULT_URL = "http://127.0.0.1:8000"
SERVER_ERROR, USAGE, UNREACHABLE, TIMED_OUT = 1, 2, 3, 4
TEXTS_PER_REQUEST = 64  # the server's default limit for one /sentiment request (its --max-texts)
TEXT_COLUMN_WIDTH = 60


class ClientError(Exception):
    """A failure to report as one line on stderr, with its exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.message, self.exit_code = message, exit_code


class Server:
    """The HTTP side: one request, its JSON answer, and failures turned into ClientError."""

    def __init__(self, url: str, timeout: float, api_key: str | None = None):
        self.url, self.timeout, self.api_key = url.rstrip("/"), timeout, api_key

    def get(self, path: str) -> tuple[int, dict]:
        return self._send(urllib.request.Request(self.url + path, method="GET"))

    def post_json(self, path: str, body: dict) -> tuple[int, dict]:
        data = json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        return self._send(request)

    def post_file(self, path: str, field: str, filename: str, content: bytes) -> tuple[int, dict]:
        boundary = uuid.uuid4().hex
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
        data = b"".join(
            [
                f"--{boundary}\r\n".encode(),
                f'Content-Disposition: form-data; name="{field}"; filename="{quoted}"\r\n'.encode(),
                f"Content-Type: {content_type}\r\n\r\n".encode(),
                content,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method="POST",
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        return self._send(request)

    def _send(self, request: urllib.request.Request) -> tuple[int, dict]:
        request.add_header("Accept", "application/json")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, self._json(response.status, response.read())
        except urllib.error.HTTPError as answer:
            with answer:
                return answer.code, self._json(answer.code, answer.read())
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from None
        except (TimeoutError, socket.timeout):
            raise self._timed_out() from None
        except (ConnectionError, OSError) as exc:  # reset or closed mid-answer
            raise self._unreachable(exc) from None
        except http.client.HTTPException as exc:
            raise ClientError(f"{self.url} did not answer in HTTP: {exc!r}", UNREACHABLE) from None

    def _json(self, status: int, raw: bytes) -> dict:
        try:
            body = json.loads(raw)
        except ValueError:
            first_line = raw.decode(errors="replace").strip().splitlines()[:1]
            said = f": {first_line[0][:200]}" if first_line else ""
            raise ClientError(f"{self.url} answered {status} with a body that is not JSON{said}", SERVER_ERROR) from None
        if not isinstance(body, dict):
            raise ClientError(f"{self.url} answered {status} with JSON that is not an object", SERVER_ERROR)
        return body

    def _unreachable(self, reason: object) -> ClientError:
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return self._timed_out()
        if isinstance(reason, ConnectionRefusedError):
            return ClientError(
                f"cannot connect to {self.url}: connection refused; is the server running? "
                "Start it with `make serve`, or point --url (or ORTSERVE_URL) at it",
                UNREACHABLE,
            )
        return ClientError(f"cannot reach {self.url}: {reason}", UNREACHABLE)

    def _timed_out(self) -> ClientError:
        return ClientError(f"{self.url} did not answer within {self.timeout:g} s (--timeout)", TIMED_OUT)


def error_message(status: int, body: dict) -> str:
    """The service's one error shape, {"error": {"code", "message"}}; V2's {"error": "..."} too."""
    error = body.get("error")
    if isinstance(error, dict):
        code = f" {error['code']}" if error.get("code") else ""
        hint = "; give a key with ORTSERVE_API_KEY or --api-key" if status == 401 else ""
        return f"{error.get('message', 'no message')} ({status}{code}){hint}"
    if isinstance(error, str):
        return f"{error} ({status})"
    return f"the server answered {status}"


def check(status: int, body: dict) -> dict:
    if status >= 400:
        raise ClientError(error_message(status, body), SERVER_ERROR)
    return body


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], right: Sequence[bool]) -> str:
    """Aligned columns: numbers to the right, text to the left."""
    cells = [list(headers)] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(row, widths, right)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def shorten(text: str, width: int = TEXT_COLUMN_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def emit_json(body: dict) -> None:
    """One server answer per line (JSON Lines), as the server sent it."""
    print(json.dumps(body, ensure_ascii=False))


def classify(server: Server, args: argparse.Namespace) -> int:
    images = []
    for name in args.images:  # all read before the first request: a typo fails fast, not halfway
        try:
            images.append((name, Path(name).read_bytes()))
        except OSError as exc:
            raise ClientError(f"cannot read {name}: {exc.strerror or exc}", USAGE) from None
    failed = False
    rows = []
    for name, content in images:
        status, body = server.post_file(f"/classify-image?top_k={args.top_k}", "file", Path(name).name, content)
        if status >= 400:
            print(f"error: {name}: {error_message(status, body)}", file=sys.stderr)
            failed = True
            continue
        if args.json:
            emit_json(body)
            continue
        others = ", ".join(f"{entry['label']} {entry['score']:.3f}" for entry in body["top_k"][1:])
        rows.append([name, body["label"], f"{body['score']:.3f}", others])
    if rows:
        headers = ["image", "label", "score", f"next {args.top_k - 1}" if args.top_k > 2 else "next"]
        if args.top_k == 1:
            headers, rows = headers[:3], [row[:3] for row in rows]
        print(table(headers, rows, right=[False, True, True, False]))
    return SERVER_ERROR if failed else 0


def sentiment(server: Server, args: argparse.Namespace) -> int:
    texts = args.texts
    if not texts or texts == ["-"]:
        # One text per line; blank lines separate nothing and the server would refuse them.
        texts = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise ClientError("no text to score: give texts as arguments or one per line on stdin", USAGE)
    rows = []
    try:
        for start in range(0, len(texts), args.batch):
            chunk = texts[start : start + args.batch]
            body = check(*server.post_json("/sentiment", {"texts": chunk}))
            if args.json:
                emit_json(body)
                continue
            for text, result in zip(chunk, body["results"]):
                scores = result["scores"]
                shown = shorten(text) + (" [truncated]" if result["truncated"] else "")
                rows.append(
                    [result["label"], f"{result['score']:.3f}"]
                    + [f"{scores[label]:.3f}" for label in ("negative", "neutral", "positive")]
                    + [shown]
                )
    finally:  # what was answered before a later request failed is still shown
        if rows:
            headers = ["label", "score", "negative", "neutral", "positive", "text"]
            print(table(headers, rows, right=[False, True, True, True, True, False]))
    return 0


def parse_values(words: Sequence[str]) -> list[float]:
    values = []
    for word in words:
        for token in filter(None, re.split(r"[\s,;]+", word)):
            try:
                values.append(float(token))
            except ValueError:
                raise ClientError(f"not a number: {token!r}", USAGE) from None
    return values


def forecast(server: Server, args: argparse.Namespace) -> int:
    words = args.values if args.values and args.values != ["-"] else sys.stdin.read().split()
    values = parse_values(words)
    if not values:
        raise ClientError("no values: give the series as arguments or on stdin, oldest first", USAGE)
    request: dict = {"series": values, "horizon": args.horizon}
    if args.period is not None:
        request["period"] = args.period
    body = check(*server.post_json("/predict-sequence", request))
    if args.json:
        emit_json(body)
        return 0
    print(f"{body['model']} v{body['version']}: {len(values)} values in, period {body['period']}")
    print(table(["step", "forecast"], [[i, f"{v:.6g}"] for i, v in enumerate(body["forecast"], 1)], [True, True]))
    return 0


def health(server: Server, args: argparse.Namespace) -> int:
    status, body = server.get("/health")
    if "models" not in body:  # 503 from /health carries the model list; anything else is an error
        check(status, body)
        raise ClientError(f"{server.url}/health answered {status} without a model list", SERVER_ERROR)
    if args.json:
        emit_json(body)
    else:
        print(f"{server.url}: {body['status']}")
        rows = []
        for model in body["models"]:
            remark = model.get("error") or model.get("note") or ""
            providers = ",".join(p.removesuffix("ExecutionProvider") for p in model.get("providers", []))
            rows.append(
                [model["name"], model["version"], model["state"], model.get("variant") or "-", providers or "-", remark]
            )
        print(table(["model", "version", "state", "variant", "providers", "note"], rows, [False] * 6))
    return 0 if status == 200 and body.get("status") == "ok" else SERVER_ERROR


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def server_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a server address like {DEFAULT_URL}")
    return text


def build_parser() -> argparse.ArgumentParser:
    # The global options are accepted before or after the subcommand: the subparsers' copies
    # default to SUPPRESS so that they override the main parser's value only when given.
    def add_globals(parser: argparse.ArgumentParser, defaults: bool) -> None:
        def default(value):
            return value if defaults else argparse.SUPPRESS

        parser.add_argument(
            "--url",
            type=server_url,
            default=default(os.environ.get("ORTSERVE_URL", DEFAULT_URL)),
            help=f"the server (default: $ORTSERVE_URL or {DEFAULT_URL})",
        )
        parser.add_argument(
            "--api-key",
            default=default(os.environ.get("ORTSERVE_API_KEY")),
            help="sent as 'Authorization: Bearer <key>' (default: $ORTSERVE_API_KEY, which other users cannot see)",
        )
        parser.add_argument(
            "--json", action="store_true", default=default(False), help="print the server's JSON answers, one per line"
        )
        parser.add_argument(
            "--timeout", type=positive_float, default=default(60.0), help="seconds to wait for an answer (default 60)"
        )

    parser = argparse.ArgumentParser(
        prog="ortserve",
        description="Ask a running ortserve server to classify digits, score sentiment, forecast a series.",
        epilog="exit codes: 0 done, 1 the server answered an error (or is not healthy), 2 bad usage,\n"
        "3 the server cannot be reached, 4 no answer within --timeout",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_globals(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_globals(sub, defaults=False)
        return sub

    sub = command("classify", "classify images of one handwritten digit each (POST /classify-image)")
    sub.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG, BMP, GIF, WebP or TIFF files")
    sub.add_argument("--top-k", type=positive_int, default=3, help="labels to return per image, 1 to 10 (default 3)")
    sub.set_defaults(run=classify)

    sub = command("sentiment", "score the sentiment of texts (POST /sentiment)")
    sub.add_argument("texts", nargs="*", metavar="TEXT", help="texts to score; none or - reads one text per line from stdin")
    sub.add_argument(
        "--batch",
        type=positive_int,
        default=TEXTS_PER_REQUEST,
        help=f"texts per request (default {TEXTS_PER_REQUEST}, the server's default --max-texts)",
    )
    sub.set_defaults(run=sentiment)

    sub = command("forecast", "forecast the next values of a series (POST /predict-sequence)")
    sub.add_argument(
        "values", nargs="*", metavar="VALUE", help="the series, oldest first; none or - reads it from stdin"
    )
    sub.add_argument("--horizon", type=positive_int, default=12, help="steps to forecast (default 12)")
    sub.add_argument(
        "--period", type=int, choices=(1, 4, 12), help="seasonal period: 12 monthly, 4 quarterly, 1 none (default: detected)"
    )
    sub.set_defaults(run=forecast)

    sub = command("health", "show the server's status and its models (GET /health)")
    sub.set_defaults(run=health)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(Server(args.url, args.timeout, args.api_key), args)
    except ClientError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the broken pipe
