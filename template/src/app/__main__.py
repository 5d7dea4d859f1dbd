"""Entry point of ``python -m app`` and of the console script."""

import sys

from pydantic import ValidationError
from pydantic_settings import SettingsError

from app.core.config import DotEnvError, Settings, describe_errors, get_settings
from app.core.log import configure_logging
from app.main import create_app
from app.server import serve

EXIT_CONFIG_ERROR = 2


def load_settings_or_exit() -> Settings:
    """Load settings; on bad configuration print one line per variable and exit 2.

    Returns:
        The validated settings.

    Raises:
        SystemExit: With status 2 when the configuration is invalid.
    """
    try:
        return get_settings()
    except ValidationError as error:
        lines = describe_errors(error)
    except DotEnvError as error:
        lines = error.lines
    except SettingsError as error:
        # pydantic-settings names the field and the source, never the value.
        lines = [str(error)]
    sys.stderr.write("".join(f"config error: {line}\n" for line in lines))
    raise SystemExit(EXIT_CONFIG_ERROR)


def main() -> None:
    """Load settings, configure logging and serve until SIGTERM."""
    settings = load_settings_or_exit()
    configure_logging(settings)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
