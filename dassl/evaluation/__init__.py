from .evaluator import EVALUATOR_REGISTRY, Classification, ClassSubset, EvaluatorBase, build_evaluator

__all__ = ["build_evaluator", "Classification", "ClassSubset", "EVALUATOR_REGISTRY", "EvaluatorBase"]
