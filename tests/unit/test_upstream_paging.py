"""NextToken paging through UpstreamCalls.pages: one observed call per page, none past where the caller stops."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest
from botocore.exceptions import ClientError

from agent.core.errors import UpstreamThrottled
from agent.upstream.calls import UpstreamCalls
from agent.upstream.secretsmanager import SecretsManagerSource
from agent.upstream.source import SecretMeta


class PagedApi:
    """A fake paged API: ``pages`` lists of items, each page pointing at the next by token."""

    def __init__(self, pages: list[list[str]], *, fail_at: int | None = None) -> None:
        self.pages = pages
        self.fail_at = fail_at
        self.asked: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> dict[str, Any]:
        self.asked.append(kwargs)
        index = int(kwargs.get("NextToken", "0"))
        if index == self.fail_at:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "ListThings")
        page: dict[str, Any] = {"Items": self.pages[index]}
        if index + 1 < len(self.pages):
            page["NextToken"] = str(index + 1)
        return page


@pytest.fixture
async def observed_calls() -> AsyncIterator[tuple[UpstreamCalls, list[tuple[str, str, str, bool]]]]:
    observed: list[tuple[str, str, str, bool]] = []
    calls = UpstreamCalls(max_workers=1, observe=lambda *outcome: observed.append(outcome))
    yield calls, observed
    calls.close()


async def test_pages_walks_every_token_one_observed_call_each(
    observed_calls: tuple[UpstreamCalls, list[tuple[str, str, str, bool]]],
) -> None:
    """Every page is fetched once, in order, with the caller's arguments plus the previous page's NextToken."""
    calls, observed = observed_calls
    api = PagedApi([["a", "b"], ["c"], []])
    items = [item async for page in calls.pages("ListThings", api, service="SQS", Prefix="p") for item in page["Items"]]
    assert items == ["a", "b", "c"]
    assert api.asked == [{"Prefix": "p"}, {"Prefix": "p", "NextToken": "1"}, {"Prefix": "p", "NextToken": "2"}]
    assert observed == [("SQS", "ListThings", "ok", False)] * 3


async def test_pages_stopped_early_makes_no_further_call(
    observed_calls: tuple[UpstreamCalls, list[tuple[str, str, str, bool]]],
) -> None:
    """A caller that breaks after the first page costs exactly one call, though more pages exist."""
    calls, observed = observed_calls
    api = PagedApi([["a"], ["b"], ["c"]])
    async with aclosing(calls.pages("ListThings", api)) as pages:
        async for _page in pages:
            break
    assert len(api.asked) == 1 and len(observed) == 1


async def test_pages_failing_page_raises_translated(
    observed_calls: tuple[UpstreamCalls, list[tuple[str, str, str, bool]]],
) -> None:
    """A page that fails raises the agent's error after the pages before it were yielded."""
    calls, observed = observed_calls
    api = PagedApi([["a"], ["b"]], fail_at=1)
    seen: list[str] = []
    with pytest.raises(UpstreamThrottled):
        async for page in calls.pages("ListThings", api):
            seen.extend(page["Items"])
    assert seen == ["a"]
    assert [outcome for _service, _op, outcome, _transient in observed] == ["ok", "ThrottlingException"]


class ListingClient:
    """A secretsmanager client whose ListSecrets has three pages of one secret each."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []

    def list_secrets(self, **kwargs: Any) -> dict[str, Any]:
        self.asked.append(kwargs)
        index = int(kwargs.get("NextToken", "0"))
        arn = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:s{index}-AbCdEf"
        page: dict[str, Any] = {"SecretList": [{"ARN": arn, "Name": f"s{index}"}]}
        if index < 2:
            page["NextToken"] = str(index + 1)
        return page


async def test_list_secrets_stops_once_until_is_satisfied() -> None:
    """ListSecrets asks for no page past the one that satisfied ``until`` (every cached ARN seen)."""
    client = ListingClient()
    calls = UpstreamCalls(max_workers=1)
    try:
        source = SecretsManagerSource(client, calls)

        def two_seen(seen: dict[str, SecretMeta]) -> bool:
            return len(seen) >= 2

        found = await source.list_secrets(until=two_seen)
        everything = await source.list_secrets()
    finally:
        calls.close()
    assert [meta.name for meta in found] == ["s0", "s1"]
    assert [meta.name for meta in everything] == ["s0", "s1", "s2"]
    assert [asked.get("NextToken") for asked in client.asked] == [None, "1", None, "1", "2"]
