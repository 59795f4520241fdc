"""The session core: the life of a session as a pure state machine (events in, commands out).

No asyncio, no sockets, no database (a test checks the imports). :mod:`broker.session.live`
runs it; see docs/ARCHITECTURE.md.
"""
