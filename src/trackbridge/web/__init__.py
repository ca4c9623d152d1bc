"""The live HTTP API (DESIGN §5): one route table, served by a Flask blueprint (WSGI) and an ASGI app.

Importing this package imports Flask; ``import trackbridge`` does not.
"""

from .app import create_app, create_asgi_app, mount
from .blueprint import create_blueprint
from .settings import WebSettings

__all__ = ["WebSettings", "create_app", "create_asgi_app", "create_blueprint", "mount"]
