"""The test suite, a package so that pytest and mypy name its modules alike (``tests.test_cli``,
``tests.hostile.test_kill``) and ``tests.helpers`` imports from anywhere under it."""
