"""What the broker and the helper must agree on, word for word."""

from __future__ import annotations

#: the control protocol's version; a hello and a consent carry it (absent: 1)
PROTOCOL_VERSION = 1

#: the SSH user name of a helper (engineers use a ticket key)
AGENT_USER = "agent"
#: the broker's SSH port when none is named (``--broker HOST``, the broker's ``ssh_port``)
DEFAULT_SSH_PORT = 2222
#: the keyboard-interactive prompt the broker asks the consent code with
KBDINT_PROMPT = "Consent code: "
#: a helper back after a network drop answers that prompt with this, then its resume token
RESUME_PREFIX = "resume:"
#: the subsystem of the control channel (a session channel, one JSON object per line)
CONTROL_SUBSYSTEM = "assist-control"
#: the longest control line either side accepts
CONTROL_MAX_LINE = 64 * 1024

#: the helper's virtual forward: its readiness (and, with nested links, the way in)
FORWARD_HOST = "session"
FORWARD_PORT = 22

#: what a helper writes first on a reverse link, before the nonce and a newline
LINK_PREAMBLE = b"ASSIST-LINK "
#: the longest preamble line (the nonce is 43 characters)
LINK_MAX_LINE = 96

#: ciphers of every connection of the broker's, and of the helper's: AES-GCM only. OpenSSH
#: clients prefer chacha20-poly1305, which asyncssh runs more slowly; GCM (in every OpenSSH
#: since 6.2, constant-time with AES-NI) made a keystroke echo 14% and bulk 12% faster here.
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
