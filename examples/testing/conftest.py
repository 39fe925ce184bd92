# conftest.py of your own test suite: real Redis and memcached, started by quart-api.
pytest_plugins = ["quart_api.testing.fixtures"]
