"""The live HTTP API (DESIGN §5): a Flask blueprint, an app, a production server, the MLflow plugin.

Importing this package imports Flask; ``import trackbridge`` does not.
"""

from .app import create_app, mount
from .blueprint import create_blueprint
from .settings import WebSettings

__all__ = ["WebSettings", "create_app", "create_blueprint", "mount"]
