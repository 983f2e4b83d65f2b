"""The toolkit's own tests (a package: its module names stay apart from tests/test_*.py)."""
