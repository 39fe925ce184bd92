"""A third-party app using quart-api's OAuth 2.0 server: authorization code + PKCE.

Standard library only. It discovers the endpoints (RFC 8414), listens for the
callback on a loopback port (RFC 8252), opens the consent page in your browser,
checks ``state`` and ``iss`` on the way back (RFC 9207), exchanges the code with
its PKCE verifier, and calls ``/api/v1/users/current`` with the access token::

    python examples/oauth_client.py --server http://127.0.0.1:8104 --client-id <id>

Register the app first with the redirect URI ``http://127.0.0.1/callback`` (any
port matches a loopback URI). A confidential app also passes ``--client-secret``
(sent with HTTP Basic). ``--no-browser`` only prints the URL to open; ``--revoke``
hands the tokens back when done. Exits 0 and prints the user as JSON on success.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import secrets
import sys
import threading
import webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.error import HTTPError
from urllib.parse import parse_qs, quote, urlencode, urlsplit
from urllib.request import Request, urlopen

CALLBACK_PATH = "/callback"


def _call(
    url: str, form: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> Any:
    """GET (or POST ``form``) ``url``; the JSON answer, or SystemExit naming the error."""
    data = urlencode(form).encode() if form is not None else None
    if not url.startswith(("http://", "https://")):
        raise SystemExit(f"{url}: not an http(s) URL")
    request = Request(  # noqa: S310 - http(s) only, checked above
        url, data=data, headers={"Accept": "application/json", **(headers or {})}
    )
    try:
        with urlopen(request, timeout=30) as response:  # noqa: S310 - http(s) only, checked above
            body = response.read()
    except HTTPError as error:
        detail = error.read().decode(errors="replace")
        raise SystemExit(f"{url}: HTTP {error.code}: {detail}") from None
    return json.loads(body) if body else None


class _Callback(BaseHTTPRequestHandler):
    """Receives the one redirect back from the authorization server."""

    received: dict[str, str] = {}
    done = threading.Event()

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != CALLBACK_PATH:
            self.send_error(404)
            return
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        type(self).received = params
        message = "Authorized: you can close this tab." if "code" in params else "Not authorized."
        body = f"<html><body><h1>{message}</h1></body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        type(self).done.set()

    def log_message(self, format: str, *args: Any) -> None:
        return


def _client_auth(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, str]]:
    """(form fields, headers) that authenticate the client at the token endpoint."""
    if args.client_secret is None:
        return {"client_id": args.client_id}, {}
    pair = f"{quote(args.client_id, safe='')}:{quote(args.client_secret, safe='')}"
    return {}, {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="http://127.0.0.1:8000", help="the quart-api URL")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", help="for a confidential app (client_secret_basic)")
    parser.add_argument("--scope", default="users:read")
    parser.add_argument("--port", type=int, default=0, help="callback port (0: any free one)")
    parser.add_argument("--no-browser", action="store_true", help="only print the URL")
    parser.add_argument("--revoke", action="store_true", help="revoke the tokens at the end")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for consent")
    args = parser.parse_args(argv)

    server_url = args.server.rstrip("/")
    metadata = _call(f"{server_url}/.well-known/oauth-authorization-server")
    if "S256" not in metadata.get("code_challenge_methods_supported", []):
        raise SystemExit("The server does not support PKCE with S256.")

    callback = HTTPServer(("127.0.0.1", args.port), _Callback)
    redirect_uri = f"http://127.0.0.1:{callback.server_address[1]}{CALLBACK_PATH}"
    threading.Thread(target=callback.serve_forever, daemon=True).start()

    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    state = secrets.token_urlsafe(24)
    authorize_url = (
        metadata["authorization_endpoint"]
        + "?"
        + urlencode(
            {
                "response_type": "code",
                "client_id": args.client_id,
                "redirect_uri": redirect_uri,
                "scope": args.scope,
                "state": state,
                "code_challenge": challenge.rstrip(b"=").decode(),
                "code_challenge_method": "S256",
            }
        )
    )
    print(f"Open this URL to authorize the app:\n{authorize_url}", flush=True)
    if not args.no_browser:
        webbrowser.open(authorize_url)
    try:
        if not _Callback.done.wait(args.timeout):
            raise SystemExit(f"No answer within {args.timeout:.0f} s.")
    finally:
        callback.shutdown()
        callback.server_close()

    answer = _Callback.received
    if answer.get("state") != state:
        raise SystemExit("The callback's state does not match: refusing it (CSRF?).")
    if answer.get("iss") != metadata["issuer"]:
        raise SystemExit("The callback came from another issuer: refusing it (mix-up?).")
    if "code" not in answer:
        raise SystemExit(
            f"Not authorized: {answer.get('error')}: {answer.get('error_description')}"
        )

    auth_form, auth_headers = _client_auth(args)
    tokens = _call(
        metadata["token_endpoint"],
        {
            "grant_type": "authorization_code",
            "code": answer["code"],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            **auth_form,
        },
        auth_headers,
    )
    me = _call(
        f"{server_url}/api/v1/users/current",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    print(json.dumps(me["data"], indent=2), flush=True)
    print(f"Granted scope: {tokens['scope']}; access token valid {tokens['expires_in']} s.")
    if args.revoke:
        _call(
            metadata["revocation_endpoint"],
            {"token": tokens["refresh_token"], "token_type_hint": "refresh_token", **auth_form},
            auth_headers,
        )
        print("Revoked the app's access.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
