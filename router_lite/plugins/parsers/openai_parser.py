"""openai-parser (GIE): read requests and responses as the OpenAI API. The gateway's own parsing; llm-d
injects it when `parser` is absent, as router_lite does."""

from __future__ import annotations

from router_lite.plugins import Parser
from router_lite.registry import register


@register
class OpenAIParser(Parser):
    type_name = "openai-parser"
