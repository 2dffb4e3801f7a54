"""Name -> object registry, as Dassl's trainers, datasets and evaluators use it."""
import contextlib

from .errors import ConfigError


class Registry:
    """Maps names to classes or functions, filled by the ``@REGISTRY.register()`` decorator.

    Usage::

        TRAINER_REGISTRY = Registry("trainer", config_key="TRAINER.NAME")

        @TRAINER_REGISTRY.register()
        class CoOp(TrainerX): ...

        TRAINER_REGISTRY.get("CoOp")

    ``name`` says what is registered (it names the choices when a name is unknown);
    ``config_key``, the config key that selects one.
    """

    def __init__(self, name, config_key=None):
        self._name = name
        self._config_key = config_key
        self._obj_map = {}
        self._replaced = None  # names replaced inside `replacing()`

    def _do_register(self, name, obj, force=False):
        if name in self._obj_map and self._replaced is not None:
            self._replaced.append(name)
        elif name in self._obj_map and not force:
            raise KeyError(
                f'An object named "{name}" was already registered in "{self._name}" registry; '
                "rename one of them or register with force=True"
            )
        self._obj_map[name] = obj

    def register(self, obj=None, force=False):
        if obj is None:
            def decorator(func_or_class):
                self._do_register(func_or_class.__name__, func_or_class, force=force)
                return func_or_class

            return decorator
        self._do_register(obj.__name__, obj, force=force)
        return obj

    @contextlib.contextmanager
    def replacing(self):
        """Within it, registering a name that exists replaces the entry; yields the list of the
        names replaced. If the block fails, the registry is put back as it was."""
        saved, self._replaced = dict(self._obj_map), []
        try:
            yield self._replaced
        except BaseException:
            self._obj_map = saved
            raise
        finally:
            self._replaced = None

    def get(self, name):
        """The object registered as ``name``; a ConfigError naming the choices if there is none."""
        if name not in self._obj_map:
            key = f" ({self._config_key})" if self._config_key else ""
            raise ConfigError(
                f'Unknown {self._name} "{name}"{key}. Registered {self._name}s: '
                f"{', '.join(self.registered_names()) or '(none)'}"
            )
        return self._obj_map[name]

    def registered_names(self):
        return sorted(self._obj_map)

    def __contains__(self, name):
        return name in self._obj_map

    def __repr__(self):
        return f"Registry({self._name!r}, {self.registered_names()})"
