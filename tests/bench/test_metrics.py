"""Benchmark math: percentiles, goodput under an SLO, summaries, stages, ratios, load shapes."""

from __future__ import annotations

import json

import pytest

from llmdctl.bench.load import LLMD_73_LADDER, LoadSpec, Stage, parse_stages, poisson_arrivals, read_trace
from llmdctl.bench.metrics import ERROR, OK, SHED, SLO, RequestRecord, hit_rate_delta, percentile, ratios, summarize


def test_percentile_interpolates_like_numpy() -> None:
    xs = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert percentile(xs, 50) == 3.0
    assert percentile(xs, 90) == pytest.approx(7.6)  # numpy.percentile(xs, 90)
    assert percentile(xs, 0) == 1.0 and percentile(xs, 100) == 10.0
    assert percentile([5.0], 99) == 5.0 and percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(xs, 101)


def rec(i: int, sent: float, ttft: float, e2e: float, out: int, status: str = OK, stage: int = 0) -> RequestRecord:
    return RequestRecord(
        f"r{i}",
        stage=stage,
        sent=sent,
        first_token=sent + ttft,
        finished=sent + e2e,
        prompt_tokens=100,
        output_tokens=out,
        status=status,
        cached_tokens=50,
    )


def test_summary_throughput_goodput_and_counts() -> None:
    recs = [
        rec(0, 0.0, 0.5, 2.5, 21),  # tpot = 2.0/20 = 0.1 -> meets itl 0.1
        rec(1, 1.0, 3.0, 5.0, 11),  # ttft 3.0 > 2.0 -> not good
        rec(2, 2.0, 0.2, 8.0, 11),  # tpot 0.58 > 0.1 -> not good
        RequestRecord("r3", sent=3.0, finished=3.1, status=SHED),
        RequestRecord("r4", sent=4.0, finished=4.1, status=ERROR, error="boom"),
    ]
    s = summarize(recs, SLO(ttft_s=2.0, itl_s=0.1))
    assert (s.requests, s.ok, s.shed, s.errors) == (5, 3, 1, 1)
    assert s.duration_s == pytest.approx(10.0)  # first send 0 .. last finish 10
    assert s.output_tok_s == pytest.approx(43 / 10.0)
    assert s.goodput_req_s == pytest.approx(1 / 10.0)
    assert s.slo_attainment == pytest.approx(1 / 5)
    assert s.ttft_s["p50"] == pytest.approx(0.5) and s.ttft_s["mean"] == pytest.approx(3.7 / 3)
    assert s.cached_token_fraction == pytest.approx(0.5)


def test_stage_summaries_split_by_send_stage() -> None:
    recs = [rec(0, 0.0, 0.1, 1.0, 10, stage=0), rec(1, 0.5, 0.3, 1.0, 10, stage=0), rec(2, 5.0, 2.0, 3.0, 30, stage=1)]
    s = summarize(recs, stage_rates=[1.0, 2.0])
    assert [st["requests"] for st in s.stages] == [2, 1]
    assert s.stages[1]["ttft_p90_s"] == pytest.approx(2.0)
    assert s.stages[0]["output_tok_s"] == pytest.approx(20 / 1.5)


def test_ratios_are_times_better_vs_baseline() -> None:
    a = {
        "ttft_s": {"p90": 10.0, "mean": 4.0},
        "tpot_s": {"mean": 0.02},
        "output_tok_s": 100.0,
        "goodput_req_s": 1.0,
        "pod_hit_rate": 0.2,
    }
    b = {
        "ttft_s": {"p90": 0.5, "mean": 0.4},
        "tpot_s": {"mean": 0.02},
        "output_tok_s": 250.0,
        "goodput_req_s": 0.0,
        "pod_hit_rate": None,
    }
    r = ratios({"random": a, "precise": b})
    assert r["random"]["TTFT p90 (x better)"] == 1.0
    assert r["precise"]["TTFT p90 (x better)"] == pytest.approx(20.0)  # lower is better: baseline / value
    assert r["precise"]["Output tok/s (x better)"] == pytest.approx(2.5)  # higher is better: value / baseline
    assert r["precise"]["Hit rate (x better)"] is None
    assert not any(k.endswith("(s)") for row in r.values() for k in row)  # factors never read as seconds
    with pytest.raises(ValueError, match="baseline"):
        ratios({"a": a}, baseline="zzz")


def test_hit_rate_from_pod_counters() -> None:
    assert hit_rate_delta(
        {"prefix_hits": 10, "prefix_queries": 100}, {"prefix_hits": 70, "prefix_queries": 200}
    ) == pytest.approx(0.6)
    assert hit_rate_delta({}, {}) is None


def test_poisson_arrivals_rate_stages_and_bounds() -> None:
    stages = parse_stages("20:50,60:50")
    arr = poisson_arrivals(stages, seed=1)
    n0 = sum(1 for _, s in arr if s == 0)
    n1 = sum(1 for _, s in arr if s == 1)
    assert 850 < n0 < 1150 and 2700 < n1 < 3300  # ~1000 and ~3000
    assert all(t < 50 for t, s in arr if s == 0) and all(50 <= t < 100 for t, s in arr if s == 1)
    assert arr == poisson_arrivals(stages, seed=1)
    assert len(poisson_arrivals(stages, seed=1, max_requests=10)) == 10
    assert [s.rate for s in parse_stages("llmd-73")] == [r for r, _ in LLMD_73_LADDER]
    with pytest.raises(ValueError, match="--rate"):
        parse_stages("fast")


def test_trace_file(tmp_path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(json.dumps({"timestamp": t}) for t in (100.5, 100.0, 102.0)) + "\n")
    assert read_trace(p) == [0.0, 0.5, 2.0]
    p.write_text('{"timestamp": 1}\n{"nope": 2}\n')
    with pytest.raises(ValueError, match=r"t.jsonl:2"):
        read_trace(p)
    with pytest.raises(ValueError, match="stages need"):
        LoadSpec(stages=[Stage(0.0, 1.0)]).check()


def test_a_completions_chunk_with_empty_text_is_a_token_and_a_chat_role_chunk_is_not() -> None:
    """A small random-weight vLLM model streams tokens whose text is "" on its own; TTFT is their arrival."""
    import asyncio
    import json as _json

    import httpx

    from llmdctl.bench.client import send
    from llmdctl.bench.workloads import BenchRequest

    def stream(chunks: list[dict]) -> bytes:
        return b"".join(b"data: " + _json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"

    completions = stream(
        [{"object": "text_completion", "choices": [{"index": 0, "text": ""}]}] * 3
        + [{"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3}}]
    )
    chat = stream(
        [
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
            {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 0}},
        ]
    )

    async def one(body: bytes, mode: str):
        transport = httpx.MockTransport(
            lambda r: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
        )
        async with httpx.AsyncClient(transport=transport) as client:
            req = BenchRequest(request_id="r0", prompt=[5, 6, 7, 8], max_tokens=3)
            rec, _ = await send(client, "http://pod", req, req.prompt, model="m", mode=mode, t0=0.0)
        return rec

    rec = asyncio.run(one(completions, "text"))
    assert rec.first_token is not None and rec.output_tokens == 3 and rec.status == "ok"
    assert asyncio.run(one(chat, "chat")).first_token is None
