"""botocore's data, trimmed while parsed and loaded once: same answers for the services the agent calls."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import pytest
from botocore.loaders import Loader
from botocore.regions import EndpointResolver

from agent.upstream.botodata import (
    SERVICES,
    TrimmedLoader,
    new_session,
    trim_endpoints,
)
from agent.upstream.times import epoch_seconds

BUNDLED = Path(Loader.BUILTIN_DATA_PATH) / "endpoints.json"


def _filtered(data: dict, services: frozenset[str]) -> dict:
    for partition in data["partitions"]:
        partition["services"] = {k: v for k, v in partition["services"].items() if k in services}
    return data


def test_trimmed_bundled_endpoints_equal_the_whole_file_filtered() -> None:
    """botocore's own endpoints.json walked service by service equals the whole parse with other services dropped."""
    text = BUNDLED.read_text(encoding="utf-8")
    trimmed = trim_endpoints(text)
    assert trimmed == _filtered(json.loads(text), SERVICES)
    assert all("secretsmanager" in partition["services"] for partition in trimmed["partitions"])


def test_trim_handles_any_json_layout_and_refuses_other_shapes() -> None:
    """Whitespace, empty objects and arrays parse as JSON would; text of another shape is a ValueError."""
    text = (
        '\n {"partitions" :[ {"services":{ }, "x" : [1, {"a": null}]} ,'
        '\t{"services": {"sts": {"e": 1}, "s3": {}}}],"v":3}  '
    )
    assert trim_endpoints(text, {"sts"}) == _filtered(json.loads(text), frozenset({"sts"}))
    assert trim_endpoints('{"partitions": []}') == {"partitions": []}
    for bad in ('[{"services": {}}]', '{"partitions": [1]}', '{"partitions": [{"services": {"a": 1}}]} x', '{"a" 1}'):
        with pytest.raises(ValueError):
            trim_endpoints(bad)


def test_services_the_agent_calls_resolve_as_with_the_whole_file() -> None:
    """Endpoints of every kept service, in every region botocore knows, match those the full data gives."""
    full = EndpointResolver(json.loads(BUNDLED.read_text(encoding="utf-8")), uses_builtin_data=True)
    trimmed = EndpointResolver(TrimmedLoader().load_data("endpoints"), uses_builtin_data=True)
    for partition in full.get_available_partitions():
        regions = full.get_available_endpoints("secretsmanager", partition)
        assert trimmed.get_available_endpoints("secretsmanager", partition) == regions
        for service in sorted(SERVICES):
            for region in regions:
                assert trimmed.construct_endpoint(service, region) == full.construct_endpoint(service, region)


def test_unknown_shape_falls_back_to_botocores_full_parse(tmp_path: Path) -> None:
    """An endpoints file the walker does not recognise (AWS_DATA_PATH) is loaded whole, as botocore would."""
    (tmp_path / "endpoints.json").write_text(json.dumps({"partitions": {"aws": {}}, "version": 9}))
    data, path = TrimmedLoader(extra_search_paths=[str(tmp_path)]).load_data_with_path("endpoints")
    assert data == {"partitions": {"aws": {}}, "version": 9}
    assert path == os.path.join(tmp_path, "endpoints")


def test_sessions_share_one_loader_and_parse_endpoints_once() -> None:
    """Every session the agent makes uses one data loader, which hands out one trimmed endpoints object."""
    first, second = new_session(), new_session()
    loader = first.get_component("data_loader")
    assert isinstance(loader, TrimmedLoader)
    assert second.get_component("data_loader") is loader
    assert loader.load_data("endpoints") is second.get_component("data_loader").load_data("endpoints")
    services = {name for p in loader.load_data("endpoints")["partitions"] for name in p["services"]}
    assert services <= SERVICES


def _parse(protocol: str, service: str, operation: str, body: bytes) -> dict[str, Any]:
    session = new_session()
    shape = session.get_service_model(service).operation_model(operation).output_shape
    parser = session.get_component("response_parser_factory").create_parser(protocol)
    return parser.parse({"status_code": 200, "headers": {}, "body": body}, shape)  # type: ignore[no-any-return]


def test_json_timestamps_stay_epoch_seconds() -> None:
    """Secrets Manager's (JSON) times come back as floats, not datetimes with a tzlocal each."""
    reply = _parse("json", "secretsmanager", "GetSecretValue", json.dumps({"ARN": "a", "CreatedDate": 1.7e9}).encode())
    assert reply["CreatedDate"] == 1.7e9 and isinstance(reply["CreatedDate"], float)
    assert epoch_seconds(reply["CreatedDate"]) == 1.7e9


def test_query_timestamps_are_still_datetimes() -> None:
    """STS (query protocol) sends strings: parsed as botocore does, so credential providers get their datetime."""
    body = (
        b'<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult><Credentials>'
        b"<AccessKeyId>AKIA</AccessKeyId><SecretAccessKey>s</SecretAccessKey><SessionToken>t</SessionToken>"
        b"<Expiration>2026-12-01T04:00:00Z</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>"
    )
    expiration = _parse("query", "sts", "AssumeRole", body)["Credentials"]["Expiration"]
    assert isinstance(expiration, datetime.datetime)
    assert epoch_seconds(expiration) == datetime.datetime(2026, 12, 1, 4, tzinfo=datetime.UTC).timestamp()
    assert epoch_seconds(None) is None
