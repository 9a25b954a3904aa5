"""ompipe's fake Ascend toolchain, shipped so CI (and users without an NPU) can run every stage
for real: `atc`, `python -m ais_bench`, `InferSession` and `npu-smi` that follow
ascend-tools.md to the letter, over a fake `.om` that carries the ONNX model.

    from om_pipeline.testing import fake_toolchain_env
    execute.set_toolchain_env(fake_toolchain_env(root))

Modules: fake_atc, fake_ais_bench, fake_npu_smi (each `main(argv) -> int`), fake_om (the
format), fake_runtime (ONNX Runtime under both), toolchain (the PATH/PYTHONPATH overlay),
fake_ais_bench_args (the real ais_bench's argument rules), ais_bench_parity (the fake against the
real ais_bench parser).
"""
from .fake_om import MAGIC, NotAFakeOm, read_fake_om, write_fake_om
from .toolchain import fake_toolchain_env

__all__ = ["MAGIC", "NotAFakeOm", "fake_toolchain_env", "read_fake_om", "write_fake_om"]
