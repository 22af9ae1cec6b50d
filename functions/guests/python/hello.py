"""A MadBase Edge Function in Python: a wasi:http/proxy component built by componentize-py
(scripts/build-functions.sh), on the raw wasi:http bindings it generates.

Any request: 200 application/json {"message": "Hello from Python", "method": <method>, "path": <URL path>}.
"""

import json

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Other,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        method = request.method()
        method = method.value if isinstance(method, Method_Other) else type(method).__name__.split("_", 1)[1].upper()
        path = (request.path_with_query() or "/").split("?", 1)[0]
        message = {"message": "Hello from Python", "method": method, "path": path}
        body = json.dumps(message, separators=(",", ":")).encode()

        response = OutgoingResponse(Fields.from_list([("content-type", b"application/json")]))
        response.set_status_code(200)
        response_body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with response_body.write() as stream:
            # blocking-write-and-flush takes at most 4096 bytes at a time.
            for start in range(0, len(body), 4096):
                stream.blocking_write_and_flush(body[start : start + 4096])
        OutgoingBody.finish(response_body, None)
