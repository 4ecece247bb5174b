"""botocore's bundled data, loaded once per process and trimmed to the services the agent calls.

Every botocore session builds its endpoint resolver from ``endpoints.json``:
1.2 MB of JSON naming every endpoint of every AWS service, which parses into
about 6.5 MiB of Python objects, kept for the life of the session. The agent
calls a handful of services, so :class:`TrimmedLoader` keeps only those
(:data:`SERVICES`) and walks the file one service at a time: each other
service's entry is parsed and dropped before the next one is read, so the
memory it took is reused instead of left behind as a fragmented heap. A service
missing from the data would still resolve (botocore falls back to the
partition's defaults, and the endpoint URL itself comes from the service's
ruleset); the services kept here resolve exactly as with the whole file.

One loader serves every session the process makes (:func:`new_session`: the
agent's own, each ``roleArn`` role's, the region list), so service models are
parsed once too. ``AWS_DATA_PATH`` (botocore's ``data_path``) is honoured as
botocore honours it. Should the file ever not have the expected shape, the
loader falls back to botocore's own full parse: more memory, same answers.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Any

import botocore.loaders
import botocore.session

from agent.upstream.times import epoch_or_parsed

# Secrets Manager, Parameter Store and SQS (events) are what the agent reads; STS checks and assumes
# roles; SSO, SSO-OIDC and sign-in are what botocore's credential chain may call for a profile.
SERVICES = frozenset({"secretsmanager", "ssm", "sqs", "sns", "sts", "sso", "sso-oidc", "signin"})

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder(object_pairs_hook=OrderedDict)  # botocore parses its data into OrderedDicts too
_SKIP = object()

# (value or _SKIP, index after it) for the value starting at an index; the key it belongs to first.
_Member = Callable[[str, int], tuple[Any, int]]


def _space(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _expect(text: str, index: int, char: str) -> int:
    if text[index : index + 1] != char:
        raise ValueError(f"expected {char!r} at {index}")
    return index + 1


def _value(text: str, index: int) -> tuple[Any, int]:
    value, end = _DECODER.raw_decode(text, index)
    return value, end


def _object(text: str, index: int, member: _Member) -> tuple[OrderedDict[str, Any], int]:
    """The JSON object at ``index``, each member's value produced (or skipped) by ``member(key, index)``."""
    index = _space(text, _expect(text, _space(text, index), "{"))
    result: OrderedDict[str, Any] = OrderedDict()
    if text[index : index + 1] == "}":
        return result, index + 1
    while True:
        key, index = _value(text, index)
        if not isinstance(key, str):
            raise ValueError(f"expected a key at {index}")
        index = _space(text, _expect(text, _space(text, index), ":"))
        value, index = member(key, index)
        if value is not _SKIP:
            result[key] = value
        index = _space(text, index)
        if text[index : index + 1] == ",":
            index = _space(text, index + 1)
            continue
        return result, _expect(text, index, "}")


def _array(text: str, index: int, item: Callable[[int], tuple[Any, int]]) -> tuple[list[Any], int]:
    """The JSON array at ``index``, each item produced by ``item(index)``."""
    index = _space(text, _expect(text, _space(text, index), "["))
    result: list[Any] = []
    if text[index : index + 1] == "]":
        return result, index + 1
    while True:
        value, index = item(index)
        result.append(value)
        index = _space(text, index)
        if text[index : index + 1] == ",":
            index = _space(text, index + 1)
            continue
        return result, _expect(text, index, "]")


def trim_endpoints(text: str, services: Collection[str] = SERVICES) -> dict[str, Any]:
    """``endpoints.json``'s data with only ``services`` left in each partition's ``services``.

    Equal to parsing the whole text and deleting the other services, without ever
    holding them all at once. Raises ``ValueError`` for text of another shape.
    """

    def service(name: str, index: int) -> tuple[Any, int]:
        value, end = _value(text, index)
        return (value if name in services else _SKIP), end

    def partition_member(key: str, index: int) -> tuple[Any, int]:
        return _object(text, index, service) if key == "services" else _value(text, index)

    def partition(index: int) -> tuple[Any, int]:
        return _object(text, index, partition_member)

    def top_member(key: str, index: int) -> tuple[Any, int]:
        return _array(text, index, partition) if key == "partitions" else _value(text, index)

    data, end = _object(text, 0, top_member)
    if _space(text, end) != len(text):
        raise ValueError(f"unexpected text after the data at {end}")
    return data


class TrimmedLoader(botocore.loaders.Loader):
    """botocore's data loader, except that ``endpoints`` keeps only :data:`SERVICES`."""

    @botocore.loaders.instance_cache
    def load_data_with_path(self, name: str) -> tuple[Any, str]:
        """As botocore's, but ``endpoints`` is trimmed while it is parsed (see the module docstring)."""
        if name == "endpoints":
            for base in self.search_paths:
                path = os.path.join(base, name)
                for suffix, opener in ((".json", open), (".json.gz", gzip.open)):
                    if os.path.isfile(path + suffix):
                        with opener(path + suffix, "rb") as file:
                            text = file.read().decode("utf-8")
                        try:
                            return trim_endpoints(text), path
                        except (ValueError, IndexError):
                            return super().load_data_with_path(name)  # not the shape we know: botocore's way
        return super().load_data_with_path(name)


@functools.cache
def _loader(data_path: str | None) -> TrimmedLoader:
    # As botocore.loaders.create_loader builds the session's own loader from data_path (AWS_DATA_PATH).
    if data_path is None:
        return TrimmedLoader()
    paths = [os.path.expanduser(os.path.expandvars(path)) for path in data_path.split(os.pathsep)]
    return TrimmedLoader(extra_search_paths=paths)


def new_session() -> botocore.session.Session:
    """A botocore session (default credential chain and config) on the process's one shared data loader."""
    session = botocore.session.get_session()
    session.register_component("data_loader", _loader(session.get_config_variable("data_path")))
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=epoch_or_parsed)
    return session
