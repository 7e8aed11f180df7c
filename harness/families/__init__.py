"""The built-in families, one package a paper, each registered as a plugin registers.

``harness/families/<paper>/`` holds the paper's ops and models and the recipe components only
it uses (losses, transforms, callbacks, inferer view sets, combiners, cost handles, data
commands); its ``__init__`` imports them, so the registration decorators run. Core modules
never import a family (``tests/test_registry.py`` keeps it so); the registries import this
package on their first lookup, and it imports every family package found beside it.
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if _module.ispkg:
        importlib.import_module(f"{__name__}.{_module.name}")
