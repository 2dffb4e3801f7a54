"""Name -> object registry, as Dassl's trainers, datasets and evaluators use it."""


class Registry:
    """Maps names to classes or functions, filled by the ``@REGISTRY.register()`` decorator.

    Usage::

        TRAINER_REGISTRY = Registry("TRAINER")

        @TRAINER_REGISTRY.register()
        class CoOp(TrainerX): ...

        TRAINER_REGISTRY.get("CoOp")
    """

    def __init__(self, name):
        self._name = name
        self._obj_map = {}

    def _do_register(self, name, obj, force=False):
        if name in self._obj_map and not force:
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

    def get(self, name):
        if name not in self._obj_map:
            raise KeyError(
                f'"{name}" is not registered in the {self._name} registry; '
                f"registered names: {', '.join(self.registered_names()) or '(none)'}"
            )
        return self._obj_map[name]

    def registered_names(self):
        return sorted(self._obj_map)

    def __contains__(self, name):
        return name in self._obj_map

    def __repr__(self):
        return f"Registry({self._name!r}, {self.registered_names()})"


def check_availability(requested, available):
    """Raise a ValueError naming the choices when ``requested`` is not one of ``available``."""
    if requested not in available:
        raise ValueError(f'"{requested}" is not available; choose one of {list(available)}')
