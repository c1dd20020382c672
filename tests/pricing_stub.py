"""A stand-in for the AWS Price List Query API on 127.0.0.1, for end-to-end tests of real processes
(moto has no ``pricing`` service). Point a process at it with ``AWS_ENDPOINT_URL_PRICING`` (botocore's
per-service endpoint variable, which wins over ``AWS_ENDPOINT_URL``).

It speaks the API's wire protocol (JSON 1.1: ``POST /`` with ``X-Amz-Target:
AWSPriceListService.GetProducts``) and answers with ``GetProducts`` bodies shaped like AWS's (see
``cost_fixtures``): the instance-hour price of the ``instanceType`` filter from ``hourly``, the
GB-month of the ``volumeApiName`` filter from ``gb_month``. ``deny=True``: every call is refused with
``AccessDeniedException`` (HTTP 400), as AWS refuses a caller without ``pricing:GetProducts``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cost_fixtures import instance_answer, volume_answer


class PricingStub:
    def __init__(self, hourly: dict[str, str], gb_month: dict[str, str], *, deny: bool = False) -> None:
        self.hourly = hourly
        self.gb_month = gb_month
        self.deny = deny
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                stub.requests.append({"target": self.headers.get("X-Amz-Target"), "body": body})
                status, answer = stub.answer(body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.deny:
            return 400, {"__type": "AccessDeniedException",
                         "message": "User is not authorized to perform: pricing:GetProducts"}
        fields = {f["Field"]: f["Value"] for f in body.get("Filters") or ()}
        region = fields.get("regionCode", "us-east-1")
        if "instanceType" in fields and fields["instanceType"] in self.hourly:
            return 200, instance_answer(fields["instanceType"], region, self.hourly[fields["instanceType"]])
        if "volumeApiName" in fields and fields["volumeApiName"] in self.gb_month:
            return 200, volume_answer(fields["volumeApiName"], region, self.gb_month[fields["volumeApiName"]])
        return 200, {"FormatVersion": "aws_v1", "PriceList": []}

    def __enter__(self) -> "PricingStub":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
