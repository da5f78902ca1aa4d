"""Tool calls as vLLM 0.32 makes them when started with `--tool-call-parser hermes` (and
`--enable-auto-tool-choice` for `tool_choice: "auto"`).

On vLLM, "required" and a named function constrain decoding with a JSON grammar (required: a list of
`{"name", "parameters"}`; named: the arguments object) and the parser turns that text into `tool_calls`; with
"auto" the model writes `<tool_call>{"name": ..., "arguments": ...}</tool_call>` and the hermes parser
extracts it. The simulated model "generates" exactly that text (arguments of the tool's parameter schema,
`structured.example`), token by token through the engine, so timing and `max_tokens` still apply, and this
module parses it back as vLLM does: whole (`parse`) or as stream deltas (`ToolStream`). Under "auto" the
simulated model calls the first tool unless the conversation's last message is a tool result (then it
answers in text, closing an agent's loop). Finish reasons follow vLLM: "tool_calls" for auto and required,
the engine's ("stop") for a named function.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

PARSERS = ("hermes",)
_HERMES_RE = re.compile(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", re.DOTALL)


@dataclass(frozen=True)
class ToolSettings:
    """The pod's tool flags, as vLLM's: `--tool-call-parser NAME`, `--enable-auto-tool-choice`."""

    parser: str | None = None
    auto: bool = False

    def __post_init__(self) -> None:
        if self.parser is not None and self.parser not in PARSERS:
            raise ValueError(f"--tool-call-parser: expected one of {', '.join(PARSERS)}, got {self.parser!r}")
        if self.auto and self.parser is None:
            raise ValueError("--enable-auto-tool-choice requires --tool-call-parser")  # vLLM's start-up error


@dataclass(frozen=True)
class CallSpan:
    """One call in the forced text: the function's name and where its arguments' JSON lies."""

    name: str
    start: int
    end: int
    id: str = field(default_factory=lambda: f"chatcmpl-tool-{uuid.uuid4().int & (2**64 - 1):016x}")


@dataclass(frozen=True)
class ToolPlan:
    """What a tool-calling choice will generate: `mode` ("required", "named", "auto") and its calls."""

    mode: str
    calls: tuple[CallSpan, ...]


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def plan_text(mode: str, name: str, arguments: Any) -> tuple[str, ToolPlan]:
    """The text the model generates for one call of `name`, and where its arguments are in it."""
    args = _dump(arguments)
    if mode == "named":
        head, tail = "", ""
    elif mode == "required":
        head, tail = '[{"name": ' + _dump(name) + ', "parameters": ', "}]"
    elif mode == "auto":
        head, tail = '<tool_call>\n{"name": ' + _dump(name) + ', "arguments": ', "}\n</tool_call>"
    else:
        raise ValueError(f"tool mode: expected named, required or auto, got {mode!r}")
    span = CallSpan(name, len(head), len(head) + len(args))
    return head + args + tail, ToolPlan(mode, (span,))


def _call(span: CallSpan, name: str, arguments: str) -> dict[str, Any]:
    return {"id": span.id, "type": "function", "function": {"name": name, "arguments": arguments}}


def parse(plan: ToolPlan, text: str, finish_reason: str | None) -> tuple[str | None, list[dict[str, Any]], str | None]:
    """(content, tool_calls, finish_reason) of a finished choice, as vLLM's parser and chat handler give them."""
    if plan.mode == "named":
        if not text.strip():
            return "", [], finish_reason
        return "", [_call(plan.calls[0], plan.calls[0].name, text)], finish_reason
    if plan.mode == "required":
        calls = []
        try:
            items = json.loads(text)
            if isinstance(items, list):
                for span, item in zip(plan.calls, items, strict=False):
                    calls.append(_call(span, str(item["name"]), _dump(item.get("parameters", {}))))
        except (ValueError, KeyError, TypeError):
            calls = []
        return "", calls, "tool_calls" if finish_reason == "stop" else finish_reason
    if "<tool_call>" not in text:
        return text, [], finish_reason
    try:
        found = [json.loads(a or b) for a, b in _HERMES_RE.findall(text)]
        calls = [_call(span, str(f["name"]), _dump(f["arguments"])) for span, f in zip(plan.calls, found, strict=False)]
    except (ValueError, KeyError, TypeError):
        return text, [], finish_reason
    content = text[: text.find("<tool_call>")]
    return (content if content.strip() else None), calls, "tool_calls"


class ToolStream:
    """Stream deltas of a tool-calling choice: the call's header (id, name, empty arguments) as soon as the
    text reaches its arguments, then the arguments piece by piece, as vLLM's streaming parsers send them."""

    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self.text = ""
        self._sent = [0] * len(plan.calls)  # argument characters sent, per call
        self._opened = [False] * len(plan.calls)

    def push(self, piece: str) -> list[dict[str, Any]]:
        """`tool_calls` delta entries for the next piece of generated text (empty: nothing to send yet)."""
        self.text += piece
        out = []
        for i, span in enumerate(self.plan.calls):
            if len(self.text) < span.start:
                break
            if not self._opened[i]:
                self._opened[i] = True
                out.append({"index": i, **_call(span, span.name, "")})
            upto = min(len(self.text), span.end)
            if upto > span.start + self._sent[i]:
                out.append({"index": i, "function": {"arguments": self.text[span.start + self._sent[i] : upto]}})
                self._sent[i] = upto - span.start
        return out

    def finish_reason(self, reason: str | None) -> str | None:
        """The finish reason the last chunk carries."""
        if self.plan.mode == "named" or reason != "stop":
            return reason
        return "tool_calls"
