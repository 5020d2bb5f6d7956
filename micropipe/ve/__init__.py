"""Volume elements: the in-memory VE, the built-in generator, textures, statistics, readers and writers."""

from micropipe.ve.volume import VolumeElement

__all__ = ["GeneratorConfig", "VolumeElement", "generate", "generate_many"]


def __getattr__(name: str):
    # The generator imports damask (~1.5 s); readers and writers should not pay for that.
    if name in ("GeneratorConfig", "generate", "generate_many"):
        from micropipe.ve import generator

        return getattr(generator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
