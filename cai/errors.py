"""One error type for everything a user can get wrong.

The CLI prints a CaiError as a single line and exits with code 2, so every
check in the package raises it with a message that names the file, the field
and what is wrong.
"""


class CaiError(Exception):
    """A user-facing error: its message is the whole story, no traceback."""

    exit_code = 2


def located(path, where: str, message: str) -> CaiError:
    """Build the canonical one-line message `FILE: WHERE: MESSAGE`."""
    prefix = f"{path}" if not where else f"{path}: {where}"
    return CaiError(f"{prefix}: {message}")


class SettingError(CaiError):
    """A bad value of one job setting; the CLI names the flag (`--batch-size`), the library the field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
