# Shared fixtures live in tests/support.py so that the Markdown examples in docs/ and the README,
# which pytest collects from outside tests/, can use them too.
pytest_plugins = ["tests.support"]
