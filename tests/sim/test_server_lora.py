"""LoRA over HTTP on a real simulator process: adapters as model names, /v1/models, vLLM's load/unload
endpoints and their errors (only with VLLM_ALLOW_RUNTIME_LORA_UPDATING), vllm:lora_requests_info."""

from __future__ import annotations

import json

import httpx
from typer.testing import CliRunner

from router_lite import promtext
from tests.sim.simproc import sim_server

LORA_ARGS = (
    "--time-scale",
    "0",
    "--num-gpu-blocks",
    "400",
    "--enable-lora",
    "--max-loras",
    "1",
    "--lora-modules",
    "sql=org/sql-lora",
    "--lora-modules",
    json.dumps({"name": "chat", "path": "org/chat-lora", "base_model_name": "sim-model"}),
)
RUNTIME = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}


def _lora_series(text: str) -> list[tuple[dict[str, str], float]]:
    return [(labels, v) for name, labels, v in promtext.parse(text, ("vllm:lora_requests_info",))]


def test_adapters_serve_list_load_and_unload_as_vllm(tmp_path):
    with sim_server(*LORA_ARGS, env=RUNTIME) as s, httpx.Client(base_url=s.base, timeout=10) as c:
        cards = c.get("/v1/models").json()["data"]
        assert [(m["id"], m["parent"], m["root"]) for m in cards] == [
            ("sim-model", None, "Llama-3.1-8B"),
            ("sql", "sim-model", "org/sql-lora"),
            ("chat", "sim-model", "org/chat-lora"),
        ]
        r = c.post("/v1/completions", json={"model": "sql", "prompt": "select", "max_tokens": 3})
        assert r.status_code == 200 and r.json()["model"] == "sql"
        series = _lora_series(c.get("/metrics").text)
        names = {"max_lora", "running_lora_adapters", "waiting_lora_adapters"}
        assert series and all(set(lb) == names for lb, _ in series)
        assert any(lb["running_lora_adapters"] == "sql" and lb["max_lora"] == "1" for lb, _ in series)
        assert all(v > 1.7e9 for _, v in series)  # the value is the wall-clock time the series was current

        def load(body: dict) -> httpx.Response:
            return c.post("/v1/load_lora_adapter", json=body)

        bad = load({"lora_name": "x"})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "InvalidUserInput"
        assert bad.json()["error"]["message"] == "Both 'lora_name' and 'lora_path' must be provided."
        dup = load({"lora_name": "sql", "lora_path": "org/other"})
        assert dup.status_code == 400 and "has already been loaded" in dup.json()["error"]["message"]
        missing = load({"lora_name": "gone", "lora_path": str(tmp_path / "nothing")})
        assert missing.status_code == 404 and "No adapter found" in missing.json()["error"]["message"]
        big = tmp_path / "big"
        big.mkdir()
        (big / "adapter_config.json").write_text(json.dumps({"r": 64}))
        too_big = load({"lora_name": "big", "lora_path": str(big)})
        assert too_big.status_code == 400 and "greater than max_lora_rank 16" in too_big.json()["error"]["message"]

        ok = load({"lora_name": "new", "lora_path": "org/new-lora"})
        assert ok.status_code == 200 and ok.text == "Success: LoRA adapter 'new' added successfully."
        assert "new" in [m["id"] for m in c.get("/v1/models").json()["data"]]
        assert c.post("/v1/completions", json={"model": "new", "prompt": "hi", "max_tokens": 2}).status_code == 200
        gone = c.post("/v1/unload_lora_adapter", json={"lora_name": "new"})
        assert gone.text == "Success: LoRA adapter 'new' removed successfully."
        again = c.post("/v1/unload_lora_adapter", json={"lora_name": "new"})
        assert again.status_code == 404
        assert again.json()["error"]["message"] == "The lora adapter 'new' cannot be found."
        after = c.post("/v1/completions", json={"model": "new", "prompt": "hi", "max_tokens": 2})
        assert after.status_code == 404 and "does not exist" in after.json()["error"]["message"]


def test_runtime_endpoints_need_the_env_var():
    with sim_server(*LORA_ARGS, env={"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "0"}) as s:
        r = httpx.post(s.base + "/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "org/x"}, timeout=10)
        assert r.status_code == 404  # the route does not exist, as in vLLM without the variable
        ok = httpx.post(
            s.base + "/v1/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            timeout=10,
        )
        assert ok.status_code == 200


def test_lora_flag_errors_are_one_line():
    from sim_gpu.cli import app

    runner = CliRunner()
    for args, fragment in (
        (["--lora-modules", "a=org/a"], "needs --enable-lora"),
        (["--enable-lora", "--lora-modules", "nonsense"], "--lora-modules: expected name=path"),
        (["--enable-lora", "--max-lora-rank", "7"], "--max-lora-rank: expected one of"),
        (["--enable-lora", "--max-loras", "2", "--max-cpu-loras", "1"], "--max-cpu-loras"),
        (["--enable-lora", "--lora-modules", "a=/no/such/dir"], "No adapter found"),
    ):
        result = runner.invoke(app, ["serve", "--port", "1", *args])
        assert result.exit_code == 2, (args, result.output)
        assert fragment in result.output and "Traceback" not in result.output
