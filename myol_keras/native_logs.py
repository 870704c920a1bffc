"""TensorFlow's native output kept out of sight: its start-up logging (written straight to file descriptor 2),
and its many-line error texts reduced to the one line a message can quote (`first_line`)."""

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def quiet_native_stderr(replay=True):
    """Hide TensorFlow's native start-up logging (written straight to fd 2).

    What was written is replayed if the block raises, so no error is lost
    (`replay=False`: not replayed, for calls whose exception carries it, such
    as the LiteRT converter's).
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            if replay:
                capture.seek(0)
                os.write(2, capture.read())
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def first_line(error, limit=300):
    """`"<ErrorType>: <first informative line>"` of an exception, for one-line messages.

    TensorFlow's preamble lines ("Graph execution error:", "Detected at node ...")
    are skipped; the line is cut at `limit` characters.
    """
    lines = [line.strip() for line in str(getattr(error, "message", "") or error).splitlines()]
    lines = [line for line in lines if line and not line.startswith(("Graph execution error", "Detected at node"))]
    return f"{type(error).__name__}: {lines[0][:limit] if lines else ''}"
