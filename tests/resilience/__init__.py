"""Resilience under load (issue 7): many workers, graceful shutdown, bad input, security.

Every test here talks HTTP (or raw sockets) to a real hypercorn process on loopback,
backed by the session's real Redis, memcached and PostgreSQL where it needs them.
"""
