"""token-producer (llm-d; earlier name `tokenizer`): tokenize each request before scheduling.

Upstream the EPP asks a tokenizer service (vLLM's render server over HTTP, or a UDS sidecar) so the router
hashes the same token ids the engine caches. router_lite's gateway tokenizes with the model servers' own
/tokenize (or --tokenizer), which yields the same ids for the same model: configuring this plugin turns
gateway tokenization on. The backend address is validated and reported, not dialled.
"""

from __future__ import annotations

from dataclasses import dataclass

from router_lite.plugins import Producer
from router_lite.registry import register


@dataclass
class HTTPBackend:
    url: str = ""
    http: str = ""  # an earlier spelling of url
    timeout: str = ""
    mm_timeout: str = ""


@dataclass
class UDSTokenizerConfig:
    socket_file: str = ""


@dataclass
class TokenProducerParams:
    model_name: str = ""
    vllm: HTTPBackend | None = None
    vllm_http: HTTPBackend | None = None
    sglang: HTTPBackend | None = None
    uds_tokenizer_config: UDSTokenizerConfig | None = None

    ALIASES = {"vllmHTTP": "vllmHttp"}

    @property
    def backend(self) -> str:
        """Where upstream would tokenize (for /debug and docs)."""
        for b in (self.vllm, self.vllm_http, self.sglang):
            if b is not None and (b.url or b.http):
                return b.url or b.http
        if self.uds_tokenizer_config is not None:
            return f"unix://{self.uds_tokenizer_config.socket_file}"
        return "model servers' /tokenize"


@register
class TokenProducer(Producer):
    type_name = "token-producer"
    synonyms = ("tokenizer",)
    Params = TokenProducerParams
    uses_tokens = True
