"""Stand-in for the TensorFlow-era ``dnnlib.tflib.network.Network`` (test helper,
written for these tests): only what its pickles hold -- a dict state with the
format version, static keyword arguments, sub-networks and the variables as
numpy arrays, by TensorFlow name."""


class Network:
    def __init__(self, name, static_kwargs, variables, components=None):
        self.name = name
        self.static_kwargs = dict(static_kwargs)
        self.variables = list(variables)  # [(name, numpy array)]
        self.components = dict(components or {})

    def __getstate__(self):
        return dict(version=4, name=self.name, static_kwargs=self.static_kwargs, components=self.components,
                    build_module_src="# the TensorFlow graph code would be here", build_func_name="G_main",
                    variables=self.variables)

    def __setstate__(self, state):
        self.name, self.static_kwargs = state["name"], state["static_kwargs"]
        self.variables, self.components = state["variables"], state["components"]
