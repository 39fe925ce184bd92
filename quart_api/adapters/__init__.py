"""Where the service reaches into a library's internals: one small module per library.

Each module names the versions it was checked on, and ``tests/adapters/`` holds a test
per internal that fails by name when a release moves it; the upper bounds in
``pyproject.toml`` stop at the versions checked. The guards keep theirs apart (they
never import the service).

- `quart_api.adapters.sqlalchemy_asyncpg`: the asyncpg dialect's ping and terminate.
- `quart_api.adapters.quart_schema`: OpenAPI response objects and response conversion.
"""
