"""mrepo.api: the FastAPI server (``mrepo serve``): remote protocol, access control, web view.

Imports mrepo.graph and mrepo.store. The matching client is
:class:`mrepo.store.http_backend.HttpBackend` (``http(s)://host:port/repo`` URLs).
"""

from .app import create_app
from .png import central_slice, encode_png, to_uint8
from .tokens import ROLES, Principal, TokenStore, add_token, hash_secret

__all__ = ["ROLES", "Principal", "TokenStore", "add_token", "central_slice", "create_app", "encode_png",
           "hash_secret", "to_uint8"]
