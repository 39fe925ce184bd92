"""What every API view shares: the list envelope's paging links."""

from __future__ import annotations

import pytest
from quart import Quart

from quart_api.api.common import Page, page_envelope
from tests.api.conftest import Bearer, MakeUser


@pytest.mark.parametrize(
    ("total", "number", "size", "prev_page", "next_page"),
    [
        (5, 1, 20, None, None),
        (45, 2, 20, 1, 3),
        (45, 3, 20, 2, None),
        (5, 999, 20, 1, None),  # past the end: back to the last page, not to 998
        (45, 7, 20, 3, None),
        (0, 2, 20, 1, None),  # an empty list still has its one (empty) page
    ],
)
def test_paging_links_lead_to_pages_with_data(
    total: int, number: int, size: int, prev_page: int | None, next_page: int | None
) -> None:
    envelope = page_envelope([], total, Page(number, size))
    assert (envelope["prev_page"], envelope["next_page"]) == (prev_page, next_page)


async def test_page_999_of_a_one_page_list_points_back_to_the_last_page(
    app: Quart, make_user: MakeUser, bearer: Bearer
) -> None:
    headers = await bearer(await make_user("alice"))
    response = await app.test_client().get("/api/v1/users?page=999", headers=headers)
    assert response.status_code == 200
    body = await response.get_json()
    assert body["data"] == []
    assert (body["total_pages"], body["prev_page"], body["next_page"]) == (1, 1, None)
