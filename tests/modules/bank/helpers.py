"""A helper module, imported relatively by the test module."""


def double(n: int) -> int:
    return 2 * n
