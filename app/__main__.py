"""``python -m app``: serve the studio with Flask's threaded development server.

Binds to ``MMS_HOST``:``MMS_PORT`` (127.0.0.1:8050 by default). Debug mode
(reloader, Dash dev tools) only with ``MMS_DEBUG=true`` and never in production;
use gunicorn (``app.wsgi:server``) for production.
"""

from __future__ import annotations

import sys

from app.settings import SettingsError, load_settings


def main() -> int:
    """Read the settings, build the studio and serve it until interrupted.

    Returns:
        The process exit code: 2 when the settings are invalid.
    """
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    from app.factory import create_app

    studio = create_app(settings)
    debug = settings.debug and not settings.is_production
    studio.run(
        host=settings.host,
        port=settings.port,
        debug=debug,
        threaded=True,
        # The version check asks a remote server; the studio makes no outside request.
        dev_tools_disable_version_check=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
