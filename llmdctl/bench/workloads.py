"""Workload generators: what requests a benchmark sends, deterministic for a seed.

Prompts are token ids by default, so lengths are exact (vLLM and the simulator accept token-id prompts on
/v1/completions); `as_text` turns them into words for endpoints that want text or chat. Shapes follow the
tools people compare against: `shared-prefix` is inference-perf's shared_prefix (num_groups x
num_prompts_per_group, system_prompt_len, question_len, output_len) that llm-d's benchmarks use;
`multi-turn` sessions grow their history with each turn's actual output; `agentic` shares one system prompt
and tool definitions across agents running ReAct loops and tree-of-thought branches; `random` has no reuse.

Each request says which session it belongs to and what its prompt segments are (system / tools / question /
reasoning), so a runner can build follow-up turns (`SessionTracker`) and typed-KV policies can see types.
"""

from __future__ import annotations

import random
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Token ids drawn from a range every common vocabulary holds (no special tokens at the bottom).
TOKEN_LO, TOKEN_HI = 1000, 30000
WORKLOADS = ("shared-prefix", "multi-turn", "agentic", "random")


@dataclass
class BenchRequest:
    """One request to send. For a follow-up turn (`turn > 0`) `prompt` holds only the new tokens: the runner
    prepends the session's history (previous prompt + previous actual output) through `SessionTracker`."""

    request_id: str
    prompt: list[int]
    max_tokens: int
    group: str = ""  # shared-prefix group / agent / session, for per-group views
    session: str | None = None
    turn: int = 0
    think_time_s: float = 0.0  # pause after the previous turn finished (tool call latency)
    segments: list[tuple[str, int]] = field(default_factory=list)  # (type, tokens) in prompt order
    # Multimodal items (identifier, offset, placeholder tokens) in prompt order: images as their token cost
    # (sim_gpu.multimodal); the planner's encode leg and the engines' encoder run over them.
    mm_items: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def prompt_len(self) -> int:
        return len(self.prompt)


@dataclass
class WorkloadSpec:
    """Parameters of every workload (each uses the ones that apply); validated by `check`."""

    kind: str = "shared-prefix"
    seed: int = 0
    num_requests: int | None = None  # None: one full set (groups x prompts, sessions x turns, ...)
    # shared-prefix (inference-perf names)
    num_groups: int = 4
    prompts_per_group: int = 4
    system_prompt_len: int = 512
    question_len: int = 64
    output_len: int = 32
    # multi-turn / agentic
    num_sessions: int = 4
    turns: int = 4
    tool_defs_len: int = 256
    branches: int = 2  # tree-of-thought branches per agent step
    reasoning_len: int | None = None  # tokens of each branch's scratchpad; None: question_len // 4
    apps: int = 1  # agentic: distinct agent applications (own system prompt and tools); agent a runs app a % apps
    oneoffs: int = 0  # agentic: other tenants' one-off requests after each agent step (cache pollution)
    oneoff_len: int = 2048  # tokens of each one-off prompt
    think_time_s: float = 0.0
    # random
    input_len: int = 256
    input_jitter: float = 0.0  # +- fraction of input_len for random prompts

    def check(self) -> None:
        if self.kind not in WORKLOADS:
            raise ValueError(f"workload: expected one of {', '.join(WORKLOADS)}, got {self.kind!r}")
        for name in (
            "num_groups",
            "prompts_per_group",
            "system_prompt_len",
            "question_len",
            "output_len",
            "num_sessions",
            "turns",
            "input_len",
            "branches",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name.replace('_', '-')}: expected an integer >= 1, got {v!r}")
        if not isinstance(self.apps, int) or self.apps < 1:
            raise ValueError(f"apps: expected an integer >= 1, got {self.apps!r}")
        if not isinstance(self.oneoffs, int) or self.oneoffs < 0:
            raise ValueError(f"oneoffs: expected an integer >= 0, got {self.oneoffs!r}")
        if not isinstance(self.oneoff_len, int) or self.oneoff_len < 1:
            raise ValueError(f"oneoff-len: expected an integer >= 1, got {self.oneoff_len!r}")
        if self.reasoning_len is not None and (not isinstance(self.reasoning_len, int) or self.reasoning_len < 1):
            raise ValueError(f"reasoning-len: expected an integer >= 1, got {self.reasoning_len!r}")
        if self.num_requests is not None and self.num_requests < 1:
            raise ValueError(f"num-requests: expected an integer >= 1, got {self.num_requests!r}")
        if not 0 <= self.input_jitter < 1:
            raise ValueError(f"input-jitter: expected a fraction in [0, 1), got {self.input_jitter!r}")

    def describe(self) -> str:
        k = self.kind
        if k == "shared-prefix":
            return (
                f"shared-prefix {self.num_groups} groups x {self.prompts_per_group} prompts, system "
                f"{self.system_prompt_len} + question {self.question_len} tokens, output {self.output_len}"
            )
        if k == "multi-turn":
            return (
                f"multi-turn {self.num_sessions} sessions x {self.turns} turns, system {self.system_prompt_len}, user "
                f"{self.question_len}, output {self.output_len}"
            )
        if k == "agentic":
            return (
                f"agentic {self.num_sessions} agents"
                + (f" of {self.apps} apps" if self.apps > 1 else "")
                + f" x {self.turns} ReAct steps x {self.branches} branches, system "
                f"{self.system_prompt_len} + tools {self.tool_defs_len}, turn {self.question_len}, scratchpad "
                f"{self.reasoning_len or max(1, self.question_len // 4)}, output {self.output_len}"
                + (f", {self.oneoffs} one-offs of {self.oneoff_len} tokens per step" if self.oneoffs else "")
            )
        return f"random {self.input_len} tokens in, {self.output_len} out"


def _tokens(rng: random.Random, n: int) -> list[int]:
    """`n` token ids drawn from `rng` (one 32-bit draw per token: fast, and the same on every platform)."""
    if n <= 0:
        return []
    span = TOKEN_HI - TOKEN_LO
    words = array("I")
    words.frombytes(rng.getrandbits(32 * n).to_bytes(4 * n, "little"))
    if sys.byteorder == "big":
        words.byteswap()
    return [TOKEN_LO + w % span for w in words]


def _cycle(items: list[BenchRequest], n: int | None, rng: random.Random) -> Iterator[BenchRequest]:
    """`n` requests from `items` in passes (each pass a seeded shuffle); ids stay unique across passes."""
    if n is None:
        yield from items
        return
    i = 0
    pass_no = 0
    while i < n:
        order = list(items)
        rng.shuffle(order)
        for r in order:
            if i >= n:
                return
            yield (
                r
                if pass_no == 0
                else BenchRequest(
                    f"{r.request_id}-p{pass_no}",
                    r.prompt,
                    r.max_tokens,
                    r.group,
                    r.session,
                    r.turn,
                    r.think_time_s,
                    r.segments,
                )
            )
            i += 1
        pass_no += 1


def shared_prefix(spec: WorkloadSpec) -> list[BenchRequest]:
    """inference-perf's shared_prefix: each group one system prompt, each of its prompts a unique question.

    Sent in seeded-shuffled passes over the full set (groups x prompts), as many passes as `num_requests`
    needs; every repeat of a prompt is an exact repeat (it hits the cache wherever it ran before)."""
    rng = random.Random(spec.seed)
    items: list[BenchRequest] = []
    for g in range(spec.num_groups):
        system = _tokens(rng, spec.system_prompt_len)
        for p in range(spec.prompts_per_group):
            q = _tokens(rng, spec.question_len)
            items.append(
                BenchRequest(
                    f"sp-g{g}-p{p}",
                    system + q,
                    spec.output_len,
                    group=f"g{g}",
                    segments=[("system_prompt", spec.system_prompt_len), ("conversation", spec.question_len)],
                )
            )
    return list(
        _cycle(items, spec.num_requests if spec.num_requests is not None else len(items), random.Random(spec.seed + 1))
    )


def multi_turn(spec: WorkloadSpec) -> list[BenchRequest]:
    """Sessions of `turns` turns; turn k's prompt is the whole history (earlier prompts and actual outputs)
    plus a new user message. Turns of all sessions interleave (round-robin), each after its predecessor."""
    rng = random.Random(spec.seed)
    system = _tokens(rng, spec.system_prompt_len)
    out: list[BenchRequest] = []
    for t in range(spec.turns):
        for s in range(spec.num_sessions):
            user = _tokens(rng, spec.question_len)
            prompt = (system + user) if t == 0 else user
            segs = (
                [("system_prompt", spec.system_prompt_len), ("conversation", spec.question_len)]
                if t == 0
                else [("conversation", spec.question_len)]
            )
            out.append(
                BenchRequest(
                    f"mt-s{s}-t{t}",
                    prompt,
                    spec.output_len,
                    group=f"s{s}",
                    session=f"s{s}",
                    turn=t,
                    think_time_s=spec.think_time_s if t else 0.0,
                    segments=segs,
                )
            )
    return out[: spec.num_requests] if spec.num_requests else out


def agentic(spec: WorkloadSpec) -> list[BenchRequest]:
    """Agents sharing one system prompt and one set of tool definitions. Each ReAct step is a session turn
    (thought + tool call; the tool result comes back as the next turn's new tokens, after `think_time_s`);
    at every step the agent also explores `branches - 1` tree-of-thought branches: throwaway requests that
    share the step's whole context and add a short reasoning prefix. With `apps` > 1 the agents belong to that
    many applications, each with its own system prompt and tools. `oneoffs` other tenants' requests (own
    prompts, never reused) follow each step: the traffic an agent shares its pods with, which churns the
    caches between its steps."""
    rng = random.Random(spec.seed)
    systems = [_tokens(rng, spec.system_prompt_len)]
    tool_sets = [_tokens(rng, spec.tool_defs_len)]
    for _ in range(1, spec.apps):
        systems.append(_tokens(rng, spec.system_prompt_len))
        tool_sets.append(_tokens(rng, spec.tool_defs_len))
    out: list[BenchRequest] = []
    for t in range(spec.turns):
        for a in range(spec.num_sessions):
            new = _tokens(rng, spec.question_len)  # task (t=0) or the tool's observation
            system, tools = systems[a % spec.apps], tool_sets[a % spec.apps]
            base = (system + tools + new) if t == 0 else new
            segs = (
                [("system_prompt", spec.system_prompt_len), ("tool_definition", spec.tool_defs_len)] if t == 0 else []
            ) + [("conversation", spec.question_len)]
            out.append(
                BenchRequest(
                    f"ag-a{a}-t{t}",
                    base,
                    spec.output_len,
                    group=f"a{a}",
                    session=f"a{a}",
                    turn=t,
                    think_time_s=spec.think_time_s if t else 0.0,
                    segments=segs,
                )
            )
            for b in range(1, spec.branches):
                # A branch continues the same context without becoming history: its own one-off session.
                thought = _tokens(rng, spec.reasoning_len or max(1, spec.question_len // 4))
                out.append(
                    BenchRequest(
                        f"ag-a{a}-t{t}-b{b}",
                        base + thought,
                        max(1, spec.output_len // 2),
                        group=f"a{a}",
                        session=f"a{a}",
                        turn=t,
                        segments=segs + [("reasoning_branch", len(thought))],
                    )
                )
            for o in range(spec.oneoffs):
                prompt = _tokens(rng, spec.oneoff_len)
                out.append(
                    BenchRequest(
                        f"ag-a{a}-t{t}-o{o}", prompt, spec.output_len, group="oneoff", segments=[("other", len(prompt))]
                    )
                )
    return out[: spec.num_requests] if spec.num_requests else out


def random_workload(spec: WorkloadSpec) -> list[BenchRequest]:
    """Independent random prompts (no reuse): the cache-irrelevant baseline."""
    rng = random.Random(spec.seed)
    n = spec.num_requests or 32
    out = []
    for i in range(n):
        length = spec.input_len
        if spec.input_jitter:
            d = int(spec.input_len * spec.input_jitter)
            length = max(1, spec.input_len + rng.randint(-d, d))
        out.append(
            BenchRequest(f"rnd-{i}", _tokens(rng, length), spec.output_len, group="", segments=[("other", length)])
        )
    return out


def generate(spec: WorkloadSpec) -> list[BenchRequest]:
    """The workload's requests in send order (deterministic for `spec.seed`)."""
    spec.check()
    return {"shared-prefix": shared_prefix, "multi-turn": multi_turn, "agentic": agentic, "random": random_workload}[
        spec.kind
    ](spec)


class SessionTracker:
    """Builds each request's full prompt: for a follow-up turn, the session's history + its new tokens.

    A branch (a request whose id has `-b` after its turn) reads history without extending it; a main turn
    extends it with its full prompt and the output it actually got."""

    def __init__(self) -> None:
        self._history: dict[str, list[int]] = {}
        self._layout: dict[str, list[tuple[str, int]]] = {}  # session -> (kind, tokens) of its history
        self._turns_done: dict[str, int] = {}  # session -> main turns finished
        self._done_at: dict[str, float] = {}  # session -> when its last main turn finished

    def prompt_of(self, req: BenchRequest) -> list[int]:
        if req.session is None or req.turn == 0:
            return req.prompt
        return self._history.get(req.session, []) + req.prompt

    def segments_of(self, req: BenchRequest) -> list[tuple[str, int]]:
        """The layout of `prompt_of(req)`: the history's segments (each turn's prompt, then its output as
        `assistant`) and the request's own."""
        if req.session is None or req.turn == 0:
            return list(req.segments)
        return self._layout.get(req.session, []) + list(req.segments)

    @staticmethod
    def is_branch(req: BenchRequest) -> bool:
        return req.request_id.rsplit("-", 1)[-1].startswith("b")

    def record(self, req: BenchRequest, full_prompt: list[int], output: list[int], finished_at: float) -> None:
        if req.session is None or self.is_branch(req):
            return
        self._layout[req.session] = self.segments_of(req) + ([("assistant", len(output))] if output else [])
        self._history[req.session] = full_prompt + output
        self._turns_done[req.session] = self._turns_done.get(req.session, 0) + 1
        self._done_at[req.session] = finished_at

    def ready_at(self, req: BenchRequest) -> float | None:
        """When turn `req.turn` may be sent (turn - 1 main turns done: the last one's end + think time);
        None while its predecessor has not finished."""
        if req.session is None or req.turn == 0:
            return 0.0
        if self._turns_done.get(req.session, 0) < req.turn:
            return None
        return self._done_at[req.session] + req.think_time_s


# ---- text form -------------------------------------------------------------------------------------------

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "do", "gu", "be", "fi", "ho", "ja")


def token_word(t: int) -> str:
    """A deterministic pronounceable word for a token id (distinct ids -> distinct words)."""
    s = []
    x = t
    while True:
        s.append(_SYLLABLES[x % 16])
        x //= 16
        if x == 0:
            break
    return "".join(s)


def as_text(tokens: list[int]) -> str:
    """Token ids as text (one word each): for endpoints that take text or chat, not ids."""
    return " ".join(token_word(t) for t in tokens)


TOOL_CHUNK = 128  # tokens per tool definition when a prompt's tool segment becomes `tools`


def chat_body(tokens: list[int], segments: list[tuple[str, int]]) -> dict[str, Any]:
    """The chat form of a prompt whose layout is `segments` ((kind, tokens) in order, as `SessionTracker.
    segments_of` gives it): the fields of a /v1/chat/completions body that carry the prompt.

    Each kind becomes the structure an agent framework sends, so a server that types KV blocks from chat
    structure (kvtiers.types.chat_segments) sees the types the workload meant: `system_prompt` -> a system
    message, `tool_definition` -> `tools` (function definitions of TOOL_CHUNK tokens each), `conversation` /
    `other` -> user messages (the task, then each tool observation), `assistant` -> the assistant's earlier
    output, `reasoning_branch` -> a scratchpad the assistant is still writing (a final `<think>` message that
    the server continues: `continue_final_message`)."""
    messages: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    body: dict[str, Any] = {}
    pos = 0
    layout = list(segments)
    covered = sum(n for _, n in layout)
    if covered < len(tokens):
        layout.append(("conversation", len(tokens) - covered))
    for kind, n in layout:
        part, pos = tokens[pos : pos + n], pos + n
        if not part:
            continue
        if kind == "system_prompt":
            messages.append({"role": "system", "content": as_text(part)})
        elif kind == "tool_definition":
            for i in range(0, len(part), TOOL_CHUNK):
                tools.append(
                    {
                        "type": "function",
                        "function": {
                            "name": f"tool_{len(tools)}",
                            "description": as_text(part[i : i + TOOL_CHUNK]),
                            "parameters": {"type": "object", "properties": {}},
                        },
                    }
                )
        elif kind == "assistant":
            messages.append({"role": "assistant", "content": as_text(part)})
        elif kind == "reasoning_branch":
            messages.append({"role": "assistant", "content": "<think>" + as_text(part)})
            body.update(continue_final_message=True, add_generation_prompt=False)
        else:
            messages.append({"role": "user", "content": as_text(part)})
    if not messages or messages[-1]["role"] == "system":
        messages.append({"role": "user", "content": ""})
    body["messages"] = messages
    if tools:
        # The tools are context for the model, not calls to parse: "none" is what a vLLM server without a
        # tool-call parser accepts (the default, "auto", needs --enable-auto-tool-choice --tool-call-parser).
        body.update(tools=tools, tool_choice="none")
    return body
