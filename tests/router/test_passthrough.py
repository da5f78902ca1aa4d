"""Routes the router forwards as they are, on real processes: a simulated pod's /tokenize, Renderer API and
/v1/responses answered through the router; render refused (403) where the pod was started without
--enable-scale-out, as vLLM refuses it."""

from __future__ import annotations

from tests.router.procs import MODEL, router, sim_pods, wait_until, words


def test_tokenize_render_and_responses_pass_through_the_router():
    with sim_pods(2, extra=["--enable-scale-out"]) as sims, router(sims.endpoint_entries()) as rt, rt.client() as c:
        prompt = words("pt", 40)
        direct = c.post(f"http://{sims.address(0)}/tokenize", json={"model": MODEL, "prompt": prompt}).json()
        via = c.post("/tokenize", json={"model": MODEL, "prompt": prompt})
        assert via.status_code == 200 and via.json()["tokens"] == direct["tokens"]
        assert via.headers["x-llmd-endpoint"] in {sims.address(0), sims.address(1)}
        assert c.post("/detokenize", json={"model": MODEL, "tokens": direct["tokens"]}).json()["prompt"]
        rendered = c.post("/v1/completions/render", json={"model": MODEL, "prompt": prompt, "max_tokens": 5})
        assert rendered.status_code == 200, rendered.text
        (gen,) = rendered.json()
        assert (
            gen["token_ids"] == direct["tokens"] and gen["sampling_params"]["max_tokens"] == 5 and gen["model"] == MODEL
        )
        chat = c.post(
            "/v1/chat/completions/render", json={"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
        )
        assert chat.status_code == 200 and len(chat.json()["token_ids"]) > len(direct["tokens"])  # the chat template
        bad = c.post("/tokenize", content=b"[1, 2]", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
        wait_until(lambda: all(e["inflight"]["requests"] == 0 for e in c.get("/debug/endpoints").json()["endpoints"]))


def test_render_is_refused_without_scale_out_as_vllm_refuses_it():
    with sim_pods(1) as sims, router(sims.endpoint_entries()) as rt, rt.client() as c:
        r = c.post("/v1/completions/render", json={"model": MODEL, "prompt": "hi"})
        assert r.status_code == 403 and "--enable-scale-out" in r.json()["error"]["message"]
