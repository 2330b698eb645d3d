pytest_plugins = ["sealpy.core.testing.pytest_plugin"]
