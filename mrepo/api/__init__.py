"""mrepo.api: the FastAPI server (``mrepo serve``): remote protocol, access control, web view.

Imports mrepo.graph and mrepo.store. The matching client is
:class:`mrepo.store.http_backend.HttpBackend` (``http(s)://host:port/repo`` URLs).
"""

from ..store import require_extra

for _module in ("fastapi", "uvicorn"):  # one line naming "pip install 'mrepo[server]'" instead of a traceback
    require_extra(_module, "server", "mrepo serve (the HTTP server)")

from .app import create_app  # noqa: E402
from .png import central_slice, encode_png, to_uint8  # noqa: E402
from .tokens import ROLES, Principal, TokenStore, add_token, hash_secret  # noqa: E402

__all__ = ["ROLES", "Principal", "TokenStore", "add_token", "central_slice", "create_app", "encode_png",
           "hash_secret", "to_uint8"]
