"""Fast checks of the real-engine support that need no vLLM: command lines, environment, install errors,
the tiny model's tokenizer, and the calibration fit. (The `-m vllm` tests exercise them against vLLM.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmdctl.engines.vllm_env import EngineError, install_vllm, vllm_python, vllm_status
from llmdctl.engines.vllm_local import (
    effective_block_size,
    kv_cache_bytes,
    kv_events_config,
    max_model_len,
    router_args,
    threads_bind,
    vllm_components,
    vllm_env,
)
from llmdctl.profile import PoolSpec

REPO = Path(__file__).resolve().parents[2]


class _Profile:
    model = "my-model"

    class router:  # noqa: N801 - mimics Profile.router
        tokenizer = None


def _model_dir(tmp_path: Path) -> Path:
    cfg = {
        "hidden_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_hidden_layers": 2,
        "head_dim": 64,
        "max_position_embeddings": 4096,
        "dtype": "bfloat16",
        "vocab_size": 2048,
        "intermediate_size": 512,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "tokenizer.json").write_text("{}")
    return tmp_path


def test_cpu_block_size_rounds_up_to_32_and_gpu_keeps_it() -> None:
    assert [effective_block_size(b) for b in (1, 16, 32, 33, 64)] == [32, 32, 32, 64, 64]
    assert effective_block_size(16, "gpu") == 16
    with pytest.raises(ValueError, match="block_size"):
        effective_block_size(0)


def test_thread_binding_gives_each_instance_its_own_cores() -> None:
    assert [threads_bind(i, 2, cores=2) for i in range(2)] == ["0", "1"]
    assert [threads_bind(i, 2, cores=8) for i in range(2)] == ["0-3", "4-7"]
    assert [threads_bind(i, 3, cores=2) for i in range(3)] == ["0", "1", "0"]


def test_kv_events_config_binds_on_loopback_and_names_the_topic() -> None:
    doc = json.loads(kv_events_config(5557, "kv@127.0.0.1:8100@m"))
    # issue 18: never tcp://*: the events carry every prompt's token ids
    assert doc == {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": "tcp://127.0.0.1:5557",
        "topic": "kv@127.0.0.1:8100@m",
    }


def test_environment_controls_the_hash_seed_explicitly() -> None:
    leaked = {"PYTHONHASHSEED": "7", "PYTHONPATH": "/x", "HOME": "/root"}
    env = vllm_env(None, "0", base=leaked)
    assert "PYTHONHASHSEED" not in env and "PYTHONPATH" not in env and env["HOME"] == "/root"
    assert {env[k] for k in ("VLLM_NO_USAGE_STATS", "DO_NOT_TRACK", "HF_HUB_OFFLINE")} == {"1"}
    assert env["VLLM_HOST_IP"] == "127.0.0.1" and env["VLLM_CPU_OMP_THREADS_BIND"] == "0"
    assert vllm_env("42", None, base=leaked)["PYTHONHASHSEED"] == "42"


def test_kv_memory_is_exact_for_a_known_model(tmp_path: Path) -> None:
    model = _model_dir(tmp_path)
    # 2 (K,V) x 2 layers x 2 kv heads x 64 x 2 bytes = 1 KiB per token; one spare block for vLLM's null block
    assert kv_cache_bytes(str(model), 32, 100) == 101 * 32 * 1024
    assert kv_cache_bytes("org/hub-model", 32, 100) > 0
    assert max_model_len(str(model), 16384) == 4096 and max_model_len("org/hub-model", 16384) == 16384


def test_components_carry_every_flag_and_per_pod_settings(tmp_path: Path) -> None:
    model = str(_model_dir(tmp_path))
    pool = PoolSpec(
        name="pod",
        replicas=2,
        block_size=16,
        num_gpu_blocks=64,
        max_model_len=16384,
        args=["--seed", "1"],
        env={"VLLM_SERVER_DEV_MODE": "1"},
    )
    pods = vllm_components(
        _Profile(), pool, [8100, 8101], [5557, 5558], model, python="/venv/bin/python", build="cpu", cores=2
    )
    assert [p.name for p in pods] == ["pod-0", "pod-1"]
    argv = pods[1].argv
    assert argv[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]

    def flag(name: str) -> str:
        return argv[argv.index(name) + 1]

    assert flag("--block-size") == "32" and flag("--port") == "8101" and flag("--host") == "127.0.0.1"
    assert flag("--served-model-name") == "my-model" and flag("--max-model-len") == "4096"
    assert flag("--kv-cache-memory-bytes") == str(65 * 32 * 1024)
    assert "--enforce-eager" in argv and "--enable-prefix-caching" in argv and argv[-2:] == ["--seed", "1"]
    assert json.loads(flag("--kv-events-config"))["topic"] == "kv@127.0.0.1:8101@my-model"
    assert [p.env["VLLM_CPU_OMP_THREADS_BIND"] for p in pods] == ["0", "1"]
    assert all(p.env["VLLM_SERVER_DEV_MODE"] == "1" for p in pods)  # the pool's env reaches every pod
    assert pods[0].kv_events_endpoint == "tcp://127.0.0.1:5557" and pods[0].hash_seed == "vllm-none-hash"
    gpu = vllm_components(_Profile(), pool, [8100, 8101], [5557, 5558], model, python="p", build="gpu")
    assert "--enforce-eager" not in gpu[0].argv and gpu[1].env["CUDA_VISIBLE_DEVICES"] == "1"
    assert gpu[0].argv[gpu[0].argv.index("--block-size") + 1] == "16"
    with pytest.raises(ValueError, match="ports"):
        vllm_components(_Profile(), pool, [8100], [5557], model, python="p", build="cpu")


def test_router_gets_the_pods_seed_and_local_tokenizer(tmp_path: Path) -> None:
    profile = _Profile()
    profile.model = str(_model_dir(tmp_path))
    assert router_args(profile) == ["--hash-seed", "vllm-none-hash", "--tokenizer", str(tmp_path.resolve())]
    profile.model = "org/hub-model"
    assert router_args(profile, "42") == ["--hash-seed", "42"]


def test_missing_engine_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDCTL_VLLM_VENV", str(tmp_path / "none"))
    with pytest.raises(EngineError, match="llmdctl engine install vllm"):
        vllm_python()
    assert not vllm_status().installed
    out = subprocess.run(
        [sys.executable, "-m", "llmdctl", "engine", "status"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "LLMDCTL_VLLM_VENV": str(tmp_path / "none"), "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 1 and "not installed" in out.stdout


def test_a_failing_install_step_names_the_step_and_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDCTL_VLLM_VENV", str(tmp_path / "venv"))
    seen: list[tuple[str, str]] = []
    with pytest.raises(EngineError, match=r"step 'venv'.*cannot run /nonexistent/python"):
        install_vllm(lambda step, state, detail: seen.append((step, state)), build="cpu", python="/nonexistent/python")
    assert seen == [("venv", "start")]
    with pytest.raises(EngineError, match="--build"):
        install_vllm(build="tpu")  # type: ignore[arg-type]


def test_tiny_tokenizer_is_deterministic_and_adds_bos() -> None:
    from llmdctl.tinymodel import CHAT_TEMPLATE, corpus, train_tokenizer

    assert corpus(3)[:5] == corpus(3)[:5] and corpus(3)[:5] != corpus(4)[:5]
    a, b = train_tokenizer(2048), train_tokenizer(2048)
    assert a.to_str() == b.to_str()
    enc = a.encode("The router sends each request to the pod.")
    assert enc.ids[0] == a.token_to_id("<s>") and a.decode(enc.ids) == "The router sends each request to the pod."
    import jinja2

    text = jinja2.Template(CHAT_TEMPLATE).render(
        messages=[{"role": "user", "content": "hi"}], add_generation_prompt=True, bos_token="<s>", eos_token="</s>"
    )
    assert text == "<s><|user|>\nhi</s>\n<|assistant|>\n"


def test_pool_env_from_set_is_strings_and_cannot_override_the_hash_seed() -> None:
    from llmdctl.profile import ProfileError, load_profile

    prof = load_profile("precise-prefix-cache", ["pools.0.env.VLLM_SERVER_DEV_MODE=1", "pools.0.env.FLAG=true"])
    assert prof.pools[0].env == {"VLLM_SERVER_DEV_MODE": "1", "FLAG": "1"}
    with pytest.raises(ProfileError, match="PYTHONHASHSEED"):
        load_profile("precise-prefix-cache", ["pools.0.env.PYTHONHASHSEED=0"])
    with pytest.raises(ProfileError, match="not an environment variable name"):
        load_profile("precise-prefix-cache", ["pools.0.env.1BAD=x"])
