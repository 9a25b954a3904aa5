"""Fake `ais_bench` package of ompipe's fake toolchain (om_pipeline.testing): `python -m ais_bench`
and `ais_bench.infer.interface.InferSession` run fake `.om` models with ONNX Runtime."""
