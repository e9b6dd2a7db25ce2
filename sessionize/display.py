"""Text from the outside world shown as the characters it holds, in a terminal or a web page.

Values in logs (URLs, referrers, user agents) and file names are written by strangers. A terminal obeys
control characters (ESC starts a sequence that sets the window title or clears the screen; CR rewrites
the line), and terminals and browsers alike obey the bidirectional overrides and isolates, which reorder
what follows them: ``/\u202egpj.exe`` is drawn as ``/exe.jpg``. Both are shown as escapes instead.
"""

from __future__ import annotations

import re

#: C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides and isolates.
_OBEYED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def visible(value: str) -> str:
    """``value`` with the characters a terminal or browser would obey shown as escapes (``\\x1b``,
    ``\\u202e``)."""
    return _OBEYED.sub(
        lambda found: (
            f"\\x{ord(found.group()):02x}" if ord(found.group()) < 0x100 else f"\\u{ord(found.group()):04x}"
        ),
        value,
    )
