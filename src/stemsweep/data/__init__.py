"""Data sets and per-image transforms: Fashion-MNIST (embedded default), ImageNet-style folders, synthetic."""

__all__ = ["DataBundle", "build_data"]


def __getattr__(name: str):
    # Deferred for start-up speed (PEP 562): build_data imports torch, while planning imports this package's
    # fingerprint module (data/fingerprint.py) without torch.
    if name in __all__:
        from stemsweep.data import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
