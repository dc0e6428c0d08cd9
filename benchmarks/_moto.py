"""A moto S3 server for the benchmarks (same setup as the test suite's fixture)."""

from __future__ import annotations

import logging
import os


def start_moto(bucket: str) -> tuple[object, str]:
    """Start moto in server mode on 127.0.0.1 (free port), export dummy credentials and
    ``MREPO_S3_ENDPOINT``, create ``bucket``; returns (server, endpoint URL)."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ["MREPO_S3_ENDPOINT"] = endpoint
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return server, endpoint
