"""Errors as OpenAI's API writes them: `{"error": {"message", "type", "param", "code"}}`."""
from fastapi.responses import JSONResponse

TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "not_found_error",
         405: "invalid_request_error", 409: "conflict_error", 413: "invalid_request_error",
         429: "requests", 503: "server_overloaded"}


class APIError(Exception):
    def __init__(self, status, message, param=None, code=None, headers=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_body(status, message, param=None, code=None):
    return {"error": {"message": message, "type": TYPES.get(status, "server_error"), "param": param, "code": code}}


def error_response(status, message, param=None, code=None, headers=None):
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)
