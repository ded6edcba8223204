"""Typed descriptions of plain pre-norm Transformer stacks, for methods that run the layers with their own
rules (LRP).  Being written; :func:`describe_blocks` returns ``None`` (not supported) until then."""


def describe_blocks(adapter):
    return None
