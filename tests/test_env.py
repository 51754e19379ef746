from __future__ import annotations

from pathlib import Path

from prefkit.env import CACHE_ENV, cache_dir, environment_report


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert cache_dir() == Path.home() / ".cache" / "prefkit"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(str(tmp_path / "setting")) == tmp_path / "setting"


def test_environment_report_names_versions_and_device(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    report = environment_report()
    import torch
    import transformers

    assert report["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    assert report["versions"]["transformers"] == transformers.__version__
    assert report["device"]["device"] in {"cpu", "cuda"}
    assert isinstance(report["device"]["bf16"], bool)
    assert report["cache_dir"] == str(tmp_path) and report["cache_source"] == f"${CACHE_ENV}"


def test_bf16_is_chosen_where_it_is_native_and_measured_faster(monkeypatch, tmp_path):
    import json

    import prefkit.env as env

    measured = []

    def rates(bf16: float, fp32: float):
        def measure() -> dict[str, float]:
            measured.append((bf16, fp32))
            return {"bf16": bf16, "fp32": fp32}

        return measure

    monkeypatch.setattr(env, "cpu_bf16_native", lambda: True)
    # A Xeon with AVX512-BF16 and no AMX: native, yet slower than fp32.
    monkeypatch.setattr(env, "matmul_rates", rates(190.0, 318.0))
    assert env.cpu_bf16_fast(tmp_path) is False
    # Measured once per CPU, torch version and thread count: the next call reads the cache.
    monkeypatch.setattr(env, "matmul_rates", rates(900.0, 220.0))
    assert env.cpu_bf16_fast(tmp_path) is False and len(measured) == 1
    cached = json.loads((tmp_path / env.MATMUL_RATES_FILE).read_text())
    assert list(cached.values()) == [{"bf16": 190.0, "fp32": 318.0}]
    # Another thread count is another measurement, kept beside the first.
    monkeypatch.setattr(env, "_rates_key", lambda: "another CPU")
    assert env.cpu_bf16_fast(tmp_path) is True and len(measured) == 2
    assert len(json.loads((tmp_path / env.MATMUL_RATES_FILE).read_text())) == 2
    # A damaged cache is measured again, not trusted.
    for damaged in ("{not json", '{"another CPU": {"bf16": "fast"}}', '{"another CPU": {"bf16": NaN}}', "[]"):
        (tmp_path / env.MATMUL_RATES_FILE).write_text(damaged)
        assert env.cpu_bf16_fast(tmp_path) is True
    assert len(measured) == 6
    # `prefkit env --remeasure` times them again, and nothing is left beside the file.
    assert env.cpu_matmul_rates(tmp_path, remeasure=True) == {"bf16": 900.0, "fp32": 220.0}
    assert len(measured) == 7 and [p.name for p in tmp_path.iterdir()] == [env.MATMUL_RATES_FILE]
    # Without native bf16 nothing is measured.
    monkeypatch.setattr(env, "cpu_bf16_native", lambda: False)
    assert env.cpu_bf16_fast(tmp_path) is False and len(measured) == 7


def test_the_cpu_is_told_apart_by_more_than_its_name():
    from prefkit.env import _cpu_name, _rates_key

    key = _rates_key()  # VMs' Xeons with and without AMX share the name "Intel(R) Xeon(R) Processor"
    assert key.startswith(_cpu_name() + " [") and "torch" in key and "threads" in key


def test_the_matmul_rates_are_measured():
    from prefkit.env import matmul_rates

    rates = matmul_rates()
    assert set(rates) == {"bf16", "fp32"} and all(rate > 0 for rate in rates.values())
