"""Generated text on a terminal: control characters are shown as escapes, not obeyed.

    print(shown(tokenizer.decode(ids)))          # "\\x1b[31m" on a terminal, exact in a pipe

A byte-level or barely trained model samples control bytes, ESC sequences
among them; printed raw they recolour, move or scramble the user's terminal.
`shown` turns every C0 and C1 control character other than newline and tab
(and DEL) into a visible \\xNN. The mode says when: "auto" (the default of
the commands) escapes only when the stream is a terminal, so a file or a pipe
keeps the exact text; "always" and "never" decide regardless (sample's
--escape flag). Not here: what the text is (generate.py, the tokenizers).
"""
import re
import sys

MODES = ("auto", "always", "never")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def shown(text, stream=None, mode="auto"):
    """text as it should be written to stream (default stdout) under mode (see MODES)."""
    if mode not in MODES:
        raise ValueError(f"escape mode {mode!r}: choose one of {', '.join(MODES)}")
    stream = stream or sys.stdout
    if mode == "never" or (mode == "auto" and not _is_terminal(stream)):
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):   # no isatty, or a closed stream
        return False
