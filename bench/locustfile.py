"""A realistic user journey for load-testing a quart-api deployment with Locust.

Each simulated user signs up, logs in (session cookie), creates an API token with
that session, and from then on calls the API with ``Authorization: Bearer <token>``:
mostly listing users (random pages), reading a user and its own account, now and
then updating its own profile. Where ``make bench`` measures single routes on
loopback to compare them, this measures a whole deployment under a mix of reads
and writes, through whatever proxy and network stand in front of it.

Run it (``pip install -e '.[bench]'`` brings Locust)::

    locust -f bench/locustfile.py --host http://127.0.0.1:8000
    # then open http://127.0.0.1:8089, or headless for 2 minutes with 200 users:
    locust -f bench/locustfile.py --host http://127.0.0.1:8000 \\
        --headless -u 200 -r 20 -t 2m --csv bench/results/locust

Serve the target with limits raised for the test, or every user will soon be
answered 429 (which is the rate limiter working, not the service failing), and with
cheap password hashing unless login cost is what you are measuring::

    API_RATE_LIMIT=100000/minute LOGIN_RATE_LIMIT=100000/minute \\
    ARGON2_TIME_COST=1 ARGON2_MEMORY_COST=8 ARGON2_PARALLELISM=1 make run

Only load-test servers you own: by default Locust sends to ``--host`` and nothing
else. 429 responses are reported as failures named "rate limited" so they are
counted apart from errors.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from locust import HttpUser, between, task
from locust.exception import StopUser

__all__ = ["ApiUser"]

API = "/api/v1"
PASSWORD = "locust-password-1"
SCOPES = ["users:read", "users:write"]
#: Pages of the list a user browses (20 users a page by default).
PAGES = 20


class ApiUser(HttpUser):
    """Sign up, log in, create a token, then list, read and update through the API."""

    wait_time = between(0.5, 2.0)

    token: str
    user_id: str
    seen_ids: list[str]

    def on_start(self) -> None:
        """The one-time part of the journey: an account, a session, a token."""
        username = f"locust-{uuid.uuid4().hex[:16]}"
        self._expect(
            "POST",
            f"{API}/users",
            201,
            name="sign up",
            json={"username": username, "password": PASSWORD, "full_name": "Locust User"},
        )
        login = self._expect(
            "POST",
            f"{API}/auth/login",
            200,
            name="log in",
            json={"username": username, "password": PASSWORD},
        )
        self.user_id = login["data"]["id"]
        created = self._expect(
            "POST",
            f"{API}/auth/tokens",
            201,
            name="create token",
            json={"name": "locust", "scopes": SCOPES},
        )
        self.token = created["data"]["token"]
        self.client.cookies.clear()  # from here on the token alone says who we are
        self.client.headers["Authorization"] = f"Bearer {self.token}"
        self.seen_ids = []

    @task(6)
    def list_users(self) -> None:
        page = random.randint(1, PAGES)
        body = self._expect("GET", f"{API}/users?page={page}", 200, name="list users")
        ids = [user["id"] for user in body.get("data", [])]
        self.seen_ids = (self.seen_ids + ids)[-200:]

    @task(3)
    def read_user(self) -> None:
        if not self.seen_ids:
            return self.list_users()
        user_id = random.choice(self.seen_ids)
        self._expect("GET", f"{API}/users/{user_id}", 200, name="read user", allow=(404,))
        return None

    @task(2)
    def read_self(self) -> None:
        self._expect("GET", f"{API}/users/current", 200, name="read current user")

    @task(1)
    def update_self(self) -> None:
        name = f"Locust User {random.randint(1, 1_000_000)}"
        body = {"full_name": name}
        self._expect("PATCH", f"{API}/users/current", 200, name="update current user", json=body)

    def _expect(
        self,
        method: str,
        path: str,
        status: int,
        *,
        name: str,
        allow: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> dict[str, Any]:
        """One request, marked failed unless it answered ``status`` (or one of ``allow``)."""
        with self.client.request(method, path, name=name, catch_response=True, **kwargs) as reply:
            if reply.status_code == status or reply.status_code in allow:
                reply.success()
                try:
                    body = reply.json()
                except ValueError:
                    return {}
                return body if isinstance(body, dict) else {}
            if reply.status_code == 429:
                reply.failure("rate limited")
            else:
                reply.failure(f"{reply.status_code}: {reply.text[:200]}")
            if name in ("sign up", "log in", "create token"):
                raise StopUser()  # without an account or token the journey cannot go on
            return {}
