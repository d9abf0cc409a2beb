"""The access log: one logfmt line per request, in a file per model."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from kapell.observe.access_log import AccessLog, AccessRecord, format_record, parse_line

RECORD = AccessRecord(
    arrived=1_700_000_000.1234, model="chat", path="/v1/chat/completions", status=200,
    latency_s=0.15321, ttft_s=0.02, prompt_tokens=5, generated_tokens=12,
    replica="chat-4c1e9-3", tenant="anonymous", stream=True,
)  # fmt: skip


def test_a_record_is_one_readable_logfmt_line() -> None:
    assert format_record(RECORD) == (
        "time=2023-11-14T22:13:20.123Z model=chat status=200 latency_ms=153.2 ttft_ms=20.0 "
        "prompt_tokens=5 generated_tokens=12 replica=chat-4c1e9-3 tenant=anonymous "
        "path=/v1/chat/completions stream=true"
    )
    unanswered = format_record(
        AccessRecord(0.0, "m", "/v1/completions", 503, 0.001, None, 0, 0, None, "t", False)
    )
    assert "ttft_ms=- " in unanswered and "replica=- " in unanswered


@given(st.text(max_size=40), st.integers(100, 599))
def test_any_tenant_name_reads_back(tenant: str, status: int) -> None:
    record = AccessRecord(0.0, "m", "/v1/chat/completions", status, 0.5, None, 1, 2, None,
                          tenant, False)  # fmt: skip
    line = format_record(record)
    assert "\n" not in line
    fields = parse_line(line)
    assert fields["tenant"] == tenant and fields["status"] == str(status)
    assert list(fields) == ["time", "model", "status", "latency_ms", "ttft_ms", "prompt_tokens",
                            "generated_tokens", "replica", "tenant", "path", "stream"]  # fmt: skip


def test_each_model_gets_its_own_file_line_by_line(tmp_path: Path) -> None:
    log = AccessLog(tmp_path)
    log(RECORD)
    other = AccessRecord(**{**RECORD.__dict__, "model": "other", "status": 429})
    log(other)
    log(RECORD)
    # Line-buffered: readable while the log is still open.
    assert (tmp_path / "chat" / "access.log").read_text().splitlines() == [
        format_record(RECORD)
    ] * 2
    assert log.path("other").read_text() == format_record(other) + "\n"
    log.close()


def test_a_failing_write_is_dropped_not_raised(tmp_path: Path) -> None:
    (tmp_path / "chat").write_text("a file where the model's directory should be")
    log = AccessLog(tmp_path)
    log(RECORD)  # no exception: the request it describes must not fail
    log(RECORD)
    log.close()
