from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kapell.api.demand import DemandReport, ModelDemand
from kapell.control.demand import DemandBoard

MODEL = "team/llama"


def report(gateway: str, tokens: float = 0, requests: float = 0, queue: int = 0, flight: int = 0):
    demand = ModelDemand(
        tokens_total=tokens, requests_total=requests, queue_depth=queue, in_flight=flight,
        prompt_tokens_total=tokens * 0.75,
    )  # fmt: skip
    return DemandReport(gateway=gateway, models={MODEL: demand})


def test_counters_of_two_gateways_add_up_and_gauges_are_summed() -> None:
    board = DemandBoard()
    board.record(report("a", tokens=100, requests=2, queue=1, flight=3), now_s=0)
    board.record(report("b", tokens=50, requests=1, queue=2, flight=0), now_s=0.5)
    board.record(report("a", tokens=160, requests=3, queue=0, flight=1), now_s=1)
    sample = board.sample(MODEL, ready_replicas=2, now_s=1)
    assert (sample.tokens_total, sample.requests_total) == (210, 4)
    assert sample.prompt_tokens_total == 210 * 0.75  # the sizer's mean prompt
    assert (sample.queue_depth, sample.in_flight, sample.ready_replicas) == (2, 1, 2)


def test_a_restarted_gateway_counts_from_zero_and_totals_never_go_back() -> None:
    board = DemandBoard()
    board.record(report("a", tokens=1000), now_s=0)
    board.record(report("a", tokens=30), now_s=1)  # restarted under the same name
    assert board.sample(MODEL, 1, now_s=1).tokens_total == 1030


def test_a_gateway_that_stopped_reporting_stops_holding_its_queue() -> None:
    board = DemandBoard(stale_after_s=5)
    board.record(report("a", tokens=10, queue=4), now_s=0)
    board.record(report("b", queue=1), now_s=4)
    assert board.sample(MODEL, 0, now_s=4).queue_depth == 5
    board.record(report("b", queue=1), now_s=8)
    sample = board.sample(MODEL, 0, now_s=8)
    assert (sample.queue_depth, sample.tokens_total) == (1, 10)
    assert board.gateways(now_s=8) == 1


def test_an_unknown_model_has_no_demand() -> None:
    sample = DemandBoard().sample("other/model", 3, now_s=0)
    assert (sample.tokens_total, sample.queue_depth, sample.ready_replicas) == (0, 0, 3)


@given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 10_000)), max_size=40))
def test_totals_are_monotonic_whatever_the_gateways_report(reports) -> None:
    board = DemandBoard()
    last = 0.0
    for step, (gateway, tokens) in enumerate(reports):
        board.record(report(gateway, tokens=tokens), now_s=step * 0.1)
        total = board.sample(MODEL, 1, now_s=step * 0.1).tokens_total
        assert total >= last
        last = total
