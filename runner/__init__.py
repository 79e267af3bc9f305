"""The compute job runner: the `configure` and `publish` stages around a consumer's algorithm.

It runs inside the AWS Batch job (container image built from runner/Dockerfile) and as plain
processes under the local dispatcher, so it depends on the standard library and boto3 only.
"""
