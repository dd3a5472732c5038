"""Variants: the presets are the issue's, overrides parse strictly, labels round-trip."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qbench.queue_impl.config import (
    DAY_S,
    POOL_SIZED,
    PRESETS,
    Variant,
    VariantError,
    parse_variant,
)


def test_presets_are_the_issues_toggle_sets() -> None:
    picked = ("dequeue", "batch", "ttl", "keys", "pool_size", "codec")
    assert {name: tuple(getattr(v, f) for f in picked) for name, v in PRESETS.items()} == {
        "baseline": ("poll", "loop", "off", "format", 10, "protobuf"),
        "optimized": ("block", "pipeline", "on", "precomputed", 50, "protobuf"),
        "scripted": ("notify", "script", "on", "precomputed", POOL_SIZED, "protobuf"),
    }
    # The layout toggles: scripted keeps its records in a hash per partition (every
    # script's keys declarable on Redis Cluster); the seed's presets keep a key per job.
    assert {name: (v.records, v.partitions) for name, v in PRESETS.items()} == {
        "baseline": ("keys", 1),
        "optimized": ("keys", 1),
        "scripted": ("hash", 1),
    }
    for variant in PRESETS.values():
        assert variant.block_timeouts_s == (1.0, 1.0, 3.0)
        assert variant.poll_interval_s == 0.1
        assert (variant.completed_ttl_s, variant.dead_ttl_s) == (DAY_S, 7 * DAY_S) == (86_400, 604_800)


@pytest.mark.parametrize("name", list(PRESETS))
def test_a_bare_preset_parses_to_itself(name: str) -> None:
    assert parse_variant(name) is PRESETS[name]
    assert parse_variant(f" {name} ") is PRESETS[name]
    assert PRESETS[name].label() == name


@pytest.mark.parametrize(
    ("spec", "changes"),
    [
        ("baseline+dequeue=notify", {"dequeue": "notify"}),
        ("scripted+codec=json", {"codec": "json"}),
        ("optimized+batch=script,ttl=off", {"batch": "script", "ttl": "off"}),
        ("baseline+pool_size=sized", {"pool_size": POOL_SIZED}),
        ("baseline+block_timeouts_s=0.2/0.2/0.6", {"block_timeouts_s": (0.2, 0.2, 0.6)}),
        ("optimized+completed_ttl_s=120, dead_ttl_s=300", {"completed_ttl_s": 120, "dead_ttl_s": 300}),
        ("scripted+records=keys", {"records": "keys"}),
        ("baseline+records=hash,partitions=3", {"records": "hash", "partitions": 3}),
    ],
)
def test_overrides_change_exactly_the_named_toggles(spec: str, changes: dict[str, object]) -> None:
    variant = parse_variant(spec)
    base = PRESETS[spec.split("+")[0]]
    differing = {
        f.name: getattr(variant, f.name)
        for f in dataclasses.fields(Variant)
        if getattr(variant, f.name) != getattr(base, f.name)
    }
    assert differing == changes
    assert variant.name == base.name


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", r"unknown preset 'nope': expected one of baseline, optimized, scripted"),
        ("", r"unknown preset ''"),
        ("baseline+colour=red", r"bad override 'colour=red': expected TOGGLE=VALUE with TOGGLE in .*dequeue"),
        ("baseline+dequeue", r"bad override 'dequeue'"),
        ("baseline+name=optimized", r"bad override 'name=optimized'"),
        ("baseline+dequeue=fast", r"dequeue='fast': expected one of poll, block, notify"),
        ("baseline+codec=xml", r"codec='xml': expected one of protobuf, json"),
        ("baseline+ttl=", r"ttl='': expected one of off, on"),
        ("baseline+pool_size=many", r"bad value for pool_size: 'many'"),
        ("baseline+pool_size=-1", r"pool_size=-1: must be >= 0"),
        ("baseline+completed_ttl_s=1.5", r"bad value for completed_ttl_s: '1.5'"),
        ("baseline+dead_ttl_s=0", r"TTLs must be positive seconds"),
        ("baseline+block_timeouts_s=1/1", r"block_timeouts_s: '1/1' \(three timeouts expected\)"),
        ("baseline+block_timeouts_s=1/x/3", r"bad value for block_timeouts_s: '1/x/3'"),
        ("baseline+block_timeouts_s=1/0/3", r"must be > 0 seconds"),
        ("baseline+notify_timeout_s=0", r"must be > 0 seconds"),
        ("baseline+poll_interval_s=-0.1", r"poll_interval_s=-0.1: must be a finite number of seconds >= 0"),
        ("baseline+retry_base_s=nan", r"retry_base_s=nan: must be a finite number"),
        ("baseline+pool_timeout_s=inf", r"pool_timeout_s=inf: must be a finite number"),
        ("baseline+records=set", r"records='set': expected one of keys, hash"),
        ("scripted+partitions=0", r"partitions=0: must be 1 to 64"),
        ("scripted+partitions=65", r"partitions=65: must be 1 to 64"),
        ("scripted+partitions=two", r"bad value for partitions: 'two'"),
    ],
)
def test_bad_specs_are_rejected_with_a_one_line_message(spec: str, message: str) -> None:
    with pytest.raises(VariantError, match=message) as caught:
        parse_variant(spec)
    assert "\n" not in str(caught.value)


def test_bad_toggles_are_rejected_by_the_constructor_too() -> None:
    with pytest.raises(VariantError, match="batch='bulk'"):
        Variant(batch="bulk")  # type: ignore[arg-type]
    with pytest.raises(VariantError, match="three timeouts expected"):
        Variant(block_timeouts_s=(1.0, 1.0))  # type: ignore[arg-type]


def test_pool_is_sized_to_workers_only_when_asked() -> None:
    # One per worker + 2 for scheduler/heartbeat; a dispatcher per partition and 3 for the
    # acker, watchdog and heartbeat under dispatch=process.
    assert parse_variant("scripted+dispatch=thread").pool_size_for(8) == 10
    assert PRESETS["scripted"].pool_size_for(8) == 8 + 2 + 1 + 3
    assert parse_variant("scripted+partitions=3").pool_size_for(8) == 8 + 2 + 3 + 3
    assert PRESETS["optimized"].pool_size_for(8) == 50
    assert PRESETS["baseline"].pool_size_for(200) == 10


def test_socket_timeout_outlasts_every_blocking_wait() -> None:
    assert PRESETS["optimized"].socket_timeout_s == 10.0
    long_wait = parse_variant("scripted+notify_timeout_s=30")
    assert long_wait.longest_block_s == 30.0
    assert long_wait.socket_timeout_s == 35.0


_TOGGLE_VALUES = {
    "dequeue": st.sampled_from(["poll", "block", "notify"]),
    "batch": st.sampled_from(["loop", "pipeline", "script"]),
    "ttl": st.sampled_from(["off", "on"]),
    "keys": st.sampled_from(["format", "precomputed"]),
    "codec": st.sampled_from(["protobuf", "json"]),
    "records": st.sampled_from(["keys", "hash"]),
    "partitions": st.integers(1, 64),
    "pool_mode": st.sampled_from(["wait", "raise"]),
    "pool_size": st.integers(0, 10_000),
    "completed_ttl_s": st.integers(1, 10**9),
    "dead_ttl_s": st.integers(1, 10**9),
    "poll_interval_s": st.floats(0, 60),
    "notify_timeout_s": st.floats(1e-6, 3600),
    "pool_timeout_s": st.floats(0, 600),
    "retry_base_s": st.floats(0, 3600),
    "retry_max_s": st.floats(0, 86_400),
    "block_timeouts_s": st.tuples(*[st.floats(1e-6, 3600)] * 3),
}


@settings(max_examples=100, deadline=None)
@given(
    preset=st.sampled_from(list(PRESETS)),
    overrides=st.fixed_dictionaries({}, optional=_TOGGLE_VALUES),
)
def test_label_round_trips_through_parse_variant(preset: str, overrides: dict[str, object]) -> None:
    variant = PRESETS[preset].with_overrides(**overrides)
    label = variant.label()
    assert parse_variant(label) == variant
    assert label.startswith(preset)
    assert ("+" in label) == (variant != PRESETS[preset])
