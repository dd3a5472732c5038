"""The skipped-suggestions experiment: its exact figures (sizes, Redis memory per id form,
the profile's get_job count) and its claims rows, from real measurements."""

from __future__ import annotations

from pathlib import Path

from qbench.harness.experiments import RunContext, skipped
from qbench.harness.experiments.codec import sample_job
from qbench.harness.infra.redis_server import describe
from qbench.queue_impl.codec import CODECS


def test_record_sizes_of_every_codec_and_compression_are_exact() -> None:
    sizes = {name: len(codec.encode(sample_job("small"))) for name, codec in CODECS.items()}
    assert sizes == {"protobuf": 185, "json": 414, "orjson": 414, "msgpack": 185}
    medium = sample_job("medium")
    stored = {mode: len(skipped._compressing(mode).encode(medium)) for mode in skipped.COMPRESSIONS}
    assert stored == {"off": 10_086, "zstd": 166, "lz4": 222}


def test_binary_ids_memory_per_job_is_exact_for_this_build(redis_url: str) -> None:
    rows = skipped.measure_id_memory(redis_url, n=2000)
    usage = {r.params: r.value for r in rows if r.metric == "memory_usage_bytes_per_job"}
    # MEMORY USAGE (SAMPLES 0) of the list and records hash, per job, on the pip-shipped Redis 8.2.
    assert usage == {"id_bytes=32;ids=text": 202.784, "id_bytes=16;ids=binary": 154.576}


def test_the_experiment_runs_and_gives_a_claims_row_per_suggestion(redis_url: str, tmp_path: Path) -> None:
    ctx = RunContext(
        url=redis_url, server=describe(redis_url, "url", False), quick=True, repeats=1, out_dir=tmp_path
    )
    rows = skipped.run(ctx)
    assert [r.value for r in rows if r.metric == "get_job_calls"] == [0]
    section = skipped.render(rows, tmp_path)
    claims = [claim.split(" (")[0] for claim, _verdict, _why in section.verdicts]
    assert claims == [
        "skipped: codec=msgpack",
        "skipped: codec=orjson",
        "skipped: binary job ids",
        "skipped: compress payloads",
        "skipped: compress payloads",
        "skipped: job-object pooling",
        "skipped: result caching",
    ]
    assert "result caching" in section.markdown and '"h\\x00\\xd8' in section.markdown
