"""User-facing errors and the wrapper every CLI runs under."""
import sys


class UserError(ValueError):
    """Bad input from the user: the message says what, where, and what to do."""


def run_cli(main, argv=None):
    """Run `main(argv)`; a UserError becomes `error: ...` on stderr and exit status 2."""
    try:
        result = main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(result or 0)
