"""Stand-in for NVlabs dnnlib (test helper)."""


class EasyDict(dict):
    """A dict whose items are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value
