"""Benchmark commands (``vaezoo bench ...``). They read models and objectives; the library never imports them."""
