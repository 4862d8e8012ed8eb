"""The protocol table (`fetch.protocol.EVENTS`) and the typed events (`fetch.events`) say the same."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from edgetam_provision.errors import HostMisbehaved
from edgetam_provision.fetch.events import EVENT_TYPES, Download, HostError, Packed
from edgetam_provision.fetch.protocol import EVENTS, check_event
from edgetam_provision.hub.layout import FileRecord

COMMIT = "a" * 40
NAME = f"models--org--tiny--{COMMIT[:12]}.tar"


def test_every_event_of_the_table_has_its_class_and_no_other():
    assert set(EVENT_TYPES) == set(EVENTS)
    assert all(cls.name == name for name, cls in EVENT_TYPES.items())


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_an_events_fields_are_the_tables_names_types_and_optionals(name):
    cls, spec = EVENT_TYPES[name], EVENTS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    assert list(fields) == list(spec.fields)
    for field, kind in spec.fields.items():
        assert hints[field] == kind.type, field
        has_default = fields[field].default is not dataclasses.MISSING
        assert has_default == (field in spec.optional), field


def test_a_checked_event_is_typed_with_the_defaults_of_what_it_left_out():
    line = {"event": "packed", "archive": NAME, "repo_id": "org/tiny", "commit": COMMIT,
            "files": [{"path": "config.json", "blob": "b" * 40, "size": 2}], "sha256": "0" * 64,
            "size": 4096, "repo_type": None, "extra": "ignored"}
    assert check_event(line, "host") == Packed(
        archive=NAME, repo_id="org/tiny", commit=COMMIT, files=(FileRecord("config.json", "b" * 40, 2),),
        sha256="0" * 64, size=4096)
    assert check_event({"event": "download", "repo_id": "org/tiny", "bytes": 5}, "host") == Download(
        repo_id="org/tiny", bytes=5)
    assert check_event({"event": "error", "kind": "gated", "message": "no"}, "host").log == ""
    assert isinstance(check_event({"event": "error", "kind": "gated", "message": "no"}, "host"), HostError)


def test_a_field_of_the_wrong_type_is_refused_before_any_event_is_built():
    with pytest.raises(HostMisbehaved, match="'bytes' is not a int"):
        check_event({"event": "download", "repo_id": "org/tiny", "bytes": "5"}, "host")
