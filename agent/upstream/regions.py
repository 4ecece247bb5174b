"""Cross-region reads: a secret asked for by a full ARN in another region is read in that region.

The Secrets Manager API itself answers a cross-region ARN only from that
region's endpoint. :class:`RegionalClients` holds the home region's client and
makes one more per region on first use (bounded by :data:`MAX_REGIONS`), from
the same session, credentials, endpoint and client config. An id that is not a
well-formed Secrets Manager ARN (a name, a partial name) stays in the home region.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable
from typing import Any

from agent.core.errors import UpstreamRejected
from agent.upstream.botodata import new_session

# More than AWS has regions (commercial, China and GovCloud partitions together).
MAX_REGIONS = 48
_ARN_REGION = re.compile(r"^arn:aws(?:-[a-z]+)*:secretsmanager:([a-z]{2}(?:-[a-z]+)+-\d{1,2}):\d{12}:secret:")
# boto3 sessions are not thread-safe; clients are made in worker threads, one at a time.
CLIENT_CREATION = threading.Lock()


def arn_region(secret_id: str) -> str | None:
    """The region of a full or partial Secrets Manager ARN, if botocore knows it.

    None for a name, anything malformed, or an invented region: a caller cannot
    make the agent keep a client and a cache for a region that does not exist.
    """
    if not secret_id.startswith("arn:"):  # a name, the common case: no regex
        return None
    match = _ARN_REGION.match(secret_id)
    if match is None:
        return None
    region = match.group(1)
    return region if region in known_regions() else None


@functools.cache
def known_regions() -> frozenset[str]:
    """Every Secrets Manager region botocore's bundled endpoint data names, in every partition."""
    session = new_session()  # the process's one data loader: endpoint data already parsed
    return frozenset(
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("secretsmanager", partition_name=partition)
    )


class RegionalClients:
    """The home region's Secrets Manager client, and one per other region asked for (made on first use)."""

    def __init__(self, home: Any, make: Callable[[str], Any] | None = None, *, max_regions: int = MAX_REGIONS) -> None:
        self.home = home
        self.home_region: str | None = getattr(getattr(home, "meta", None), "region_name", None)
        self._make = make
        self._max = max_regions
        self._others: dict[str, Any] = {}

    @property
    def regions(self) -> list[str]:
        """Regions other than the home one that have a client."""
        return list(self._others)

    def for_id(self, secret_id: str) -> Any:
        """The client that can answer for ``secret_id``; may create one (call it in a worker thread)."""
        region = arn_region(secret_id)
        if region is None or region == self.home_region or self._make is None:
            return self.home
        client = self._others.get(region)
        if client is not None:
            return client
        with CLIENT_CREATION:
            client = self._others.get(region)
            if client is None:
                if len(self._others) >= self._max:
                    raise UpstreamRejected(
                        f"secrets in more than {self._max} other regions are not read", code="InvalidParameterException"
                    )
                client = self._make(region)
                self._others[region] = client
        return client
