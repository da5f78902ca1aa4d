"""Structured output as vLLM produces it: JSON of a schema's shape; tool choices as its parser flags allow.

vLLM constrains decoding with a grammar for `response_format` (json_object / json_schema); the simulated model
"generates" a fixed JSON document of the asked shape instead (its tokens go through the engine like any output,
so timing and max_tokens still apply). Every `tool_choice` but "none" needs a tool-call parser on vLLM 0.32
("auto": `--enable-auto-tool-choice --tool-call-parser`; "required" and a named function: `--tool-call-parser`,
as a live vLLM 0.32 pod answers, tests/vllm/test_vllm_params.py). A pod started without one refuses them with
vLLM's messages; with `--tool-call-parser hermes` the output is a tool call (sim_gpu.tools); with a parser but
without `--enable-auto-tool-choice`, "auto" answers in plain text, as vLLM does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sim_gpu.tools import ToolPlan, ToolSettings, plan_text

AUTO_TOOLS_REFUSED = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
REQUIRED_TOOLS_REFUSED = 'tool_choice="required" requires --tool-call-parser to be set'


class StructuredError(ValueError):
    """A request vLLM refuses (400): `param` names the field."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class Forced:
    """Output text the grammar would force; `tools`: the tool calls in it, when it is one."""

    text: str
    tools: ToolPlan | None = None


def example(schema: Any, root: dict | None = None, depth: int = 0) -> Any:
    """A small value valid for a JSON schema (enum/const first, then type; `$ref` into `$defs`)."""
    if not isinstance(schema, dict) or depth > 8:
        return {}
    root = root if root is not None else schema
    if "$ref" in schema and isinstance(schema["$ref"], str) and schema["$ref"].startswith("#/"):
        node: Any = root
        for part in schema["$ref"][2:].split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return example(node, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example(schema[key][0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        return {name: example(sub, root, depth + 1) for name, sub in props.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1) or 1))
        return [example(schema.get("items", {}), root, depth + 1) for _ in range(min(count, 3))]
    if kind == "integer":
        return int(schema.get("minimum", 1) or 1)
    if kind == "number":
        return float(schema.get("minimum", 1.5) or 1.5)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    length = int(schema.get("minLength", 0) or 0)
    return "sim" + "m" * max(0, length - 3)


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list) or not all(
        isinstance(t, dict) and isinstance(t.get("function"), dict) and isinstance(t["function"].get("name"), str)
        for t in tools
    ):
        raise StructuredError('\'tools\' must be a list of {"type": "function", "function": {"name", ...}}.', "tools")
    return tools


NO_PARSER = ToolSettings()


def forced_output(body: dict[str, Any], chat: bool, tools: ToolSettings = NO_PARSER) -> Forced | None:
    """What `response_format` / `tool_choice` force the output to be; None when the output is free text."""
    forced = None
    if chat:
        forced = _tool_choice(body, tools)
    if forced is None:
        forced = _response_format(body.get("response_format"))
    return forced


def _tool_choice(body: dict[str, Any], settings: ToolSettings) -> Forced | None:
    tools = _tools(body)
    choice = body.get("tool_choice")
    if choice is None:
        choice = "auto" if tools else "none"  # vLLM's default: "auto" as soon as tools are given
    if choice != "none" and not tools:
        raise StructuredError("When using `tool_choice`, `tools` must be set.", "tool_choice")
    if choice == "none":
        return None
    if choice == "auto":
        if settings.parser is None:
            raise StructuredError(AUTO_TOOLS_REFUSED, "tool_choice")
        messages = body.get("messages")
        last = messages[-1] if isinstance(messages, list) and messages else None
        if not settings.auto or (isinstance(last, dict) and last.get("role") == "tool"):
            return None  # plain text: no auto parsing, or the model answers the tool's result
        return _call(tools[0], "auto")
    if choice == "required":
        if settings.parser is None:
            raise StructuredError(REQUIRED_TOOLS_REFUSED, None)
        return _call(tools[0], "required")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        tool = next((t for t in tools if t["function"]["name"] == name), None)
        if tool is None:
            raise StructuredError(f"Tool '{name}' has not been passed in `tools`.", "tool_choice")
        if settings.parser is None:
            raise StructuredError(f'tool_choice=function "{name}" requires --tool-call-parser to be set', None)
        return _call(tool, "named")
    raise StructuredError(
        f'Invalid value for `tool_choice`: {choice!r}! Only named tools, "none", "auto" or "required" are supported.',
        "tool_choice",
    )


def _call(tool: dict[str, Any], mode: str) -> Forced:
    """One call of `tool` with arguments of its parameter schema, in the text `mode` makes the model write."""
    params = tool["function"].get("parameters")
    schema = params if isinstance(params, dict) and params else {"type": "object"}
    text, plan = plan_text(mode, tool["function"]["name"], example(schema))
    return Forced(text, plan)


def _response_format(fmt: Any) -> Forced | None:
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
        raise StructuredError("'response_format' must be an object with a 'type'.", "response_format")
    kind = fmt["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return Forced(_dump({"answer": "sim"}))
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise StructuredError(
                "response_format.json_schema must be set when type is json_schema.", "response_format"
            )
        schema = spec.get("schema", spec.get("json_schema"))
        if not isinstance(schema, dict):
            raise StructuredError("response_format.json_schema.schema must be a JSON schema object.", "response_format")
        return Forced(_dump(example(schema)))
    if kind == "structural_tag":
        raise StructuredError(
            "response_format type 'structural_tag' is accepted by vLLM but not simulated by sim_gpu.", "response_format"
        )
    raise StructuredError(
        f"response_format.type must be one of text, json_object, json_schema, structural_tag; got {kind!r}.",
        "response_format",
    )
