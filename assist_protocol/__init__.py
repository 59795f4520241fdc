"""The broker <-> helper protocol, in one place both sides import.

Standard library only (the customer's helper is Python plus asyncssh): the control messages as
typed classes (:mod:`assist_protocol.messages`), the shared constants
(:mod:`assist_protocol.constants`), the consent scope language and its one decision function
(:mod:`assist_protocol.scope`), text made safe for a terminal (:mod:`assist_protocol.safetext`),
the customer's receipt in words (:mod:`assist_protocol.receipt`) and the channel backpressure
both relays use (:mod:`assist_protocol.flow`). The helper download (``/helper``) is this package
and ``agent_client``, nothing else.
"""
