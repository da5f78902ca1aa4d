"""Workload generators: shapes (lengths, groups, sessions) and determinism for a seed."""

from __future__ import annotations

import pytest

from llmdctl.bench.workloads import TOKEN_HI, TOKEN_LO, SessionTracker, WorkloadSpec, as_text, chat_body, generate


def test_shared_prefix_shape_and_sharing() -> None:
    spec = WorkloadSpec(
        kind="shared-prefix", num_groups=3, prompts_per_group=4, system_prompt_len=100, question_len=20, output_len=7
    )
    reqs = generate(spec)
    assert len(reqs) == 12
    assert all(len(r.prompt) == 120 and r.max_tokens == 7 for r in reqs)
    by_group: dict[str, list] = {}
    for r in reqs:
        by_group.setdefault(r.group, []).append(r)
    assert sorted(by_group) == ["g0", "g1", "g2"] and all(len(v) == 4 for v in by_group.values())
    for rs in by_group.values():
        assert len({tuple(r.prompt[:100]) for r in rs}) == 1  # one system prompt per group
        assert len({tuple(r.prompt[100:]) for r in rs}) == 4  # unique questions
    assert len({tuple(rs[0].prompt[:100]) for rs in by_group.values()}) == 3  # groups differ
    assert all(TOKEN_LO <= t < TOKEN_HI for r in reqs for t in r.prompt)


def test_shared_prefix_passes_repeat_prompts_exactly() -> None:
    spec = WorkloadSpec(
        kind="shared-prefix", num_groups=2, prompts_per_group=2, system_prompt_len=16, question_len=4, num_requests=10
    )
    reqs = generate(spec)
    assert len(reqs) == 10 and len({r.request_id for r in reqs}) == 10
    assert len({tuple(r.prompt) for r in reqs}) == 4  # 2 x 2 distinct prompts, repeated across passes


@pytest.mark.parametrize("kind", ["shared-prefix", "multi-turn", "agentic", "random"])
def test_deterministic_for_a_seed(kind: str) -> None:
    a = generate(WorkloadSpec(kind=kind, seed=7))
    b = generate(WorkloadSpec(kind=kind, seed=7))
    c = generate(WorkloadSpec(kind=kind, seed=8))
    assert [(r.request_id, r.prompt, r.max_tokens) for r in a] == [(r.request_id, r.prompt, r.max_tokens) for r in b]
    assert [r.prompt for r in a] != [r.prompt for r in c]


def test_multi_turn_history_grows_with_actual_output() -> None:
    spec = WorkloadSpec(kind="multi-turn", num_sessions=2, turns=3, system_prompt_len=50, question_len=10, output_len=5)
    reqs = generate(spec)
    assert len(reqs) == 6
    assert [r.turn for r in reqs] == [0, 0, 1, 1, 2, 2]  # turns interleave across sessions
    tr = SessionTracker()
    s0 = [r for r in reqs if r.session == "s0"]
    p0 = tr.prompt_of(s0[0])
    assert len(p0) == 60
    assert tr.ready_at(s0[1]) is None  # turn 1 waits for turn 0
    tr.record(s0[0], p0, [1, 2, 3, 4, 5], finished_at=3.0)
    assert tr.ready_at(s0[1]) == 3.0
    p1 = tr.prompt_of(s0[1])
    assert p1 == p0 + [1, 2, 3, 4, 5] + s0[1].prompt  # previous prompt + actual answer + new message
    assert tr.ready_at(s0[2]) is None


def test_agentic_shares_system_and_tools_and_branches() -> None:
    spec = WorkloadSpec(
        kind="agentic",
        num_sessions=3,
        turns=2,
        branches=3,
        system_prompt_len=40,
        tool_defs_len=30,
        question_len=8,
        output_len=6,
    )
    reqs = generate(spec)
    firsts = [r for r in reqs if r.turn == 0 and not SessionTracker.is_branch(r)]
    assert len(firsts) == 3
    assert len({tuple(r.prompt[:70]) for r in firsts}) == 1  # system prompt + tools shared by every agent
    branches = [r for r in reqs if SessionTracker.is_branch(r)]
    assert len(branches) == 3 * 2 * 2  # agents x steps x (branches - 1)
    assert all(r.segments[-1][0] == "reasoning_branch" for r in branches)
    assert {k for r in firsts for k, _ in r.segments} == {"system_prompt", "tool_definition", "conversation"}


def test_agentic_apps_have_their_own_heads_and_one_offs_are_never_reused() -> None:
    base = dict(kind="agentic", num_sessions=4, turns=2, branches=2, system_prompt_len=40, tool_defs_len=30)
    one = generate(WorkloadSpec(**base, question_len=8, output_len=6))
    reqs = generate(WorkloadSpec(**base, question_len=8, output_len=6, apps=2, oneoffs=3, oneoff_len=50))
    firsts = [r for r in reqs if r.turn == 0 and r.session and not SessionTracker.is_branch(r)]
    heads = {r.session: tuple(r.prompt[:70]) for r in firsts}
    assert heads["a0"] == heads["a2"] == tuple(one[0].prompt[:70]) and heads["a1"] == heads["a3"] != heads["a0"]
    oneoffs = [r for r in reqs if r.group == "oneoff"]
    assert len(oneoffs) == 4 * 2 * 3 and all(r.session is None and len(r.prompt) == 50 for r in oneoffs)
    assert len({tuple(r.prompt[:16]) for r in oneoffs}) == len(oneoffs)
    assert all(r.segments == [("other", 50)] for r in oneoffs)
    for field, bad in (("apps", 0), ("oneoffs", -1), ("oneoff-len", 0)):
        with pytest.raises(ValueError, match=f"{field}: expected an integer"):
            WorkloadSpec(**base, **{field.replace("-", "_"): bad}).check()


def test_random_lengths_and_jitter() -> None:
    reqs = generate(WorkloadSpec(kind="random", num_requests=50, input_len=100, input_jitter=0.2, output_len=3))
    lens = [len(r.prompt) for r in reqs]
    assert len(reqs) == 50 and min(lens) >= 80 and max(lens) <= 120 and len(set(lens)) > 5


def test_text_and_chat_forms() -> None:
    r = generate(
        WorkloadSpec(kind="shared-prefix", num_groups=1, prompts_per_group=1, system_prompt_len=5, question_len=3)
    )[0]
    assert len(as_text(r.prompt).split()) == 8
    msgs = chat_body(r.prompt, r.segments)["messages"]
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert len(msgs[0]["content"].split()) == 5 and len(msgs[1]["content"].split()) == 3


@pytest.mark.parametrize(
    "kw, msg",
    [({"kind": "nope"}, "workload"), ({"num_groups": 0}, "num-groups"), ({"input_jitter": 1.5}, "input-jitter")],
)
def test_bad_specs_name_the_field(kw: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        generate(WorkloadSpec(**kw))


def test_agentic_chat_form_carries_the_block_types_the_workload_meant() -> None:
    """System prompt -> system message, tools -> `tools`, observations -> user turns, earlier output ->
    assistant, a tree-of-thought branch -> a `<think>` scratchpad the server continues; typed by the
    simulator's own template and kvtiers' typing, the blocks come out in that order."""
    from kvtiers.tokenizer import BuiltinTokenizer
    from kvtiers.types import BlockType, request_block_types

    spec = WorkloadSpec(
        kind="agentic",
        num_sessions=1,
        turns=2,
        branches=2,
        system_prompt_len=160,
        tool_defs_len=300,
        question_len=64,
        output_len=40,
    )
    reqs = generate(spec)
    tracker = SessionTracker()
    tok = BuiltinTokenizer()
    seen = {}
    for r in reqs:  # ag-a0-t0, ag-a0-t0-b1, ag-a0-t1, ag-a0-t1-b1
        prompt, segs = tracker.prompt_of(r), tracker.segments_of(r)
        body = chat_body(prompt, segs)
        ids = tok.encode_chat(body["messages"], not body.get("continue_final_message"), tools=body.get("tools"))
        types = request_block_types(body, len(ids), 16, lambda s: len(tok.encode(s, False)))
        seen[r.request_id] = (body, [t for i, t in enumerate(types) if i == 0 or types[i - 1] != t])
        tracker.record(r, prompt, list(range(2000, 2000 + spec.output_len)), 1.0)
    body, order = seen["ag-a0-t0"]
    assert [m["role"] for m in body["messages"]] == ["system", "user"] and len(body["tools"]) == 3  # 300 tokens / 128
    assert order == [BlockType.SYSTEM_PROMPT, BlockType.TOOL_DEFINITION, BlockType.CONVERSATION]
    body, order = seen["ag-a0-t0-b1"]
    assert body["continue_final_message"] is True and body["messages"][-1]["content"].startswith("<think>")
    assert order[-1] is BlockType.REASONING_BRANCH
    body, order = seen["ag-a0-t1"]  # history: task, the assistant's output, then the tool's observation
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert order == [BlockType.SYSTEM_PROMPT, BlockType.TOOL_DEFINITION, BlockType.CONVERSATION]
    # turn 1's prompt starts with turn 0's whole chat prompt (prefix caching works across turns)
    t0 = tok.encode_chat(seen["ag-a0-t0"][0]["messages"], True, tools=seen["ag-a0-t0"][0]["tools"])
    t1 = tok.encode_chat(seen["ag-a0-t1"][0]["messages"], True, tools=seen["ag-a0-t1"][0]["tools"])
    assert t1[: len(t0)] == t0
