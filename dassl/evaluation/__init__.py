from .evaluator import EVALUATOR_REGISTRY, Classification, EvaluatorBase, build_evaluator

__all__ = ["build_evaluator", "Classification", "EVALUATOR_REGISTRY", "EvaluatorBase"]
