"""What a bearer token may hold: one rule for the server's settings, the client and the CLI.

A token travels in an Authorization header, so only visible ASCII without spaces: a newline
(a token read from a file) or a non-ASCII character would make an invalid header, whose error
text quotes the token.
"""

from __future__ import annotations

__all__ = ["TOKEN_CHARACTERS", "sendable_token"]

TOKEN_CHARACTERS = "visible ASCII characters without spaces"


def sendable_token(token: str) -> bool:
    """True if `token` may go into an Authorization header as it is."""
    return all("!" <= ch <= "~" for ch in token)
